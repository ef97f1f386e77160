"""`edge-agent validate-config` and `edge-agent run` read a config through the same schema:
they accept and refuse the same files, with the same one line naming the key."""

from __future__ import annotations

import subprocess

import pytest
from devicekit import agent_cmd, write_config

CASES = {
    "good": {},
    "good-safe-on": {"actuator": {"safe_state": "on"}},
    "nan-threshold": {"decision": {"threshold": ".nan"}},
    "inf-delay": {"actuator": {"delay_ms": ".inf"}},
    "nan-delay": {"actuator": {"delay_ms": ".nan"}},
    "negative-delay": {"actuator": {"delay_ms": -1}},
    "threshold-above-1": {"decision": {"threshold": 1.5}},
    "update-without-host": {"update": {"enabled": True}},
    "host-without-token": {"host": {"url": "http://127.0.0.1:9"}},
    "unknown-key": {"actuator": {"delay": 5}},
}


def _write(tmp_path, bundle, sections):
    cfg = write_config(tmp_path / "agent.yaml", bundle, **sections)
    # YAML's own spellings of NaN and infinity, as an operator would type them.
    text = cfg.read_text().replace("'.nan'", ".nan").replace("'.inf'", ".inf")
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_config_and_run_agree(tmp_path, tiny_bundle, case):
    cfg = _write(tmp_path, tiny_bundle, CASES[case])
    v = subprocess.run([*agent_cmd(), "validate-config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    r = subprocess.run([*agent_cmd(), "run", "--config", str(cfg), "--max-items", "2"],
                       capture_output=True, text=True, timeout=120)
    assert (v.returncode == 0) == (r.returncode == 0), (v.stderr, r.stderr)
    assert "Traceback" not in v.stderr + r.stderr
    if case.startswith("good"):
        assert v.returncode == 0 and r.returncode == 0, r.stderr
    else:
        assert v.returncode == r.returncode == 1
        v_err, r_err = v.stderr.strip().splitlines(), r.stderr.strip().splitlines()
        assert len(v_err) == 1 and v_err == r_err[-1:]
        assert v_err[0].startswith("edge-agent: error: config: ")
