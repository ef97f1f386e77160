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


def _make_var(name: str) -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{name} \?= (.+)$", text, re.M)
    assert m, name
    return m.group(1).split(",")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, tuple[str, list[str]]]:
    """locks/host.txt as {name: (version, hashes)} for this Python (the lock is universal:
    a distribution may have one line per Python range, each with its marker)."""
    from packaging.markers import Marker

    text = (ROOT / "locks" / "host.txt").read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*([^-]+?))?\s*(?:--hash|$)", line)
        assert m, f"locks/host.txt: not pinned with ==: {line[:80]}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        assert hashes, f"locks/host.txt: {m.group(1)} has no hash"
        if m.group(3) and not Marker(m.group(3)).evaluate():
            continue
        assert _norm(m.group(1)) not in out, f"locks/host.txt: {m.group(1)} twice"
        out[_norm(m.group(1))] = (m.group(2), hashes)
    return out


def test_the_host_lock_pins_every_distribution_with_its_hashes():
    lock = _lock()
    assert len(lock) > 100
    unhashed = [name for name, (_v, hashes) in lock.items() if not hashes]
    assert not unhashed
    # the two projects themselves are installed editable, never from the lock
    assert "edgectl" not in lock and "edge-agent" not in lock
    pins = {_name(r): r for r in (ROOT / "constraints.txt").read_text().splitlines()
            if r and not r.startswith("#")}
    for name in ("torch", "torchvision"):
        assert pins[name] == f"{name}=={lock[name][0]}", (pins[name], lock[name])


def test_the_host_lock_covers_what_the_makefiles_extras_ask_for():
    """What `make install` installs (the Makefile's AGENT_EXTRAS and HOST_EXTRAS of the two
    pyprojects) is in the lock: a requirement added without `make lock` fails here (and
    `pip check` fails the install)."""
    lock = _lock()
    agent, host = _project(ROOT / "pyproject.toml"), _project(ROOT / "host" / "pyproject.toml")
    wanted = list(agent["dependencies"]) + list(host["dependencies"])
    for project, extras in ((agent, _make_var("AGENT_EXTRAS")), (host, _make_var("HOST_EXTRAS"))):
        for extra in extras:
            wanted += project["optional-dependencies"][extra]
    missing = sorted({_norm(_name(r)) for r in wanted} - set(lock) - {"edge-agent"})
    assert not missing, f"not in locks/host.txt (run `make lock`): {missing}"


def test_make_install_installs_the_lock_with_its_hashes_and_nothing_else():
    import subprocess

    out = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "install", "VENV=/nonexistent"],
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.replace("\\\n", " ").splitlines()
    steps = [ln for ln in lines if "pip install" in ln or "pip check" in ln]
    assert any("--require-hashes --no-deps -r locks/host.txt" in s for s in steps), steps
    editable = [s for s in steps if " -e " in s]
    assert editable and all("--no-deps" in s for s in editable), steps
    assert steps[-1].endswith("pip check"), steps
