"""The board suite's real test host: a Debian bookworm root booted with systemd-nspawn.

tests/board/testhost.sh makes (and caches) the root, a freshly flashed image (empty apt
lists, no python3-apt, an admin user `pi` with passwordless sudo), boots it in its own
network namespace (board 10.203.0.2, host side 10.203.0.1, NAT to the registries) with
sshd and one SSH key for pi and root; one booted host serves the whole session and is
torn down at the end, also on failure. The inventory written here points Ansible at it
over SSH as pi, becoming root with sudo, as a deploy to a real board does; the tests
look around the board as root.
Run with `make test-board` (needs root, debootstrap, systemd-container, iproute2, iptables).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import devicekit
import pytest
import yaml
from netkit import free_port

ROOT = Path(__file__).resolve().parents[2]
TESTHOST = Path(__file__).with_name("testhost.sh")
HOSTNAME = "testboard"
AGENT = "/opt/edge-agent/venv/bin/edge-agent"
VENV_PY = "/opt/edge-agent/venv/bin/python"
# The edgectl command of the interpreter running the tests (the project's .venv).
EDGECTL = Path(sys.executable).parent / "edgectl"


@dataclass
class Board:
    dir: Path
    addr: str
    host_addr: str
    key: Path
    admin: str  # the admin user a flashing tool creates (passwordless sudo)

    def ssh_args(self, user: str = "root") -> list[str]:
        return ["ssh", "-q", "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                f"{user}@{self.addr}"]

    def sh(self, command: str, check: bool = True, timeout: float = 120, user: str = "root"):
        """Run a shell command on the board over SSH (as root unless ``user``)."""
        out = subprocess.run([*self.ssh_args(user), command], capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"on the board: {command!r} exit {out.returncode}: "
                                 f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out

    def init_pid(self) -> int:
        """The board's PID 1 (systemd-nspawn's child): SIGKILL it and the board is off."""
        nspawn = int((self.dir / "nspawn.pid").read_text())
        return int(Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the whole machine (systemd-nspawn and every process in it)."""
        subprocess.run([str(TESTHOST), "kill", str(self.dir)], check=True, timeout=60)

    def boot(self) -> None:
        """Boot the root as the kill left it; returns once ssh answers."""
        subprocess.run([str(TESTHOST), "boot", str(self.dir)], check=True, timeout=300)


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"the board suite needs {tool} (apt-get install debootstrap "
                    "systemd-container iproute2 iptables openssh-client)")


@pytest.fixture(scope="session")
def board(tmp_path_factory) -> Board:
    """The booted test host (session-wide); `testhost.sh down` runs at the end, always."""
    if os.geteuid() != 0:
        pytest.fail("the board suite needs root (network namespace, systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "ip", "iptables", "ssh"):
        _need(tool)
    work = tmp_path_factory.mktemp("testhost")
    try:
        subprocess.run([str(TESTHOST), "up", str(work)], check=True, timeout=1800)
        env = dict(line.split("=", 1) for line in (work / "env").read_text().split())
        yield Board(work, env["BOARD_ADDR"], env["HOST_ADDR"], Path(env["SSH_KEY"]),
                    env["ADMIN_USER"])
    finally:
        subprocess.run([str(TESTHOST), "down", str(work)], check=False, timeout=300)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, Path]:
    """The fleet's signing key pair and a second, foreign private key."""
    from edge_common.bundle import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_keypair()
    other, _ = generate_keypair()
    (d / "bundle.key").write_bytes(priv)
    (d / "bundle.pub").write_bytes(pub)
    (d / "other.key").write_bytes(other)
    return {"private": d / "bundle.key", "public": d / "bundle.pub", "other": d / "other.key"}


@pytest.fixture(scope="session")
def make_tar(tmp_path_factory):
    """make_tar(version, key=..., tamper_vectors=False, with_tflite=False) -> signed .tar."""
    from edge_common.bundle import pack_tar, sign_manifest, write_manifest

    kit = devicekit
    base = tmp_path_factory.mktemp("bundles")

    def make(version: str, key: Path, tamper_vectors: bool = False,
             with_tflite: bool = False) -> Path:
        import json

        import numpy as np

        from edge_common.bundle import sha256_file

        d = kit.make_bundle(base / version, version=version)
        manifest = json.loads((d / "manifest.json").read_text())
        if tamper_vectors:
            # Expected outputs that the model does not produce: the replay must fail.
            with np.load(d / "test_vectors.npz") as npz:
                arrays = {k: npz[k] for k in npz.files}
            exp = arrays["expected/model.fp32.onnx"]
            arrays["expected/model.fp32.onnx"] = np.roll(exp, 1, axis=-1) * 10
            np.savez(d / "test_vectors.npz", **arrays)
            manifest["test_vectors"]["sha256"] = sha256_file(d / "test_vectors.npz")
            manifest["test_vectors"]["bytes"] = (d / "test_vectors.npz").stat().st_size
        if with_tflite:
            # A TFLite artifact the ONNX-only board has no runtime for (never loaded there).
            art = d / "model.int8.tflite"
            art.write_bytes(b"TFL3" + bytes(60))
            manifest["artifacts"].append({
                "path": art.name, "format": "tflite", "precision": "int8",
                "sha256": sha256_file(art), "bytes": art.stat().st_size, "metrics": {},
                "tolerance": {"max_abs": 0.1, "top1": True},
            })
        write_manifest(d, manifest)
        sign_manifest(d, key.read_bytes())
        return pack_tar(d, base / f"{version}.tar")

    return make


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    from edgectl.fleet.ansible import build_wheel

    return build_wheel(tmp_path_factory.mktemp("dist"))


