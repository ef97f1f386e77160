"""INT8 static quantization (ORT QDQ, ai-edge-quantizer) on a tiny random MobileNetV2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_common.errors import ModelError
from edgectl.pipeline import export as ex
from edgectl.pipeline import quantization as q

SIZE = 32


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((16, 3, SIZE, SIZE)).astype(np.float32)


def test_onnx_int8_is_qdq_per_channel_and_agrees(tiny_model, calib, tmp_path):
    import onnx

    fp32 = ex.export_onnx(tiny_model, tmp_path / "model.fp32.onnx", SIZE)
    int8 = q.quantize_onnx(fp32, tmp_path / "model.int8.onnx", calib)
    proto = onnx.load(str(int8))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count(
        "QuantizeLinear"
    )
    # per-channel: the first conv's weight scale is a vector, not a scalar
    inits = {t.name: t for t in proto.graph.initializer}
    scales = [
        inits[n.input[1]]
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
        and len(inits[n.input[0]].dims) == 4
    ]
    assert scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    assert int8.stat().st_size < fp32.stat().st_size / 2

    x = np.random.default_rng(1).standard_normal((16, 3, SIZE, SIZE)).astype(np.float32)
    res = ex.check_parity(tiny_model, int8, "onnx", x)
    assert res["precision"] == "int8" and res["top1_agreement"] >= 0.9


def test_bad_inputs_are_model_errors(tmp_path, calib):
    with pytest.raises(ModelError, match="not found"):
        q.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx", calib)
    with pytest.raises(ModelError, match="calibration method"):
        q.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx", calib, method="magic")
    assert not (tmp_path / "out.onnx").exists()


def test_int8_parity_judges_clear_margins_and_correlation(tmp_path, monkeypatch):
    """Near-tied logits may flip under INT8 noise; clear ones and the logits' shape may not."""
    from edge_common.errors import ParityError

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 6)).astype(np.float32) * 2
    noisy = ref + rng.normal(0, 0.15, ref.shape).astype(np.float32)  # lossy but sane
    outputs = {"noisy": noisy, "garbage": rng.permutation(ref)}

    class Fake:
        def __init__(self, which: str) -> None:
            self.which = which

        def run(self, x: np.ndarray) -> np.ndarray:
            return outputs[self.which][: len(x)]

    class Ref(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(ref[: len(x)])

    x = np.zeros((200, 3, 4, 4), np.float32)
    for which in outputs:
        (tmp_path / f"{which}.int8.onnx").write_bytes(b"x")
    monkeypatch.setattr(ex, "open_session",
                        lambda path, fmt, threads=1: Fake(Path(path).name.split(".")[0]))
    res = ex.check_parity(Ref(), tmp_path / "noisy.int8.onnx", "onnx", x)
    assert res["top1_agreement_clear"] >= 0.9 and res["logit_correlation"] > 0.9
    assert res["clear_n"] >= 10
    with pytest.raises(ParityError, match="garbage.int8.onnx"):
        ex.check_parity(Ref(), tmp_path / "garbage.int8.onnx", "onnx", x)
    with pytest.raises(ParityError):  # the same noise is far too much for an FP32 artifact
        ex.check_parity(Ref(), tmp_path / "noisy.int8.onnx", "onnx", x, precision="fp32")
