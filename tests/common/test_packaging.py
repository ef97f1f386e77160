"""The two distributions: edge-agent (the board's: common + device) and edgectl (the host's).

Their pyproject.toml files are read as data: one version, the host pinned to the board's
distribution, nothing of the host's in the board's, and every "pip install 'DIST[EXTRA]'"
message naming an extra the named distribution declares.
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

from edge_common.errors import HOST_EXTRAS, MissingExtraError, distribution_of

ROOT = Path(__file__).resolve().parents[2]
HOST_ONLY = {"torch", "torchvision", "click", "torch-pruning", "ansible-core", "fastapi",
             "sqlalchemy", "litert-torch"}


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_host_depends_on_the_board_distribution_at_the_same_version():
    agent, host = _project(ROOT / "pyproject.toml"), _project(ROOT / "host" / "pyproject.toml")
    assert (agent["name"], host["name"]) == ("edge-agent", "edgectl")
    assert agent["version"] == host["version"]
    [pin] = [r for r in host["dependencies"] if _name(r) == "edge-agent"]
    assert pin.endswith(f"=={agent['version']}"), pin
    assert agent["scripts"] == {"edge-agent": "edge_agent.cli:main"}
    assert host["scripts"] == {"edgectl": "edgectl.cli:main"}


def test_the_board_distribution_has_nothing_of_the_hosts():
    agent = _project(ROOT / "pyproject.toml")
    every = list(agent["dependencies"])
    for reqs in agent["optional-dependencies"].values():
        every += reqs
    assert not {_name(r) for r in every} & HOST_ONLY
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert found["packages"]["find"]["where"] == ["common", "device"]


def test_every_extra_belongs_to_the_distribution_its_message_names():
    agent = set(_project(ROOT / "pyproject.toml")["optional-dependencies"])
    host = set(_project(ROOT / "host" / "pyproject.toml")["optional-dependencies"])
    assert host == HOST_EXTRAS and not agent & host
    declared = {"edge-agent": agent, "edgectl": host}
    call = re.compile(r'MissingExtraError\(\s*(?:[^,()]|\([^)]*\))+,\s*"([\w-]+)"')
    named = set()
    for folder in ("common", "device", "host"):
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(call.findall(path.read_text()))
    assert {"device", "tflite", "pi", "plc", "host", "tflite-export"} <= named
    for extra in named:
        assert extra in declared[distribution_of(extra)], extra
    assert "pip install 'edge-agent[opencv]'" in str(MissingExtraError("cv2", "opencv"))
    assert "pip install 'edgectl[tflite-export]'" in str(MissingExtraError("x", "tflite-export"))
