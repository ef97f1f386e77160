"""`edgectl fleet` against a real collector on 127.0.0.1 (and `add-device --data-dir`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from edge_common.bundle import sha256_file, write_manifest
from edge_common.preprocess import InputSpec
from edgectl.cli import main
from edgectl.collector.server import LocalCollector


def tiny_bundle(root: Path, version: str) -> Path:
    """Enough of a bundle for load_bundle's file checks (the host never runs it)."""
    root.mkdir(parents=True)
    (root / "model.fp32.onnx").write_bytes(b"not really onnx " + version.encode())
    write_manifest(root, {
        "schema_version": 1, "name": "tiny", "version": version, "labels": ["ok", "bad"],
        "reject_labels": ["bad"], "input": InputSpec(size=8).to_dict(),
        "artifacts": [{"path": "model.fp32.onnx", "format": "onnx", "precision": "fp32",
                       "sha256": sha256_file(root / "model.fp32.onnx"),
                       "bytes": (root / "model.fp32.onnx").stat().st_size}],
    })
    return root


@pytest.fixture
def collector(tmp_path):
    c = LocalCollector(tmp_path / "host").start()
    yield c
    c.close()


def fleet(cli_runner, c, *args):
    token_file = c.data_dir / "admin.token"
    return cli_runner.invoke(main, ["fleet", *args[:1], "--server", c.url,
                                    "--token-file", str(token_file), *args[1:]])


def test_add_device_devices_set_model_and_status(cli_runner, collector, tmp_path):
    r = fleet(cli_runner, collector, "add-device", "pi-1", "--group", "line-1")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert len(token) >= 40
    r = fleet(cli_runner, collector, "devices", "--json")
    assert [(d["name"], d["group"]) for d in json.loads(r.stdout)] == [("pi-1", "line-1")]

    b = tiny_bundle(tmp_path / "b2", "v2")
    r = fleet(cli_runner, collector, "set-model", "line-1", str(b))
    assert r.exit_code == 0, r.output
    assert "group line-1 -> v2" in r.stdout
    url = f"{collector.url}/api/v1/devices/pi-1"
    hdr = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{url}/desired", headers=hdr, timeout=10).json()["version"] == "v2"
    requests.post(f"{url}/heartbeat", headers=hdr, timeout=10, json={
        "model_version": "v1", "fps": 12.5, "latency_ms": {"total": {"p95": 7.5}},
        "deadline_misses": 0, "counts": {"total": 10, "reject": 2, "review": 1, "unsent": 4}})

    r = fleet(cli_runner, collector, "status", "--json")
    (row,) = json.loads(r.stdout)
    assert (row["device"], row["health"], row["desired_version"], row["unsent"]) == (
        "pi-1", "ok", "v2", 4)
    r = fleet(cli_runner, collector, "status")
    assert r.exit_code == 0
    header, line = r.stdout.splitlines()[:2]
    assert header.split()[:3] == ["DEVICE", "HEALTH", "LAST"]
    assert line.split()[:2] == ["pi-1", "ok"] and "v1 (want v2)" in line
    assert "update to v2 pending" in r.stdout


def test_set_model_on_unknown_target_and_bad_bundle_fail_cleanly(cli_runner, collector, tmp_path):
    b = tiny_bundle(tmp_path / "b", "v1")
    r = fleet(cli_runner, collector, "set-model", "nobody", str(b))
    assert r.exit_code != 0 and "no device or group named 'nobody'" in r.output
    (b / "model.fp32.onnx").write_bytes(b"tampered")
    collector.add_device("pi-1")
    r = fleet(cli_runner, collector, "set-model", "pi-1", str(b))
    assert r.exit_code == 1 and "mismatch" in r.output
    assert collector.store.bundles() == []


def test_wrong_admin_token_is_one_clear_line(cli_runner, collector, tmp_path):
    bad = tmp_path / "bad.token"
    bad.write_text("nope")
    r = cli_runner.invoke(main, ["fleet", "status", "--server", collector.url,
                                 "--token-file", str(bad)])
    assert r.exit_code == 1
    assert "HTTP 401" in r.output and len(r.output.strip().splitlines()) == 1


def test_unreachable_collector_is_one_clear_line(cli_runner, tmp_path):
    tok = tmp_path / "t"
    tok.write_text("x")
    r = cli_runner.invoke(main, ["fleet", "devices", "--server", "http://127.0.0.1:9",
                                 "--token-file", str(tok)])
    assert r.exit_code == 1 and "cannot reach the collector" in r.output


def test_add_device_directly_in_the_data_dir(cli_runner, tmp_path):
    data = tmp_path / "data"
    r = cli_runner.invoke(main, ["fleet", "add-device", "pi-9", "--data-dir", str(data),
                                 "--json"])
    assert r.exit_code == 0, r.output
    token = json.loads(r.stdout)["token"]
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    r = cli_runner.invoke(main, ["fleet", "add-device", "pi-9", "--data-dir", str(data)])
    assert r.exit_code != 0 and "already exists" in r.output
    r = cli_runner.invoke(main, ["fleet", "add-device", "../x", "--data-dir", str(data)])
    assert r.exit_code != 0
    c = LocalCollector(data).start()          # the collector honours the stored token
    try:
        resp = requests.post(f"{c.url}/api/v1/devices/pi-9/heartbeat", json={},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200
    finally:
        c.close()


def test_project_root_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """The Ansible runner finds the checkout from its own location, not from the cwd: the
    board suite runs `edgectl bench` from a temporary folder (a moved module once looked one
    level too shallow and every command outside the checkout failed)."""
    from edgectl.fleet.ansible import project_root

    monkeypatch.delenv("EDGECTL_PROJECT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    root = project_root()
    assert (root / "pyproject.toml").is_file() and (root / "host" / "pyproject.toml").is_file()
    assert (root / "ansible" / "deploy.yml").is_file()
    assert root == Path(__file__).resolve().parents[2]  # the checkout these modules are in


def test_a_project_dir_that_is_no_checkout_is_one_clear_error(tmp_path, monkeypatch):
    from edge_common.errors import EdgeError
    from edgectl.fleet.ansible import project_root

    monkeypatch.setenv("EDGECTL_PROJECT_DIR", str(tmp_path))
    with pytest.raises(EdgeError, match=f"EDGECTL_PROJECT_DIR={tmp_path} is not an edgectl "
                                        "checkout"):
        project_root()
