"""bundle_writer + `edgectl bundle show|verify`: written bundles verify; bad ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnxkit import LABELS, SIZE, tiny_onnx

from edge_common import bundle as B
from edge_common.errors import BundleError
from edge_common.preprocess import InputSpec
from edgectl.cli import main
from edgectl.pipeline.bundle_writer import write_bundle


def _write(tmp_path: Path, out: Path, key: bytes | None = None, **kw) -> Path:
    src = tiny_onnx(tmp_path / "src.onnx")
    x = np.random.default_rng(2).normal(size=(20, 3, SIZE, SIZE)).astype(np.float32)
    args = dict(
        name="tiny", version="v1", labels=LABELS, reject_labels=LABELS[1:],
        input_spec=InputSpec(size=SIZE),
        artifacts=[{"path": src, "format": "onnx", "precision": "fp32",
                    "metrics": {"accuracy": np.float64(0.9), "latency_ms": {"p50": 0.1}}}],
        metrics={"accuracy": 0.9, "sparsity": 0.5}, baseline={"accuracy": 0.91},
        provenance={"config": {"prune": "unstructured"}}, min_accuracy=0.5, test_inputs=x,
        private_key_pem=key,
    )
    args.update(kw)
    return write_bundle(out, **args)


@pytest.fixture(scope="module")
def keys():
    return B.generate_keypair()


def test_written_bundle_verifies_and_replays(tmp_path, keys):
    out = _write(tmp_path, tmp_path / "bundle", keys[0])
    b = B.load_bundle(out, public_key=keys[1])
    assert b.signed and b.deployable and b.manifest["metrics"]["sparsity"] == 0.5
    assert b.manifest["test_vectors"]["count"] == 8
    art = b.select_artifact("onnx")
    assert art.path == "model.fp32.onnx" and art.metrics["accuracy"] == 0.9
    assert art.tolerance["top1"] and 0 < art.tolerance["max_abs"] < 0.1
    rows = B.replay_test_vectors(b)
    assert [r["status"] for r in rows] == ["ok"]
    x, expected = b.test_vectors()
    assert x.shape == (8, 3, SIZE, SIZE) and expected["model.fp32.onnx"].shape == (8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "src.onnx"]


def test_failed_write_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(Exception, match="onnxruntime cannot load"):
        _write(tmp_path, tmp_path / "bundle",
               artifacts=[{"path": bad, "format": "onnx", "precision": "fp32"}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "src.onnx"]


def test_replaces_a_bundle_but_not_another_folder(tmp_path):
    out = _write(tmp_path, tmp_path / "bundle")
    _write(tmp_path, out, version="v2")
    assert B.load_bundle(out).version == "v2"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="refusing to overwrite"):
        _write(tmp_path, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_show_and_verify_cli(cli_runner, tmp_path, keys):
    out = _write(tmp_path, tmp_path / "bundle", keys[0], deployable=False)
    pub = tmp_path / "k.pub"
    pub.write_bytes(keys[1])
    res = cli_runner.invoke(main, ["bundle", "show", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["version"] == "v1" and info["signed"] and info["deployable"] is False
    res = cli_runner.invoke(main, ["bundle", "show", str(out)])
    assert "model.fp32.onnx" in res.output and "NO (built below" in res.output
    out = _write(tmp_path, tmp_path / "bundle", keys[0])  # the same, deployable
    res = cli_runner.invoke(main, ["bundle", "verify", str(out), "--key", str(pub), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["signature"] == "verified" and rep["deployable"]
    assert rep["artifacts"][0]["status"] == "ok" and rep["artifacts"][0]["max_abs_diff"] < 1e-4
    tar = B.pack_tar(out, tmp_path / "bundle.tar")
    res = cli_runner.invoke(main, ["bundle", "verify", str(tar), "--key", str(pub)])
    assert res.exit_code == 0 and "signature verified" in res.output


def test_verify_cli_refuses_tampering(cli_runner, tmp_path, keys):
    out = _write(tmp_path, tmp_path / "bundle", keys[0])
    other_pub = tmp_path / "other.pub"
    other_pub.write_bytes(B.generate_keypair()[1])
    res = cli_runner.invoke(main, ["bundle", "verify", str(out), "--key", str(other_pub)])
    assert res.exit_code == 1 and "signature does not match manifest" in res.output
    f = out / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    res = cli_runner.invoke(main, ["bundle", "verify", str(out)])
    assert res.exit_code == 1 and "model.fp32.onnx sha256 mismatch" in res.output


def test_verify_cli_reports_test_vector_failure(cli_runner, tmp_path):
    """A model swapped for another one with a re-written manifest (unsigned) fails replay."""
    out = _write(tmp_path, tmp_path / "bundle")
    tiny_onnx(out / "model.fp32.onnx", seed=7)
    m = json.loads((out / "manifest.json").read_text())
    m["artifacts"][0]["sha256"] = B.sha256_file(out / "model.fp32.onnx")
    m["artifacts"][0]["bytes"] = (out / "model.fp32.onnx").stat().st_size
    B.write_manifest(out, m)
    res = cli_runner.invoke(main, ["bundle", "verify", str(out), "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.output)
    assert rep["ok"] is False and rep["artifacts"][0]["status"] == "failed"
    assert "model.fp32.onnx test vectors" in rep["artifacts"][0]["error"]


def test_verify_cli_fails_for_a_bundle_marked_not_deployable(cli_runner, tmp_path, keys):
    """Signature, hashes and test vectors all fine, but built below its gate: a board
    refuses it, so verify must not say OK."""
    out = _write(tmp_path, tmp_path / "bundle", keys[0], deployable=False)
    pub = tmp_path / "k.pub"
    pub.write_bytes(keys[1])
    res = cli_runner.invoke(main, ["bundle", "verify", str(out), "--key", str(pub)])
    assert res.exit_code == 1, res.output
    assert ("bundle v1 is marked not deployable: built below its accuracy gate "
            "(accuracy 90.00%, gate 50.00%)") in res.output
    res = cli_runner.invoke(main, ["bundle", "verify", str(out), "--json"])
    assert res.exit_code == 1
    rep = json.loads(res.output)
    assert rep["ok"] is False and rep["deployable"] is False
    assert rep["artifacts"][0]["status"] == "ok"             # not a test-vector failure
