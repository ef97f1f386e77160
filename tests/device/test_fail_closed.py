"""Fail closed (issue 36): each case an independent campaign found accepted on b07fc59.

The update path trusts only the signed manifest (a lying host is refused and reported once,
never re-applied); non-finite scores never pass a part; no config that validates can break
the reject output; a broken fallback artifact is refused before it serves."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from devicekit import LABELS, ROOT, SPEC, _model_bytes, frame, make_bundle, write_config
from fakehost import FakeHost

from edge_agent.actuator import Actuator
from edge_agent.classifier import Classifier, Scores
from edge_agent.config import config_warnings, from_dict, load_config
from edge_agent.decision import Policy, decide
from edge_agent.hostclient import HostClient
from edge_agent.journal import Journal
from edge_agent.service import Agent
from edge_agent.update import UpdateWorker, plan
from edge_common.bundle import generate_keypair, pack_tar, sha256_file, sign_manifest
from edge_common.errors import BundleError, ConfigError, HardwareError
from edge_common.preprocess import preprocess

OLD = "2026.01.01-000000-structured-0.50"
CURRENT = "2026.06.01-000000-structured-0.50"
DEVICE = "test-device"
EDGECTL = Path(sys.executable).parent / "edgectl"  # the console script of this venv


# -- the update path trusts only the signed manifest -------------------------------------


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("signed")
    priv, pub = generate_keypair()
    (root / "edge.pub").write_bytes(pub)
    out = {"pub": root / "edge.pub", "priv": priv}
    for name, version in (("old", OLD), ("current", CURRENT),
                          ("between", "2026.03.01-000000-structured-0.50")):
        b = make_bundle(root / name, version=version)
        sign_manifest(b, priv)
        out[name] = b
        out[name + "_tar"] = pack_tar(b, root / f"{name}.tar")
    return out


@pytest.fixture
def host_and_worker(tmp_path, signed):
    path = write_config(tmp_path / "agent.yaml", signed["current"])
    cfg = load_config(path)
    cfg.bundle.public_key = str(signed["pub"])
    agent = Agent(cfg)
    agent.open()
    host = FakeHost()
    w = UpdateWorker(agent, HostClient(host.url, DEVICE, "token", timeout_s=5), poll_s=1,
                     health_window_s=0, public_keys=[str(signed["pub"])],
                     state_dir=tmp_path / "updates")
    yield agent, host, w
    host.close()
    agent.close()


def _poll(w: UpdateWorker, n: int = 10) -> list:
    return [w.check_once() for _ in range(n)]


def _no_unexpected_errors(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def test_host_claiming_newer_serving_older_signed_bundle_is_refused_once(host_and_worker,
                                                                         signed, caplog):
    agent, host, w = host_and_worker
    host.serve(signed["old_tar"], claim="2099.01.01-000000-claimed")
    outcomes = _poll(w, 10)
    assert agent.classifier.version == CURRENT  # the serving model is unchanged
    assert outcomes[0].outcome == "refused"
    assert "signed manifest says " + OLD in outcomes[0].reason
    assert outcomes[1:] == [None] * 9          # no re-apply, no retry loop
    assert host.downloads == 1
    assert [r["outcome"] for r in host.reports] == ["refused"]  # reported once
    assert not list((w.dir).glob("*.tar"))     # nothing of it kept
    _no_unexpected_errors(caplog)


def test_host_whose_claim_disagrees_with_the_newer_manifest_is_refused(host_and_worker, signed):
    agent, host, w = host_and_worker
    newer = make_bundle(w.dir.parent / "newer", version="2026.09.01-000000-structured-0.50")
    sign_manifest(newer, signed["priv"])
    host.serve(pack_tar(newer, w.dir.parent / "newer.tar"),
               claim="2026.12.01-000000-structured-0.50")
    outcomes = _poll(w, 10)
    assert agent.classifier.version == CURRENT
    assert "the host named version 2026.12.01" in outcomes[0].reason
    assert [r["outcome"] for r in host.reports] == ["refused"] and host.downloads == 1


def test_an_honestly_named_older_version_needs_the_operators_downgrade(host_and_worker, signed):
    agent, host, w = host_and_worker
    host.serve(signed["old_tar"], claim=OLD)
    assert w.check_once().outcome == "refused" and host.downloads == 0   # not even fetched
    host.serve(signed["old_tar"], claim=OLD, allow_downgrade=True)
    assert w.check_once().outcome == "applied"
    assert agent.classifier.version == OLD


def test_an_equal_version_spelled_otherwise_is_a_no_op(host_and_worker, signed):
    agent, host, w = host_and_worker
    respelled = "2026-06-01_000000_STRUCTURED-0.50"
    assert plan(CURRENT, {"version": respelled}, {}) is None
    host.serve(signed["between_tar"], claim=respelled)
    assert _poll(w, 3) == [None] * 3
    assert host.downloads == 0 and host.reports == []
    assert agent.classifier.version == CURRENT


def test_a_manifest_nested_100000_deep_is_refused_in_one_line_and_cleaned_up(
        host_and_worker, signed, caplog):
    agent, host, w = host_and_worker
    deep = w.dir.parent / "deep"
    shutil.copytree(signed["current"], deep)
    m = (deep / "manifest.json").read_text().rstrip().rstrip("}")
    (deep / "manifest.json").write_text(m + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    sign_manifest(deep, signed["priv"])
    host.serve(pack_tar(deep, w.dir.parent / "deep.tar"), claim="2026.07.01-000000-deep")
    outcomes = _poll(w, 10)
    assert "nests deeper than 16 levels" in outcomes[0].reason
    assert "\n" not in outcomes[0].reason
    assert len(host.reports) == 1 and not list(w.dir.glob("*.tar"))
    assert agent.classifier.version == CURRENT
    _no_unexpected_errors(caplog)


@pytest.mark.parametrize("answer", [
    b"not json", b"[1, 2]", b'{"version": 5}', b'{"version": "v2", "sha256": "zz"}',
    b'{"version": "v2", "allow_downgrade": "yes"}',
])
def test_a_malformed_desired_answer_is_one_line_and_no_traceback(host_and_worker, answer,
                                                                 caplog):
    from edge_agent.hostclient import HostUnavailable

    agent, host, w = host_and_worker
    host.raw_desired = answer
    with pytest.raises(HostUnavailable) as err:
        w.check_once()
    assert "GET /desired" in str(err.value) and "\n" not in str(err.value)
    assert agent.classifier.version == CURRENT and host.downloads == 0


# -- non-finite scores never pass a part -------------------------------------------------


def test_nan_scores_are_unclassifiable_and_follow_error_policy():
    for bad in ([np.nan, 0.5], [np.inf, 0.0], [1.5, -0.5]):
        v = decide(bad, ["ok", "bad"], ["bad"], Policy())
        assert v.decision == "review" and v.action == "reject" and v.error
    v = decide([np.nan, 0.5], ["ok", "bad"], ["bad"], Policy(error_policy="pass"))
    assert v.action == "pass" and v.error  # the operator's explicit choice, flagged


class NanClassifier:
    """The real tiny classifier whose probabilities come out NaN (a model gone wrong)."""

    def __init__(self, inner: Classifier) -> None:
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def classify(self, image):
        s = self._inner.classify(image)
        return Scores(np.full_like(s.probs, np.nan), s.preprocess_ms, s.inference_ms)


def test_an_agent_whose_model_emits_nan_rejects_every_part(tmp_path, tiny_bundle):
    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle))
    agent = Agent(cfg, classifier=NanClassifier(Classifier.load(str(tiny_bundle))))
    try:
        summary = agent.run(max_items=5)
    finally:
        agent.close()
    assert summary["ok"] == 0 and summary["rejects"] + summary["reviews"] == 5
    j = Journal(cfg.journal.dir)
    rows = [j.get(i) for i in j.ids()]
    j.close()
    assert len(rows) == 5
    for r in rows:
        assert r["action"] == "reject" and "non-finite" in r["error"]
        assert r["probs"] is None  # no NaN in the journal (nor in what syncs to the host)


def test_a_model_that_passes_its_test_vectors_and_emits_nan_on_the_line(tmp_path):
    """The real agent, a real ONNX model: NaN on the synthetic camera's parts, finite on
    its own test vectors (so it loads). No part passes; each is journaled with why."""
    b = make_bundle(tmp_path / "nan", nan_band=True)
    cfg = load_config(write_config(tmp_path / "agent.yaml", b))
    agent = Agent(cfg)
    try:
        summary = agent.run(max_items=12)
    finally:
        agent.close()
    j = Journal(cfg.journal.dir)
    rows = [j.get(i) for i in j.ids()]
    j.close()
    assert len(rows) == 12 and summary["ok"] == 0
    assert all(r["action"] == "reject" and "non-finite scores" in r["error"] for r in rows)


@pytest.mark.parametrize("size", [64, 1, None])
def test_an_input_size_the_model_cannot_take_is_refused_at_load(tmp_path, size):
    """Found by the manifest fuzz target (bench_fuzz, 11 findings): input.size changed (or
    the input spec emptied, default 64) passed verify and start, then every part failed
    in onnxruntime. Now the test vectors' shape must be what the spec makes, and one frame
    made by the spec goes through the model at load."""
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    if size is None:
        m["input"] = {}
    else:
        m["input"]["size"] = size
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as err:
        Classifier.load(str(b))
    assert "test vectors have shape" in str(err.value) and "\n" not in str(err.value)
    proc = subprocess.run([str(EDGECTL), "bundle", "verify", str(b)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "test vectors have shape" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_zero_std_bundle_is_refused_at_load(tmp_path):
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["input"]["std"] = [0, 0, 0]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="input.std must be within"):
        Classifier.load(str(b))


# -- a broken fallback artifact is refused before it serves ------------------------------


def _wrong_shape_model() -> bytes:
    import onnx

    model = onnx.load_from_string(_model_bytes())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 16, 16   # the test vectors are 32×32
    return model.SerializeToString()


def test_broken_fp32_is_refused_on_a_board_serving_int8(tmp_path):
    """INT8 serves; the FP32 twin (the board's fallback) cannot even take the input."""
    b = make_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    good = b / "model.fp32.onnx"
    shutil.copyfile(good, b / "model.int8.onnx")
    good.write_bytes(_wrong_shape_model())
    data = dict(np.load(b / "test_vectors.npz"))
    data["expected/model.int8.onnx"] = data["expected/model.fp32.onnx"]
    np.savez(b / "test_vectors.npz", **data)
    int8 = {**m["artifacts"][0], "path": "model.int8.onnx", "precision": "int8",
            "sha256": sha256_file(b / "model.int8.onnx")}
    m["artifacts"][0].update(sha256=sha256_file(good), bytes=good.stat().st_size)
    m["artifacts"].append(int8)
    m["test_vectors"].update(sha256=sha256_file(b / "test_vectors.npz"),
                             bytes=(b / "test_vectors.npz").stat().st_size)
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as err:
        Classifier.load(str(b), precision="int8")
    msg = str(err.value)
    assert "model.fp32.onnx" in msg and "\n" not in msg and len(msg) < 400, msg
    proc = subprocess.run([str(EDGECTL), "bundle", "verify", str(b)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert "model.fp32.onnx" in out and "cannot run its test vectors" in out, out


# -- no config that validates can break the output ---------------------------------------


def _cfg(**sections):
    base = {"trigger": {"type": "interval", "rate_hz": 20, "pin_factory": "mock"},
            "actuator": {"type": "gpio", "pin": 17, "pin_factory": "mock"}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return base


@pytest.mark.parametrize("key,value,msg", [
    ("pulse_ms", 1e300, "actuator.pulse_ms: must be ≤ 10000.0"),
    ("delay_ms", 1e300, "actuator.delay_ms: must be ≤ 60000.0"),
    ("pin", -1, "actuator.pin: GPIO -1 is not on the board's header"),
    ("pin", 10**30, "is not on the board's header"),
    ("pin", "abc", "actuator.pin: 'abc' is not a GPIO pin"),
    ("pin", "-5", "actuator.pin: '-5' is not a GPIO pin"),
])
def test_out_of_range_actuator_settings_are_refused(key, value, msg):
    with pytest.raises(ConfigError) as err:
        from_dict(_cfg(actuator={key: value}), env={})
    assert msg in str(err.value)


def test_trigger_and_actuator_on_one_pin_is_refused():
    with pytest.raises(ConfigError, match="is GPIO17, already used by trigger.pin"):
        from_dict(_cfg(trigger={"type": "gpio", "pin": "GPIO17"}, actuator={"pin": 17}), env={})
    with pytest.raises(ConfigError, match="'BOARD11' is GPIO17"):  # BOARD11 is GPIO17 on the header
        from_dict(_cfg(trigger={"type": "gpio", "pin": 17}, actuator={"pin": "BOARD11"}), env={})
    ok = from_dict(_cfg(trigger={"type": "gpio", "pin": 27}, actuator={"pin": "GPIO17"}), env={})
    assert ok.actuator.pin == "GPIO17"


def test_every_number_in_the_schema_has_physical_bounds():
    import dataclasses
    import typing

    from edge_agent.config import AgentConfig

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, prefix + f.name + ".")
            elif {int, float} & set(typing.get_args(tp) or (tp,)) and not f.metadata.get("pin"):
                yield prefix + f.name, f.metadata

    unbounded = [k for k, meta in walk(AgentConfig) if "min" not in meta or "max" not in meta]
    assert unbounded == []


def test_settings_that_cannot_work_are_warned(tmp_path):
    assert any("never fires" in w for w in config_warnings(from_dict(
        _cfg(actuator={"delay_ms": 0}), env={})))
    assert any("item interval" in w for w in config_warnings(from_dict(
        _cfg(actuator={"pulse_ms": 5000, "delay_ms": 200}), env={})))
    assert config_warnings(from_dict(_cfg(actuator={"pulse_ms": 30, "delay_ms": 200}), env={})) \
        == []
    p = tmp_path / "a.yaml"
    p.write_text("trigger: {type: interval, rate_hz: 20}\nactuator: {type: gpio, pin: 17, "
                 "delay_ms: 0, pin_factory: mock}\n")
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "validate-config", str(p)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "warning: actuator.delay_ms 0" in proc.stdout


@pytest.mark.parametrize("command", ["validate-config", "safe-state", "run"])
def test_duplicate_yaml_keys_are_refused_by_every_command(tmp_path, command, tiny_bundle):
    p = tmp_path / "agent.yaml"
    p.write_text(f"bundle: {{path: {tiny_bundle}}}\n"
                 "actuator: {type: gpio, pin: 17, pin_factory: mock}\n"
                 "actuator: {type: none}\n")
    args = [command, str(p)] if command == "validate-config" else [command, "--config", str(p)]
    proc = subprocess.run([sys.executable, "-m", "edge_agent", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode != 0
    assert "duplicate key 'actuator'" in proc.stderr and "Traceback" not in proc.stderr
    p.write_text("actuator: {type: gpio, pin: 17, safe_state: on, safe_state: off}\n")
    with pytest.raises(ConfigError, match="duplicate key 'safe_state'"):
        load_config(p, env={})


# -- the actuator thread cannot die silently ---------------------------------------------


def test_a_dying_actuator_thread_drives_safe_and_raises_a_fault():
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    faults = []
    # 1e300 ms is what the schema now refuses; built directly it overflows the wait.
    act = Actuator(17, delay_ms=1e300, pulse_ms=30, pin_factory=factory)
    act.on_fault = faults.append
    act.device.on()  # the output is on when the scheduler meets the bad event
    assert act.schedule(time.monotonic_ns()) is True
    deadline = time.monotonic() + 5
    while act.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert act.failed and "OverflowError" in act.failed
    assert faults == [act.failed]
    assert factory.pin(17).state is False  # safe level (off)
    assert act.schedule(time.monotonic_ns()) is False  # no pulse is taken any more
    act.stop()


def test_an_agent_stops_taking_parts_as_ok_when_its_actuator_dies(tmp_path, tiny_bundle):
    from gpiozero.pins.mock import MockFactory

    cfg = load_config(write_config(tmp_path / "agent.yaml", tiny_bundle,
                                   trigger={"type": "interval", "rate_hz": 50,
                                            "pin_factory": "mock"}))
    factory = MockFactory()
    act = Actuator(17, delay_ms=1e300, pulse_ms=30, pin_factory=factory)
    agent = Agent(cfg, actuator=act)
    with pytest.raises(HardwareError, match="actuator thread died"):
        try:
            agent.run(max_items=200)
        finally:
            agent.close()
    assert "actuator" in agent.faults
    j = Journal(cfg.journal.dir)
    rows = [j.get(i) for i in j.ids()]
    j.close()
    died = [r for r in rows if r["error"] and "actuator thread died" in r["error"]]
    assert died, "parts after the death are recorded as what they were"
    assert all(r["action"] == "reject" for r in died)
    assert len(rows) < 200  # the line stopped instead of passing parts it cannot reject
    assert factory.pin(17).state is False


def test_a_frame_round_trip_still_classifies(tmp_path, tiny_bundle):
    """The strict input spec did not change what a good bundle computes."""
    c = Classifier.load(str(tiny_bundle))
    try:
        assert c.labels[int(np.argmax(c.classify(frame("red")).probs))] == "scratch"
        assert preprocess(frame("green"), SPEC).shape == (1, 3, 32, 32)
        assert LABELS == c.labels
    finally:
        c.close()


def test_a_key_with_a_line_break_is_refused_in_one_line(tmp_path):
    """The config fuzz target's finding (run 2): an unknown key holding a carriage return
    printed the error over two lines."""
    p = tmp_path / "a.yaml"
    p.write_text('plc:\n  modbus:\n    "\\r": null\n')
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "validate-config", str(p)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "plc.modbus.'\\r': unknown key" in proc.stderr
