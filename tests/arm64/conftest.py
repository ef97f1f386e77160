"""The arm64 userland check: fixtures around tests/arm64/arm64root.sh.

Opt-in (`make test-arm64`, i.e. ``pytest -m arm64 tests/arm64``): minutes under emulation,
needs root, qemu-user-static and mmdebstrap. Without ``arm64`` in ``-m`` these tests are
deselected (not skipped), so the default ``make test`` never builds the root.

One session: the host builds the device wheel and a tiny signed bundle (ONNX + TFLite, FP32
+ INT8) with the project's own code; the root is unpacked once, the wheel installed once into
a venv there; each test runs real commands inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("arm64root.sh")
VENV = "/opt/edge-agent/venv"  # where the Ansible role puts the agent's venv
# Emulated aarch64 is 10-50x slower than the host: generous, but a hang still ends.
STEP_TIMEOUT_S = 1200


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Deselect unless asked for by marker (-m arm64, or any expression naming it).
    if "arm64" in (config.getoption("markexpr") or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("arm64") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _script(*args: str, timeout: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def arm64_work(tmp_path_factory) -> Path:
    """Host side: device wheel, signed tiny bundle (4 artifacts), public key. Bound at /work."""
    from click.testing import CliRunner

    from edge_common import bundle as B
    from edgectl.cli import main
    from edgectl.fleet.ansible import build_wheel

    work = tmp_path_factory.mktemp("arm64work")
    build_wheel(work / "wheel")
    priv, pub = B.generate_keypair()
    (work / "sign.key").write_bytes(priv)
    (work / "sign.pub").write_bytes(pub)
    out = work / "build"
    # The cheapest real build with both formats: MobileNetV2 x0.25 at 32x32, one epoch on 48
    # synthetic images (an untrained net fails the INT8 TFLite correlation gate), no pruning.
    res = CliRunner().invoke(
        main,
        [
            "build", "--img-size", "32", "--train-size", "48", "--test-size", "24",
            "--batch-size", "16", "--calib-size", "8", "--latency-runs", "3",
            "--width-mult", "0.25", "--epochs", "1", "--prune", "none",
            "--finetune-epochs", "0", "--formats", "onnx,tflite", "--quantize", "int8",
            "--min-accuracy", "0", "--key", str(work / "sign.key"), "--out", str(out), "--json",
        ],
        env={"EDGECTL_CACHE": str(work / "cache")},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    shutil.copytree(summary["bundle"], work / "bundle")
    (work / "build.json").write_text(json.dumps(summary))
    shutil.rmtree(out)
    shutil.rmtree(work / "cache", ignore_errors=True)
    return work


@pytest.fixture(scope="session")
def arm64_root(tmp_path_factory) -> Path:
    """A fresh arm64 bookworm root (from the cached tarball); deleted at the end."""
    if os.geteuid() != 0:
        pytest.fail("the arm64 check needs root (chroot, mounts, binfmt_misc)")
    path = tmp_path_factory.mktemp("arm64") / "root"
    res = _script("up", str(path))
    assert res.returncode == 0, res.stderr
    try:
        yield path
    finally:
        res = _script("down", str(path))
        assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def in_root(arm64_root: Path, arm64_work: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``in_root(shell_script)``: run it with /bin/sh in the root, /work bound to the host."""

    def run(script: str, timeout: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return _script(
            "exec", str(arm64_root), "--bind", f"{arm64_work}:/work", "--",
            "/bin/sh", "-c", script, timeout=timeout,
        )  # fmt: skip

    return run


@pytest.fixture(scope="session")
def arm64_venv(in_root, arm64_work: Path) -> str:
    """The venv's path in the root: the device wheel with the device and tflite extras,
    over Debian's numpy.

    numpy is pinned to the version Debian installed (a pip constraint), so pip can never put
    numpy 2 in the venv where it would shadow Debian's (and break apt's OpenCV/picamera2).
    """
    wheel = next((arm64_work / "wheel").glob("edge_agent-*.whl")).name
    res = in_root(
        "set -e\n"
        f"python3 -m venv --system-site-packages {VENV}\n"
        "python3 -c 'import numpy; print(\"numpy==\" + numpy.__version__)' "
        "> /opt/edge-agent/constraints.txt\n"
        f"{VENV}/bin/pip install --disable-pip-version-check --no-input "
        f"-c /opt/edge-agent/constraints.txt '/work/wheel/{wheel}[device,tflite]'\n"
        f"{VENV}/bin/pip check\n"
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return VENV
