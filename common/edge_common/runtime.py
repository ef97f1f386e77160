"""Run an exported artifact with numpy in, numpy out: ONNX Runtime or TFLite.

Used by the host (parity checks, artifact accuracy, local bench) and by the board, so
both measure the same code. Runtimes are imported lazily; a missing one is a clear
message naming the extra to install. TFLite interpreters are tried in Frigate's order:
``ai_edge_litert``, then ``tflite_runtime``, then TensorFlow's ``tf.lite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_common.errors import MissingExtraError, ModelError, one_line

# each format's runtime, by the name the agent reports its version under
# (edge_agent.machine.runtime_versions)
RUNTIME_NAMES = {"onnx": "onnxruntime", "tflite": "litert"}


class Session(Protocol):
    """Maps a float32 batch (model layout) to float32 logits ``(N, classes)``."""

    format: str
    threads: int

    def run(self, x: np.ndarray) -> np.ndarray: ...


class OrtSession:
    """ONNX Runtime on the CPU (or the execution providers listed)."""

    format = "onnx"

    def __init__(
        self, path: str | Path, threads: int = 1, providers: list[str] | None = None
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise MissingExtraError("onnxruntime", "device") from err
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(
                str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"onnxruntime cannot load {path}: {one_line(err)}") from err
        self._input = self._sess.get_inputs()[0].name
        self.threads = threads

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self._sess.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)


def _tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter
    except ImportError as err:
        raise MissingExtraError("ai-edge-litert", "tflite", "or tflite-runtime") from err


class TFLiteSession:
    """A TFLite interpreter; quantized inputs/outputs are (de)quantized transparently."""

    format = "tflite"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        cls = _tflite_interpreter_class()
        try:
            self._it = cls(model_path=str(path), num_threads=threads)
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"TFLite cannot load {path}: {one_line(err)}") from err
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        self._batch: int | None = None
        self.threads = threads

    def _resize(self, n: int) -> None:
        if self._batch != n:
            shape = list(self._in["shape"])
            shape[0] = n
            self._it.resize_tensor_input(self._in["index"], shape, strict=False)
            self._it.allocate_tensors()
            self._in = self._it.get_input_details()[0]
            self._out = self._it.get_output_details()[0]
            self._batch = n

    def run(self, x: np.ndarray) -> np.ndarray:
        self._resize(int(x.shape[0]))
        dtype = self._in["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype, copy=False)
        self._it.set_tensor(self._in["index"], np.ascontiguousarray(x))
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)


def open_session(path: str | Path, fmt: str | None = None, threads: int = 1) -> Session:
    """Open ``path`` with the runtime its format needs (by ``fmt`` or the file suffix)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    fmt = fmt or p.suffix.lstrip(".")
    if fmt == "onnx":
        return OrtSession(p, threads)
    if fmt == "tflite":
        return TFLiteSession(p, threads)
    raise ModelError(f"unknown model format {fmt!r} for {p} (expected onnx or tflite)")
