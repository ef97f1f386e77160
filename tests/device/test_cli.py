"""`edge-agent` end to end: run on the sim config, durability across SIGKILL, status,
validate-config, and one clear line (no traceback) for every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devicekit import ROOT, read_json_lines, write_config

from edge_agent.cli import main
from edge_agent.journal import Journal


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _agent(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or _env(),
        cwd=ROOT,
    )


def test_run_sim_example_200_items_journaled(tmp_path, tiny_bundle):
    journal_dir = tmp_path / "journal"
    out = _agent(
        "run",
        "--config",
        "examples/agent-sim.yaml",
        "--max-items",
        "200",
        "--json",
        env=_env(EDGE_BUNDLE=str(tiny_bundle), EDGE_JOURNAL_DIR=str(journal_dir)),
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["items"] == 200
    assert summary["rejects"] + summary["reviews"] + summary["ok"] == 200
    assert 0.0 <= summary["accuracy"] <= 1.0  # synthetic camera: ground truth known
    for stage in ("capture", "preprocess", "inference", "decision", "total"):
        assert set(summary["latency_ms"][stage]) == {"p50", "p95", "p99"}
    assert summary["fps"] > 0
    j = Journal(journal_dir)
    assert j.counts()["total"] == 200 and len(j.ids()) == 200
    assert "Traceback" not in out.stderr
    # status reads the status file the run left behind: stopped → exit 3, still informative.
    st = _agent("status", "--file", str(journal_dir / "status.json"), "--json")
    assert st.returncode == 3
    status = json.loads(st.stdout)
    assert status["state"] == "stopped" and status["alive"] is False
    assert status["counts"]["total"] == 200 and status["device_id"] == "laptop-sim"


def test_sigkill_loses_no_reported_decision(tmp_path, tiny_bundle):
    cfg = write_config(
        tmp_path / "agent.yaml",
        tiny_bundle,
        trigger={"type": "interval", "rate_hz": 100, "pin_factory": "mock"},
        journal={"dir": str(tmp_path / "journal"), "synchronous": "full"},
        samples={"rate": 0.2},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg), "--events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while len(lines) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reported = [e["id"] for e in read_json_lines("".join(lines) + rest)]
    assert len(reported) >= 40
    stored = set(Journal(tmp_path / "journal").ids())
    missing = [i for i in reported if i not in stored]
    assert missing == []


def test_sigterm_stops_cleanly_with_a_summary(tmp_path, tiny_bundle):
    cfg = write_config(
        tmp_path / "agent.yaml",
        tiny_bundle,
        trigger={"type": "interval", "rate_hz": 50, "pin_factory": "mock"},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg), "--json", "--events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    first = proc.stdout.readline()
    assert first.startswith("{")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = read_json_lines(out)[-1]
    assert summary["items"] >= 1 and "latency_ms" in summary


def test_validate_config(capsys):
    assert main(["validate-config", str(ROOT / "examples" / "agent-pi4.yaml")]) == 0
    assert "config OK" in capsys.readouterr().out


def _one_error_line(rc: int, err: str, expect: str) -> None:
    assert rc == 1
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("edge-agent: error:")]
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err


def test_malformed_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  type: webcam\n")
    rc = main(["validate-config", str(bad)])
    _one_error_line(
        rc,
        capsys.readouterr().err,
        "config: camera.type: must be one of picamera2, opencv, replay, synthetic",
    )
    rc = main(["run", "--config", str(bad)])
    _one_error_line(rc, capsys.readouterr().err, "config: camera.type")


def test_missing_bundle_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "nope")
    rc = main(["run", "--config", str(cfg), "--max-items", "1"])
    _one_error_line(rc, capsys.readouterr().err, "bundle not found")


def test_tampered_bundle_is_one_line(tmp_path, tiny_bundle, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    model = bundle / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    cfg = write_config(tmp_path / "agent.yaml", bundle)
    rc = main(["run", "--config", str(cfg), "--max-items", "1"])
    _one_error_line(rc, capsys.readouterr().err, "model.fp32.onnx")


def test_camera_that_fails_to_open_is_one_line(tmp_path, tiny_bundle, capsys):
    empty = tmp_path / "frames"
    empty.mkdir()
    cfg = write_config(
        tmp_path / "agent.yaml", tiny_bundle, camera={"type": "replay", "path": str(empty)}
    )
    rc = main(["run", "--config", str(cfg), "--max-items", "1"])
    _one_error_line(rc, capsys.readouterr().err, "replay: no images in")
    cfg = write_config(tmp_path / "agent2.yaml", tiny_bundle, camera={"type": "picamera2"})
    rc = main(["run", "--config", str(cfg), "--max-items", "1"])
    _one_error_line(rc, capsys.readouterr().err, "edge-agent[pi]")


def test_camera_dropping_out_mid_run_degrades_then_exits_one_line(tmp_path, tiny_bundle):
    from devicekit import frame
    from PIL import Image

    frames = tmp_path / "frames" / "scratch"
    frames.mkdir(parents=True)
    Image.fromarray(frame("red")).save(frames / "0.png")
    cfg = write_config(
        tmp_path / "agent.yaml",
        tiny_bundle,
        camera={
            "type": "replay",
            "path": str(tmp_path / "frames"),
            "give_up_s": 1.0,
            "retry_backoff_s": 0.05,
            "retry_backoff_max_s": 0.2,
        },
        trigger={"type": "interval", "rate_hz": 50, "pin_factory": "mock"},
        journal={"dir": str(tmp_path / "journal"), "status_every_s": 0.1},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg), "--events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    first = json.loads(proc.stdout.readline())
    assert first["truth"] == "scratch" and first["decision"] == "reject"
    shutil.rmtree(tmp_path / "frames")  # the camera is gone
    degraded = False
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            st = json.loads((tmp_path / "journal" / "status.json").read_text())
            degraded = degraded or st["camera"]["degraded"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    assert degraded, "status never reported the camera degraded"
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("edge-agent: error: camera replay: failed for") and "giving up" in last
    assert "Traceback" not in err


def test_status_without_a_status_file(tmp_path, capsys):
    rc = main(["status", "--file", str(tmp_path / "status.json")])
    _one_error_line(rc, capsys.readouterr().err, "no status file")


@pytest.mark.parametrize("threads", ["x", "0"])
def test_bench_bad_threads(tiny_bundle, capsys, threads):
    rc = main(["bench", "--bundle", str(tiny_bundle), "--threads", threads])
    _one_error_line(rc, capsys.readouterr().err, "--threads")


def test_sample_files_are_named_in_the_journal(tmp_path, tiny_bundle):
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle, samples={"rate": 1.0})
    assert main(["run", "--config", str(cfg), "--max-items", "5", "--json"]) == 0
    j = Journal(tmp_path / "journal")
    samples = j.unsent_samples(10)
    assert len(samples) == 5 and all(Path(s["path"]).is_file() for s in samples)


def test_status_shows_faults_and_journal_losses(tmp_path, tiny_bundle, capsys):
    """`edge-agent status` prints each raised fault and what the caps dropped or quarantined."""
    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle)
    assert main(["run", "--config", str(cfg), "--max-items", "3"]) == 0
    capsys.readouterr()
    path = tmp_path / "journal" / "status.json"
    st = json.loads(path.read_text())
    assert st["faults"] == {}
    main(["status", "--file", str(path)])
    assert "faults: none" in capsys.readouterr().out
    st["faults"] = {"journal_unwritable": "journal: disk full; holding 12 decisions in memory"}
    st["counts"].update(dropped_decisions=41, quarantined=1)
    path.write_text(json.dumps(st))
    main(["status", "--file", str(path)])
    out = capsys.readouterr().out
    assert "FAULT journal_unwritable: journal: disk full; holding 12" in out
    assert "journal losses: dropped_decisions 41, quarantined 1" in out
