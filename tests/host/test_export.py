"""Export to ONNX / TFLite and parity checks, on a tiny random MobileNetV2 (32×32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_common.errors import ModelError, ParityError
from edge_common.preprocess import InputSpec
from edgectl.pipeline import export as ex
from edgectl.pipeline.model import build_model

SIZE = 32


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_fp32(tiny_model, tmp_path_factory):
    return ex.export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "model.fp32.onnx", SIZE)


def test_onnx_export_is_one_file_with_dynamic_batch_and_passes_parity(
    onnx_fp32, tiny_model, inputs
):
    import onnx

    proto = onnx.load(str(onnx_fp32))
    assert proto.opset_import[0].version >= 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sorted(p.name for p in onnx_fp32.parent.iterdir()) == ["model.fp32.onnx"]
    assert {n.op_type for n in proto.graph.node}.isdisjoint({"Identity", "Constant"})
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]

    res = ex.check_parity(tiny_model, onnx_fp32, "onnx", inputs, labels=[0] * len(inputs))
    assert res["n"] == 8 and res["top1_agreement"] == 1.0
    assert res["max_abs_diff"] < 1e-4
    assert res["accuracy"] == res["reference_accuracy"]


def test_parity_fails_for_a_different_model(onnx_fp32, inputs):
    torch.manual_seed(1)
    other = build_model(6, width_mult=0.25).eval()
    with torch.no_grad():  # make the outputs differ clearly from the exported model's
        other.classifier[-1].bias.add_(torch.arange(6.0))
    with pytest.raises(ParityError, match="model.fp32.onnx"):
        ex.check_parity(other, onnx_fp32, "onnx", inputs)


def test_parity_fails_for_a_corrupted_file(onnx_fp32, tiny_model, inputs, tmp_path):
    bad = tmp_path / "model.fp32.onnx"
    data = bytearray(onnx_fp32.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ParityError, match="cannot run"):
        ex.check_parity(tiny_model, bad, "onnx", inputs)


def test_failed_export_leaves_no_file(tiny_model, tmp_path):
    with pytest.raises(ModelError):
        ex.export_onnx(tiny_model, tmp_path / "m.onnx", SIZE, opset=13)
    with pytest.raises(ModelError):
        ex.export_onnx(tiny_model, tmp_path / "m.onnx", 0)
    assert list(tmp_path.iterdir()) == []


def test_artifact_accuracy_from_raw_frames_and_tensors(onnx_fp32, tiny_model):
    spec = InputSpec(size=SIZE)
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(6)]
    x, _ = ex.stack_inputs([(f, 0) for f in frames], spec)
    want = ex.torch_logits(tiny_model, x).argmax(-1)
    # Labels equal to PyTorch's predictions on the preprocessed frames → accuracy 1.0.
    assert ex.artifact_accuracy(onnx_fp32, "onnx", zip(frames, want, strict=True), spec) == 1.0
    wrong = [(torch.from_numpy(x[i]), int(want[i] + 1) % 6) for i in range(len(x))]
    assert ex.artifact_accuracy(onnx_fp32, "onnx", wrong, spec) == 0.0


def test_parse_formats_and_names():
    assert ex.parse_formats("onnx, tflite,onnx") == ["onnx", "tflite"]
    assert ex.artifact_name("tflite", "int8") == "model.int8.tflite"
    with pytest.raises(ModelError, match="unknown export format"):
        ex.parse_formats("onnx,coreml")
