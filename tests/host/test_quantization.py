"""INT8 static quantization (ORT QDQ, ai-edge-quantizer) on a tiny random MobileNetV2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_common.errors import ModelError
from edgectl import export as ex
from edgectl import quantization as q
from edgectl.model import build_model

SIZE = 32


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(6, width_mult=0.25).eval()


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


def test_calibration_inputs_sample_the_dataset():
    ds = [(torch.full((3, SIZE, SIZE), float(i)), i % 6) for i in range(50)]
    x = q.calibration_inputs(ds, n=10, seed=3)
    assert x.shape == (10, 3, SIZE, SIZE) and x.dtype == np.float32
    assert len({float(v) for v in x[:, 0, 0, 0]}) == 10  # distinct images, no repeats
    assert q.calibration_inputs(ds, n=500).shape[0] == 50
    with pytest.raises(ModelError):
        q.calibration_inputs(ds, n=0)


def test_bad_inputs_are_model_errors(tmp_path, calib):
    with pytest.raises(ModelError, match="not found"):
        q.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx", calib)
    with pytest.raises(ModelError, match="calibration method"):
        q.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx", calib, method="magic")
    assert not (tmp_path / "out.onnx").exists()
