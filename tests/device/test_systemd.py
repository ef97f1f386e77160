"""The shipped unit passes `systemd-analyze verify` with no warnings and says what we need."""

from __future__ import annotations

import subprocess
from pathlib import Path

from syskit import program

import edge_agent

UNIT = Path(edge_agent.__file__).parent / "systemd" / "edge-agent.service"


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_declares_notify_watchdog_restart_and_hardening():
    s = _settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) > 0 and s["StartLimitBurst"] and s["StartLimitIntervalSec"]
    assert s["User"] == ["edge"] and s["SupplementaryGroups"] == ["gpio video"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert s[key] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == ["/var/lib/edge-agent"]
    assert s["ExecStart"][0].split()[1:3] == ["run", "--config"]


def test_unit_drives_the_output_safe_after_any_exit():
    s = _settings()
    start, post = s["ExecStart"][0].split(), s["ExecStopPost"][0].split()
    assert post[0] == start[0] and post[1:] == ["safe-state", "--config", start[3]]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    exe = tmp_path / "edge-agent"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    original = _settings()["ExecStart"][0].split()[0]
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace(original, str(exe)))
    out = subprocess.run([program("systemd-analyze"), "verify", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # verify only warns on unknown keys or bad values: any output at all is a defect.
    relevant = [ln for ln in out.stderr.splitlines() if "edge-agent.service" in ln]
    assert relevant == [], out.stderr
