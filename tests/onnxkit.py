"""Tiny ONNX classifiers built with onnx.helper (no torch), shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ["ok", "scratch", "crack"]
SIZE = 4


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    """Flatten → Gemm: (N,3,4,4) float32 → (N,3) logits; no torch needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3 * SIZE * SIZE, len(LABELS))).astype(np.float32)
    b = rng.normal(size=(len(LABELS),)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "w", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", len(LABELS)])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
