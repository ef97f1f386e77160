"""`edgectl build` on tiny settings: a bundle that verifies, the JSON keys, the accuracy gate,
the baseline cache. Real torch, real exports, real ONNX Runtime; seconds, not minutes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_common import bundle as B
from edgectl.cli import main

TINY_ARGS = [
    "--img-size",
    "32",
    "--train-size",
    "48",
    "--test-size",
    "24",
    "--batch-size",
    "16",
    "--calib-size",
    "8",
    "--latency-runs",
    "3",
    "--width-mult",
    "0.25",
]


def _build(cli_runner, tmp_path: Path, *args: str):
    env = {"EDGECTL_CACHE": str(tmp_path / "cache")}
    return cli_runner.invoke(main, ["build", *TINY_ARGS, *args], env=env)


@pytest.fixture(scope="module")
def built(tiny_checkpoint, tmp_path_factory):
    """One pruned, quantized, signed build from the shared tiny checkpoint."""
    from click.testing import CliRunner

    tmp = tmp_path_factory.mktemp("build")
    priv, pub = B.generate_keypair()
    (tmp / "k.key").write_bytes(priv)
    (tmp / "k.pub").write_bytes(pub)
    res = _build(
        CliRunner(),
        tmp,
        "--from",
        str(tiny_checkpoint),
        "--prune",
        "unstructured",
        "--sparsity",
        "0.5",
        "--finetune-epochs",
        "1",
        "--formats",
        "onnx",
        "--min-accuracy",
        "0",
        "--key",
        str(tmp / "k.key"),
        "--out",
        str(tmp / "out"),
        "--json",
    )
    assert res.exit_code == 0, res.output
    return tmp, json.loads(res.stdout)


def test_build_writes_a_bundle_that_verifies(built):
    tmp, summary = built
    out = tmp / "out"
    assert Path(summary["bundle"]) == out / "bundle"
    b = B.load_bundle(out / "bundle", public_key=tmp / "k.pub")
    assert b.signed and b.deployable and b.min_accuracy == 0.0
    assert {(a.format, a.precision) for a in b.artifacts} == {("onnx", "fp32"), ("onnx", "int8")}
    assert all(r["status"] == "ok" for r in B.replay_test_vectors(b))
    tb = B.load_bundle(out / "bundle.tar", public_key=tmp / "k.pub")
    assert tb.version == b.version
    tb.close()
    # what the board reads: labels and preprocessing come from the data
    assert b.labels[0] == "ok" and b.input_spec.size == 32
    assert b.manifest["provenance"]["config"]["prune"] == "unstructured"


def test_build_json_keys(built):
    _, s = built
    assert {"bundle", "baseline", "model", "artifacts"} <= set(s)
    for ev in (s["baseline"], s["model"]):
        assert {
            "accuracy",
            "params",
            "nonzero",
            "sparsity",
            "size_bytes",
            "macs",
            "latency_ms",
        } <= set(ev)
    assert s["baseline"]["nonzero"] > s["model"]["nonzero"]
    assert abs(s["pruning"]["actual"] - 0.5) <= 0.01
    for a in s["artifacts"]:
        assert {
            "format",
            "precision",
            "path",
            "bytes",
            "sha256",
            "accuracy",
            "latency_ms",
            "max_abs_diff",
        } <= set(a)
        assert Path(a["path"]).stat().st_size == a["bytes"]
        assert B.sha256_file(a["path"]) == a["sha256"]
        assert 0.0 <= a["accuracy"] <= 1.0 and a["latency_ms"] > 0
    fp32 = next(a for a in s["artifacts"] if a["precision"] == "fp32")
    assert fp32["max_abs_diff"] < 1e-3


def test_below_min_accuracy_refuses_and_cache_is_reused(cli_runner, tmp_path):
    """An untrained baseline (0 epochs) cannot reach 100%: refused, nothing deployable."""
    args = [
        "--epochs",
        "0",
        "--prune",
        "none",
        "--finetune-epochs",
        "0",
        "--formats",
        "onnx",
        "--min-accuracy",
        "1.0",
        "--out",
        str(tmp_path / "out"),
    ]
    res = _build(cli_runner, tmp_path, *args)
    assert res.exit_code == 1
    assert "below --min-accuracy 100.00%: no bundle written" in res.output
    assert "--allow-below-min" in res.output
    assert not (tmp_path / "out" / "bundle").exists()
    assert not (tmp_path / "out" / "bundle.tar").exists()
    assert list((tmp_path / "cache" / "baselines").glob("*/model.pt"))
    res = _build(cli_runner, tmp_path, *args)  # same data and settings: the cached baseline
    assert res.exit_code == 1
    assert "baseline from cache" in res.output


def test_allow_below_min_marks_the_bundle(cli_runner, tmp_path, tiny_checkpoint):
    res = _build(
        cli_runner,
        tmp_path,
        "--from",
        str(tiny_checkpoint),
        "--prune",
        "none",
        "--finetune-epochs",
        "0",
        "--quantize",
        "none",
        "--formats",
        "onnx",
        "--min-accuracy",
        "1.0",
        "--allow-below-min",
        "--out",
        str(tmp_path / "out"),
    )
    assert res.exit_code == 0, res.output
    assert "NOT passed" in res.stdout
    b = B.load_bundle(tmp_path / "out" / "bundle")
    assert b.deployable is False and b.min_accuracy == 1.0
    assert [(a.format, a.precision) for a in b.artifacts] == [("onnx", "fp32")]
    res = cli_runner.invoke(main, ["bundle", "show", str(tmp_path / "out" / "bundle")])
    assert "NO (built below" in res.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--key", "__file__"], "not a usable PEM private key"),
        (["--formats", "onnx,coreml"], "unknown export format 'coreml'"),
        (["--from", "__file__"], "not an edgectl checkpoint"),
    ],
)
def test_bad_input_fails_fast_with_one_line(cli_runner, tmp_path, args, message):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    args = [str(junk) if a == "__file__" else a for a in args]
    res = _build(cli_runner, tmp_path, *args, "--out", str(tmp_path / "out"))
    assert res.exit_code != 0
    assert message in res.output
    assert not (tmp_path / "out" / "bundle").exists()


@pytest.mark.slow
def test_default_build_meets_the_issue_criteria(cli_runner, tmp_path):
    """Issue 4's definition of done, on the defaults (minutes: `pytest -m slow`)."""
    res = cli_runner.invoke(main, ["build", "--prune", "unstructured", "--sparsity", "0.5",
                                   "--out", str(tmp_path / "out"), "--json"],
                            env={"EDGECTL_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    kinds = {(a["format"], a["precision"]) for a in s["artifacts"]}
    assert kinds == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    assert all(a["test_vectors"] == "ok" for a in s["artifacts"])
    assert abs(s["pruning"]["actual"] - 0.5) <= 0.01
    assert s["model"]["accuracy"] >= s["baseline"]["accuracy"] - 0.01
    for a in s["artifacts"]:
        if a["precision"] == "int8":
            assert abs(a["accuracy_vs_fp32"]) <= 0.01, a
    assert B.load_bundle(s["bundle"]).deployable


def test_default_gate_is_above_chance():
    from edgectl.pipeline.gates import CHANCE_MARGIN, chance_floor, default_gate

    counts = {"ok": 12, "scratch": 4, "crack": 4, "spot": 4}
    assert chance_floor(counts) == (0.5 + CHANCE_MARGIN, "ok")
    assert default_gate(0.3, counts) == 0.55        # a chance-level baseline cannot lower it
    assert default_gate(0.9, counts) == 0.88        # a good baseline: baseline − 2 points


def test_untrained_model_is_not_deployable_by_default(cli_runner, tmp_path):
    """No --min-accuracy: an untrained model (at chance) is refused, the message says why."""
    res = _build(cli_runner, tmp_path, "--epochs", "0", "--prune", "none",
                 "--finetune-epochs", "0", "--quantize", "none", "--formats", "onnx",
                 "--out", str(tmp_path / "out"))
    assert res.exit_code == 1, res.output
    assert "below the default gate" in res.output and "at least majority class" in res.output
    assert not (tmp_path / "out" / "bundle").exists()


def test_build_records_the_int8_gate_and_the_speed_verdict(built):
    """Every INT8 row says how far it is from its FP32 twin and whether that passes the
    default 1-point gate; the manifest says the same; the speed note follows the measurement."""
    from edgectl.pipeline.build import format_table

    tmp, s = built
    assert s["max_accuracy_drop"] == 1.0      # points, as --max-accuracy-drop
    b = B.load_bundle(tmp / "out" / "bundle")
    for a in s["artifacts"]:
        if a["precision"] == "int8":
            assert a["deployable"] == (-a["accuracy_vs_fp32"] <= 0.01 + 1e-9)
            entry = next(e for e in b.manifest["artifacts"] if e["precision"] == "int8")
            assert entry["metrics"]["deployable"] == a["deployable"]
            assert entry["metrics"]["max_accuracy_drop"] == 1.0
        else:
            assert a["deployable"] is True
    ratio = s["speed"]["onnxruntime_fp32"]["ratio"]
    assert ratio > 0
    names_structured = any("--prune structured" in n for n in s["notes"])
    assert names_structured == (ratio >= 0.9)
    table = format_table(s)
    assert all(f"note: {n}" in table for n in s["notes"])
    assert "at most 1 pt lost" in table


def test_baseline_key_follows_what_decides_the_baseline(tiny_data_config, tmp_path, monkeypatch):
    """The key hashes the data recipe, the training settings and the training code's
    source: a change to any retrains; another git commit (code_version) does not."""
    from edgectl.pipeline import build, checkpoint

    cfg = build.BuildConfig(data=tiny_data_config, out=tmp_path / "o")
    key = build.baseline_key(cfg)
    monkeypatch.setattr(checkpoint, "code_version", lambda: "9.9.9+another-commit")
    assert build.baseline_key(cfg) == key                       # another commit: same key
    assert build.baseline_key(build.BuildConfig(data=tiny_data_config.replace(seed=7),
                                                out=cfg.out)) != key   # the data recipe
    assert build.baseline_key(build.BuildConfig(data=tiny_data_config, out=cfg.out,
                                                epochs=3)) != key      # a training setting
    # the training code's source: its digest follows the files' bytes, and the key the digest
    assert "edgectl.pipeline.training" in build.BASELINE_SOURCES
    src = tmp_path / "src"
    src.mkdir()
    (src / "trainmod_for_key.py").write_text("LR = 0.1\n")
    monkeypatch.syspath_prepend(str(src))
    digest = build.training_source_digest(("trainmod_for_key",))
    (src / "trainmod_for_key.py").write_text("LR = 0.2\n")
    assert build.training_source_digest(("trainmod_for_key",)) != digest
    monkeypatch.setattr(build, "training_source_digest", lambda: "another training loop")
    assert build.baseline_key(cfg) != key
