"""Config: validated on load, unknown keys rejected, errors name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, from_dict, load_config
from edge_agent.config_doc import reference_markdown
from edge_common.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["agent-sim", "agent-pi4", "agent-jetson"])
def test_examples_validate(name):
    cfg = load_config(ROOT / "examples" / f"{name}.yaml", env={})
    assert isinstance(cfg, AgentConfig)
    assert cfg.host.batch_size >= 1 and cfg.update.poll_s > 0


def test_sim_example_uses_mock_pins_and_bundle_relative_to_file():
    cfg = load_config(ROOT / "examples" / "agent-sim.yaml", env={})
    assert cfg.camera.type == "synthetic" and cfg.trigger.type == "interval"
    assert cfg.actuator.pin_factory == "mock"
    assert cfg.bundle.path == str(ROOT / "runs" / "demo" / "bundle")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"camera": {"type": "webcam"}},
            "config: camera.type: must be one of picamera2, opencv, replay, synthetic",
        ),
        ({"camera": {"tpye": "replay"}}, "config: camera.tpye: unknown key"),
        ({"colour": 1}, "config: colour: unknown key"),
        ({"runtime": {"threads": 0}}, "config: runtime.threads: must be ≥ 1"),
        ({"runtime": {"threads": "two"}}, "config: runtime.threads: must be integer"),
        ({"decision": {"threshold": 1.5}}, "config: decision.threshold: must be ≤ 1.0"),
        ({"host": {"verify": "yes"}}, "config: host.verify: must be boolean"),
        ({"camera": {"type": "replay"}}, "config: camera.path: required"),
        ({"trigger": {"type": "gpio"}}, "config: trigger.pin: required"),
        ({"journal": "x"}, "config: journal: must be a mapping"),
    ],
)
def test_errors_name_the_key_path(data, message):
    data.setdefault("actuator", {"type": "none"})
    with pytest.raises(ConfigError) as err:
        from_dict(data, env={})
    assert str(err.value).startswith(message)


def test_env_overrides_backend_type_and_bundle(tmp_path):
    cfg = from_dict(
        {"actuator": {"type": "none"}},
        base=tmp_path,
        env={
            "EDGE_CAMERA_TYPE": "opencv",
            "EDGE_BUNDLE": str(tmp_path / "b"),
            "EDGE_PIN_FACTORY": "mock",
        },
    )
    assert cfg.camera.type == "opencv"
    assert cfg.bundle.path == str(tmp_path / "b")
    assert cfg.trigger.pin_factory == cfg.actuator.pin_factory == "mock"
    with pytest.raises(ConfigError, match="config: camera.type: must be one of"):
        from_dict({"actuator": {"type": "none"}}, env={"EDGE_CAMERA_TYPE": "usb"})


def test_malformed_yaml_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("camera:\n  type: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, env={})
    assert "invalid YAML at line" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml", env={})


def test_reference_doc_is_generated_from_schema():
    doc = (ROOT / "docs" / "agent-config.md").read_text()
    assert doc == reference_markdown(), "regenerate it: edge_agent.config_doc.reference_markdown()"
    assert "`review_policy`" in doc and "## `update:`" in doc


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"decision": {"threshold": float("nan")}}, "config: decision.threshold: must be a finite"),
        ({"actuator": {"delay_ms": float("nan")}}, "config: actuator.delay_ms: must be a finite"),
        ({"actuator": {"delay_ms": float("inf")}}, "config: actuator.delay_ms: must be a finite"),
        ({"actuator": {"delay_ms": -5}}, "config: actuator.delay_ms: must be ≥ 0.0, got -5"),
        ({"actuator": {"pulse_ms": float("-inf")}}, "config: actuator.pulse_ms: must be a finite"),
        ({"trigger": {"bounce_ms": float("nan")}}, "config: trigger.bounce_ms: must be a finite"),
        ({"camera": {"difficulty": float("inf")}}, "config: camera.difficulty: must be a finite"),
        ({"decision": {"threshold": -0.1}}, "config: decision.threshold: must be ≥ 0.0"),
        ({"decision": {"review_margin": 0.6}}, "config: decision.review_margin: must be ≤ 0.5"),
        ({"actuator": {"safe_state": "high"}}, "config: actuator.safe_state: must be one of"),
        ({"update": {"enabled": True}}, "config: update.enabled: needs host.url"),
        ({"host": {"url": "http://127.0.0.1:1"}}, "config: host.token_file: set token"),
    ],
)
def test_non_finite_negative_and_out_of_range_values_are_refused(data, message):
    data.setdefault("actuator", {}).setdefault("type", "none")
    with pytest.raises(ConfigError) as err:
        from_dict(data, env={})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
