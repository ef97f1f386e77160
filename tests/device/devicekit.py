"""Device test helpers: a tiny verified bundle (built with onnx.helper, no torch), configs.

The tiny model reads colour: GlobalAveragePool over the normalised 32×32 input, then a
Gemm to 6 logits. A mostly-green frame is "ok", a mostly-red frame is "scratch" (a
reject label), so tests choose the verdict by painting the frame.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edge_common.bundle import sha256_file, write_manifest
from edge_common.preprocess import InputSpec, preprocess

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["ok", "scratch", "crack", "spot", "chip", "missing_hole"]
SPEC = InputSpec(size=32)


def frame(colour: str, h: int = 48, w: int = 64) -> np.ndarray:
    """A uint8 RGB frame the tiny model classifies as ok (green) or scratch (red)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., {"red": 0, "green": 1, "blue": 2}[colour]] = 230
    return img


def _model_bytes(nan_band: bool = False) -> bytes:
    """The tiny colour model. ``nan_band``: its logits turn NaN when the frame's mean red
    (normalised) lies within ±1.5, as on the synthetic camera's parts, and stay finite on
    the saturated test-vector frames: a model that passes its test vectors and still
    emits NaN on the line (``sqrt((r - 1.5)(r + 1.5)) * 0`` added to every logit)."""
    import onnx
    from onnx import TensorProto, helper

    # Rows: logits from the per-channel means (R, G, B) after normalisation.
    w = np.zeros((6, 3), np.float32)
    w[0] = [0.0, 3.0, 0.0]  # ok ← green
    w[1] = [3.0, 0.0, 0.0]  # scratch ← red
    w[2:] = [[0.0, 0.0, 0.5]] * 4
    b = np.array([0.0, 0.0, -4.0, -4.0, -4.0, -4.0], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits" if not nan_band else "raw"],
                         transB=1),
    ]
    inits = [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "B")]
    if nan_band:
        sel = np.zeros((3, 1), np.float32)
        sel[0, 0] = 1.0  # the red channel's mean
        inits += [onnx.numpy_helper.from_array(sel, "SEL"),
                  onnx.numpy_helper.from_array(np.array([2.25], np.float32), "BAND"),
                  onnx.numpy_helper.from_array(np.array([0.0], np.float32), "ZERO")]
        nodes += [
            helper.make_node("MatMul", ["flat", "SEL"], ["red"]),
            helper.make_node("Mul", ["red", "red"], ["red2"]),
            helper.make_node("Sub", ["red2", "BAND"], ["gap"]),   # r² − 1.5²
            helper.make_node("Sqrt", ["gap"], ["root"]),          # NaN inside the band
            helper.make_node("Mul", ["root", "ZERO"], ["poison"]),
            helper.make_node("Add", ["raw", "poison"], ["logits"]),
        ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_bundle(root: Path, version: str = "test-1", deployable: bool = True,
                nan_band: bool = False) -> Path:
    """Write a complete, verifiable bundle into ``root`` (fp32 ONNX + test vectors);
    ``nan_band``: the model emits NaN on mid-red frames (see ``_model_bytes``)."""
    import onnxruntime as ort

    root.mkdir(parents=True, exist_ok=True)
    model_path = root / "model.fp32.onnx"
    model_path.write_bytes(_model_bytes(nan_band))
    frames = [frame("green"), frame("red"), frame("blue"), frame("red", 32, 32)]
    x = np.concatenate([preprocess(f, SPEC) for f in frames])
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"input": x})[0]
    y = np.array([0, 1, 2, 1], np.int64)
    np.savez(root / "test_vectors.npz", x=x, y=y, **{"expected/model.fp32.onnx": expected})
    manifest = {
        "schema_version": 1,
        "name": "tiny-colour",
        "version": version,
        "created": "2026-11-26T00:00:00Z",
        "labels": LABELS,
        "reject_labels": LABELS[1:],
        "input": SPEC.to_dict(),
        "artifacts": [
            {
                "path": "model.fp32.onnx",
                "format": "onnx",
                "precision": "fp32",
                "sha256": sha256_file(model_path),
                "bytes": model_path.stat().st_size,
                "metrics": {},
                "tolerance": {"max_abs": 1e-3, "top1": True},
            }
        ],
        "metrics": {"accuracy": 1.0},
        "provenance": {"code_version": "test"},
        "min_accuracy": 0.5,
        "deployable": deployable,
        "default_precision": "fp32",
        "test_vectors": {
            "path": "test_vectors.npz",
            "count": len(x),
            "sha256": sha256_file(root / "test_vectors.npz"),
            "bytes": (root / "test_vectors.npz").stat().st_size,
        },
    }
    write_manifest(root, manifest)
    return root


def write_config(path: Path, bundle: Path, **sections) -> Path:
    """A sim config (synthetic camera, interval trigger, mock pins) with overrides."""
    import yaml

    cfg = {
        "device_id": "test-device",
        "bundle": {"path": str(bundle)},
        "camera": {"type": "synthetic", "size": 32, "give_up_s": 2, "retry_backoff_s": 0.05},
        "trigger": {"type": "interval", "rate_hz": 0, "pin_factory": "mock"},
        "actuator": {
            "type": "gpio",
            "pin": 17,
            "delay_ms": 200,
            "pulse_ms": 30,
            "pin_factory": "mock",
        },
        "journal": {
            "dir": str(path.parent / "journal"),
            "synchronous": "normal",
            "status_every_s": 0.2,
        },
        "samples": {"rate": 0.0},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def agent_cmd() -> list[str]:
    return [sys.executable, "-m", "edge_agent.cli"]


def read_json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
