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


def onnx_macs(path: Path) -> int:
    """Multiply-accumulates of one inference of the ONNX model at ``path`` (Conv, Gemm and
    MatMul, from the weights' and outputs' shapes): a latency stand-in that does not move
    with the machine's load (the search tests' deterministic oracle, for a model file)."""
    import math

    import onnx
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.output)}
    weights = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:     # INT8 (QDQ): a Conv's weight is a DequantizeLinear's output
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    macs = 0
    for node in graph.node:
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if w is None:
            continue
        if node.op_type == "Conv":        # O × I/g × kh × kw per output pixel
            macs += math.prod(w) * math.prod(shapes[node.output[0]][2:])
        elif node.op_type in ("Gemm", "MatMul"):
            macs += math.prod(w)
    if macs == 0:
        raise ValueError(f"{path}: no Conv, Gemm or MatMul with constant weights")
    return macs


def mac_ms(path: Path) -> float:
    """The MAC clock: ``MACs / 1e5`` ms for the ONNX file at ``path``."""
    return onnx_macs(path) / 1e5


def mac_clocked(report: dict, folder: Path) -> dict:
    """An agent bench report (``edge-agent bench --profile`` of ``folder``) with every
    measured row's latency replaced by its file's MAC clock: the bench still ran every file
    for real (its machine, runtime and rows are kept); only the figures a search decides on
    stop moving with the machine's load."""
    for row in report["results"]:
        if "error" not in row:
            ms = mac_ms(Path(folder) / Path(row["file"]).name)
            row["latency_ms"] = {**row["latency_ms"], "p50": ms, "p95": ms, "p99": ms}
    return report
