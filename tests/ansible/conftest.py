"""Fixtures for the fleet tests: the board's wheel (edge-agent), a tiny bundle, the local test host.

The local test host is ansible/inventory.local.yml (host pi4-local in group pi4, local
connection); every path it writes is under $EDGECTL_LOCAL_PREFIX, a temp dir here.
"""

from __future__ import annotations

import os
from pathlib import Path

import devicekit
import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
LOCAL_INVENTORY = ANSIBLE / "inventory.local.yml"


def make_bundle(root: Path, version: str) -> Path:
    return devicekit.make_bundle(root, version=version)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    from edgectl.fleet.ansible import build_wheel

    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny", "test-1")


@pytest.fixture(scope="session")
def local_prefix(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("board")


def _run_local(playbook: str, prefix: Path, extra: dict, *args: str):
    """Run a playbook against the local test host; return the PlaybookResult."""
    from edgectl.fleet.ansible import playbook_command, run_playbook

    cmd = playbook_command(ANSIBLE / playbook, LOCAL_INVENTORY, extra_vars=extra)
    return run_playbook([*cmd, *args], env={"EDGECTL_LOCAL_PREFIX": str(prefix)})


@pytest.fixture(scope="session")
def run_local():
    """run_local(playbook, prefix, extra_vars, *more_args) -> PlaybookResult."""
    return _run_local


@pytest.fixture(scope="session")
def ansible_dir() -> Path:
    return ANSIBLE


@pytest.fixture(scope="session")
def bundle_factory():
    """bundle_factory(root, version) writes a tiny verified bundle (no torch)."""
    return make_bundle


@pytest.fixture(scope="session")
def deployed(wheel, bundle_dir, local_prefix):
    """deploy.yml run twice against the local test host: (first, second) results.

    The first run is plain ansible-playbook; the second is what `edgectl deploy` runs
    (fleet_ansible.deploy: the project's serial and max-fail defaults, --limit pi4).
    """
    from edgectl.fleet.ansible import deploy

    extra = {"edge_agent_wheel": str(wheel), "edge_model_bundle": str(bundle_dir)}
    first = _run_local("deploy.yml", local_prefix, extra)
    assert first.ok, first.output[-3000:]
    lines: list[str] = []
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGECTL_LOCAL_PREFIX", str(local_prefix))
    try:
        second = deploy(LOCAL_INVENTORY, bundle=bundle_dir, wheel=wheel, limit="pi4",
                        echo=lines.append)
    finally:
        mp.undo()
    assert second.output.splitlines() == lines  # streamed line by line as it ran
    return first, second


@pytest.fixture
def local_env(local_prefix, monkeypatch):
    monkeypatch.setenv("EDGECTL_LOCAL_PREFIX", str(local_prefix))
    return os.environ
