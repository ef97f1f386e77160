"""deploy.yml for real against the local test host: installs, is idempotent, renders a
unit systemd accepts and a config the agent accepts, activates the bundle."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from syskit import program


def test_first_run_changes_and_second_run_changes_nothing(deployed):
    first, second = deployed
    assert first.recap["pi4-local"]["failed"] == 0
    assert first.recap["pi4-local"]["changed"] > 0
    assert second.recap == {"pi4-local": second.recap["pi4-local"]}
    assert second.recap["pi4-local"]["changed"] == 0, second.output[-4000:]


def test_agent_is_installed_in_its_virtualenv_from_the_wheel(deployed, local_prefix, wheel):
    venv = local_prefix / "opt" / "edge-agent" / "venv"
    agent = venv / "bin" / "edge-agent"
    assert os.access(agent, os.X_OK)
    assert (local_prefix / "opt" / "edge-agent" / "wheels" / wheel.name).read_bytes() == \
        wheel.read_bytes()
    # pi4 boards see the OS's Python packages (apt's picamera2).
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    proc = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import edge_agent.cli, onnxruntime, gpiozero; print('ok')"],
                          capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "ok", proc.stderr
    # The board's distribution only: no host package, no `edgectl` command (issue 30).
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--local",
                             "--format=json"],
                            capture_output=True, text=True, check=True).stdout
    names = {d["name"].lower() for d in json.loads(listed)}
    assert "edge-agent" in names and not names & {"edgectl", "click", "torch"}
    assert not (venv / "bin" / "edgectl").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own view
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import edgectl"],
                          capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 1 and "No module named 'edgectl'" in proc.stderr


def test_config_is_valid_for_the_agent_and_serves_the_current_bundle(deployed, local_prefix):
    from edge_agent.config import load_config

    path = local_prefix / "etc" / "edge-agent" / "agent.yaml"
    raw = yaml.safe_load(path.read_text())
    # From the pi4 group_vars (pins) and the local host's overrides (mock pins, camera).
    assert raw["trigger"] == {"type": "gpio", "pin": 17, "pull": "up", "bounce_ms": 5,
                              "pin_factory": "mock"}
    assert raw["actuator"]["pin"] == 27
    cfg = load_config(path, env={})
    assert cfg.device_id == "pi4-local"
    assert cfg.camera.type == "synthetic"
    models = local_prefix / "var" / "lib" / "edge-agent" / "models"
    assert Path(cfg.bundle.path) == (models / "current").resolve()
    assert Path(cfg.journal.dir).is_dir()


def test_bundle_is_verified_installed_and_activated(deployed, local_prefix):
    models = local_prefix / "var" / "lib" / "edge-agent" / "models"
    current = models / "current"
    assert current.is_symlink()
    assert os.readlink(current) == "versions/test-1"
    manifest = json.loads((current / "manifest.json").read_text())
    assert manifest["version"] == "test-1"
    assert sorted(p.name for p in (models / "versions").iterdir()) == ["test-1"]


def test_rendered_unit_passes_systemd_analyze_verify(deployed, local_prefix):
    unit = local_prefix / "etc" / "systemd" / "system" / "edge-agent.service"
    text = unit.read_text()
    assert f"ExecStart={local_prefix}/opt/edge-agent/venv/bin/edge-agent run" in text
    assert "Type=notify" in text
    proc = subprocess.run([program("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "edge-agent.service" not in proc.stderr  # no warnings about our unit


def test_install_script_refuses_tampered_bundle_and_reused_version(
    deployed, local_prefix, bundle_factory, tmp_path, ansible_dir
):
    """The board-side check the edge_model role runs, on bundles that must be refused."""
    script = ansible_dir / "roles" / "edge_model" / "files" / "install_bundle.py"
    python = local_prefix / "opt" / "edge-agent" / "venv" / "bin" / "python"
    models = local_prefix / "var" / "lib" / "edge-agent" / "models"

    def install(bundle: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), str(script), str(bundle), str(models)],
                              capture_output=True, text=True, check=False)

    tampered = bundle_factory(tmp_path / "tampered", "test-9")
    (tampered / "model.fp32.onnx").write_bytes(b"not the model")
    proc = install(tampered)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ")
    assert "model.fp32.onnx" in proc.stderr
    assert not (models / "versions" / "test-9").exists()

    same_version = bundle_factory(tmp_path / "other", "test-1")
    manifest = json.loads((same_version / "manifest.json").read_text())
    manifest["created"] = "2030-01-01T00:00:00Z"
    (same_version / "manifest.json").write_text(json.dumps(manifest))
    proc = install(same_version)
    assert proc.returncode == 1
    assert "already installed with other contents" in proc.stderr

    proc = install(models / "incoming" / "tiny")  # the deployed one: nothing to do
    assert proc.returncode == 0, proc.stderr
    mark, _, result = proc.stdout.strip().partition(" ")
    assert mark == "EDGECTL-INSTALL-RESULT"
    assert json.loads(result) == {
        "changed": False, "installed": False, "switched": False, "version": "test-1",
        "name": "tiny-colour", "path": str(models / "versions" / "test-1"),
        "test_vectors": [], "pruned": [],
    }


def test_model_only_rollout_switches_current_and_keeps_the_previous_version(
    deployed, local_prefix, bundle_dir, bundle_factory, run_local, tmp_path
):
    """`--tags model` on a fresh models folder, reusing the deployed agent's python."""
    python = local_prefix / "opt" / "edge-agent" / "venv" / "bin" / "python"
    board = tmp_path / "board"
    models = board / "var" / "lib" / "edge-agent" / "models"
    second = bundle_factory(tmp_path / "next", "test-2")
    for bundle, version in ((bundle_dir, "test-1"), (second, "test-2")):
        result = run_local("deploy.yml", board,
                           {"edge_model_bundle": str(bundle), "edge_model_python": str(python)},
                           "--tags", "model")
        assert result.ok, result.output[-3000:]
        assert result.recap["pi4-local"]["changed"] > 0
        assert os.readlink(models / "current") == f"versions/{version}"
    assert sorted(p.name for p in (models / "versions").iterdir()) == ["test-1", "test-2"]
    assert [p.name for p in (models / "incoming").iterdir()] == ["next"]  # old upload gone
    assert not (board / "opt").exists()  # the agent role did not run

    # Anti-rollback: the older test-1 is refused and test-2 keeps serving ...
    extra = {"edge_model_bundle": str(bundle_dir), "edge_model_python": str(python)}
    result = run_local("deploy.yml", board, extra, "--tags", "model")
    assert not result.ok
    assert "older than the active test-2: refusing a downgrade" in result.output
    assert os.readlink(models / "current") == "versions/test-2"
    # ... unless the operator asks for the rollback.
    result = run_local("deploy.yml", board, {**extra, "edge_model_allow_downgrade": True},
                       "--tags", "model")
    assert result.ok, result.output[-3000:]
    assert os.readlink(models / "current") == "versions/test-1"
