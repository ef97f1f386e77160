"""A simulated station feeding a real collector: the real ``edge-agent run`` (synthetic
camera, interval trigger, mock pins) syncing decisions, samples and heartbeats over
HTTP, as a board does. The fleet-page tests and the collector benchmark use it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devicekit import agent_cmd, write_config


def run_station(url: str, token: str, workdir: Path, bundle: Path, device: str, items: int,
                rate_hz: float = 200.0, sample_rate: float = 0.5,
                timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    """Run one board for ``items`` decisions and wait until it has synced everything it
    journaled (``edge-agent run`` drains its backlog before it exits)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(token)
    cfg = write_config(
        workdir / "agent.yaml", bundle, device_id=device,
        camera={"type": "synthetic", "size": 64},
        trigger={"type": "interval", "rate_hz": rate_hz, "pin_factory": "mock"},
        samples={"rate": sample_rate},
        host={"url": url, "token_file": str(workdir / "token"), "batch_size": 50,
              "interval_s": 0.1, "heartbeat_s": 0.3, "backoff_max_s": 0.3, "timeout_s": 5},
    )
    return subprocess.run([*agent_cmd(), "run", "--config", str(cfg), "--max-items", str(items)],
                          capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