@dataclass
class Collector:
    url: str
    data_dir: Path
    token: str

    def decision_count(self) -> int:
        from edgectl.collector.store import Store

        store = Store(self.data_dir / "collector.db")
        try:
            return store.decision_count(HOSTNAME)
        finally:
            store.close()


@pytest.fixture(scope="session")
def collector(board, tmp_path_factory) -> Collector:
    """`edgectl serve` on the host side of the veth, with the board registered."""
    data = tmp_path_factory.mktemp("collector")
    edgectl = [str(EDGECTL)]
    out = subprocess.run([*edgectl, "fleet", "add-device", HOSTNAME, "--group", "board",
                          "--data-dir", str(data)], capture_output=True, text=True, check=True)
    token = out.stdout.strip().splitlines()[-1]
    port = free_port(board.host_addr)
    log = open(data / "serve.log", "w")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen([*edgectl, "serve", "--data-dir", str(data), "--host",
                             board.host_addr, "--port", str(port)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection((board.host_addr, port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (data / "serve.log").read_text()
                time.sleep(0.3)
        yield Collector(f"http://{board.host_addr}:{port}", data, token)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def inventory(board, collector, keys, tmp_path_factory) -> Path:
    """An inventory for the test host, like a real board's: SSH as its admin user (the play
    becomes root with sudo), the pi4-like settings a line board uses but with the synthetic
    camera and gpiozero's mock pins."""
    host = {
        "ansible_host": board.addr,
        "ansible_user": board.admin,
        "ansible_ssh_private_key_file": str(board.key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        # Debian's numpy (python3-numpy) is the one the agent must import.
        "edge_agent_os_packages": ["python3-venv", "python3-numpy"],
        "edge_agent_system_site_packages": True,
        "edge_agent_extras": ["device"],
        "edge_agent_public_key_file": str(keys["public"]),
        "edge_agent_runtime_type": "onnx",
        "edge_agent_runtime_threads": 1,
        "edge_agent_camera": {"type": "synthetic", "size": 64},
        "edge_agent_trigger": {"type": "interval", "rate_hz": 20},
        "edge_agent_actuator": {"type": "gpio", "pin": 27, "active_high": True,
                                "delay_ms": 0, "pulse_ms": 10},
        "edge_agent_config_extra": {
            "actuator": {"pin_factory": "mock"},
            "host": {"url": collector.url, "token": collector.token, "interval_s": 1.0,
                     "heartbeat_s": 2.0},
        },
    }
    inv = {"all": {"children": {"edge": {"children": {"board": {"hosts": {HOSTNAME: host}}}}}}}
    path = tmp_path_factory.mktemp("inventory") / "board.yml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def timings() -> dict[str, float]:
    """Deploy wall times (s), written to runs/board/timings.json (never asserted)."""
    import json

    data: dict[str, float] = {}
    yield data
    if data:
        out = ROOT / "runs" / "board" / "timings.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({k: round(v, 1) for k, v in data.items()}, indent=2) + "\n")


@pytest.fixture
def agent_installed(board, inventory, wheel, make_tar, keys) -> None:
    """The agent deployed and serving, whichever tests ran before: the first deploy (board-1)
    when no earlier test has made it, so any test can run alone (`-k`)."""
    ready = board.sh(f"test -x {AGENT} && id -u edge && "
                     "test -e /var/lib/edge-agent/models/current/manifest.json", check=False)
    if ready.returncode == 0:
        return
    from edgectl.fleet.ansible import deploy

    lines: list[str] = []
    result = deploy(inventory, wheel=wheel, bundle=make_tar("board-1", keys["private"]),
                    echo=lines.append)
    assert result.recap[HOSTNAME]["failed"] == 0, "\n".join(lines[-60:])
