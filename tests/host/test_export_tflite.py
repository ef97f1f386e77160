"""TFLite path: litert-torch export, LiteRT parity, ai-edge-quantizer INT8.

One conversion (seconds alone, up to a minute on a loaded 2-core box) shared by all tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_common.errors import ParityError
from edge_common.runtime import open_session
from edgectl.pipeline import export as ex
from edgectl.pipeline import quantization as q
from edgectl.pipeline.model import build_model

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

SIZE = 32


@pytest.fixture(scope="module")
def tflite_fp32(tiny_model, tmp_path_factory):
    return ex.export_tflite(tiny_model, tmp_path_factory.mktemp("tfl") / "model.fp32.tflite", SIZE)


def test_tflite_export_passes_parity_in_litert(tiny_model, tflite_fp32):
    x = np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    res = ex.check_parity(tiny_model, tflite_fp32, "tflite", x)
    assert res["top1_agreement"] == 1.0 and res["max_abs_diff"] < 1e-4
    assert [p.name for p in tflite_fp32.parent.iterdir()] == ["model.fp32.tflite"]
    torch.manual_seed(5)
    other = build_model(6, width_mult=0.25).eval()
    with torch.no_grad():
        other.classifier[-1].bias.add_(torch.arange(6.0))
    with pytest.raises(ParityError):
        ex.check_parity(other, tflite_fp32, "tflite", x)


def test_tflite_int8_is_full_integer_and_runs(tflite_fp32, tmp_path):
    calib = np.random.default_rng(1).standard_normal((16, 3, SIZE, SIZE)).astype(np.float32)
    int8 = q.quantize_tflite(tflite_fp32, tmp_path / "model.int8.tflite", calib)
    y = open_session(int8).run(calib[:4])
    assert y.shape == (4, 6) and np.all(np.isfinite(y))
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(int8)).get_tensor_details()
    int8_weights = [d for d in details if d["dtype"] == np.int8 and len(d["shape"]) == 4]
    assert len(int8_weights) >= 52  # every conv's weights (and activations) are int8
    assert int8.stat().st_size < tflite_fp32.stat().st_size / 2
