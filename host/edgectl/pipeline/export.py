"""Export a model to ONNX / TFLite and prove the file computes what PyTorch computes.

- ONNX: ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter, default
  since torch 2.9): one self-contained file (no external data), dynamic batch, a clean
  graph (BatchNorm folded, no Constant/Identity noise). The TorchScript exporter is the
  fallback when the dynamo one fails on a model.
- TFLite: ``litert_torch.convert`` (the successor of ai-edge-torch), NCHW float input like
  the PyTorch model, batch 1 (the runtime resizes it).

Every artifact is checked in its own runtime (``edge_common.runtime``, the same code the
board runs) against PyTorch: :func:`check_parity` raises :class:`ParityError` when it does
not match, so a broken file is never reported as a success.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_common.errors import EdgeError, ModelError, ParityError
from edge_common.fileio import atomic_path
from edge_common.preprocess import InputSpec, preprocess
from edge_common.runtime import open_session

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# Parity tolerances. FP32: logits within 1e-3 of the largest |logit| (float reordering
# only) and the same top-1 class. INT8 is lossy, and on a weakly trained model most
# top-1 margins are smaller than the quantization noise (measured: 69% agreement at
# +1.2 points of accuracy), so INT8 is judged on what a broken file cannot fake: the same
# top-1 class where PyTorch's margin is clear (top-1 minus top-2 above ``clear_margin`` of
# the median logit spread), logits that correlate with PyTorch's, no logit off by more
# than half the logits' spread.
TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_rel": 1e-3, "min_agreement": 0.99, "min_correlation": 0.999},
    "int8": {"max_abs_rel": 0.5, "min_agreement": 0.9, "min_correlation": 0.8,
             "clear_margin": 0.2},
}
MIN_CLEAR = 10  # fewer clear inputs than this: the clear-margin agreement is not judged


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the converters' chatter (onnxscript, litert-torch, JAX, ORT quantization log
    INFO/WARNING lines by the hundred) unless debug logging is on (``edgectl -v``)."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def artifact_name(fmt: str, precision: str = "fp32") -> str:
    """The file name a bundle uses: ``model.<precision>.<fmt>``."""
    check_format(fmt)
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (expected fp32 or int8)")
    return f"model.{precision}.{fmt}"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ModelError(f"unknown export format {fmt!r} (expected onnx or tflite)")
    return fmt


def parse_formats(text: str) -> list[str]:
    """``"onnx,tflite"`` → ``["onnx", "tflite"]``; unknown names are a ModelError."""
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not fmts:
        raise ModelError("no format given (expected onnx, tflite or onnx,tflite)")
    return [check_format(f) for f in dict.fromkeys(fmts)]


def _example(img_size: int, channels: int = 3) -> torch.Tensor:
    if int(img_size) <= 0 or int(channels) <= 0:
        raise ModelError(f"img_size and channels must be positive, got {img_size}, {channels}")
    return torch.zeros(1, int(channels), int(img_size), int(img_size))


def export_onnx(model: nn.Module, path: str | Path, img_size: int, opset: int = ONNX_OPSET,
                channels: int = 3) -> Path:
    """Write ``model`` as one self-contained ONNX file with a dynamic batch dimension
    (input ``1×channels×img_size×img_size``: an image, or one block's input in the latency
    table, ``pipeline.latency_table``).

    TorchScript exporter (``dynamo=False``), then onnxscript's optimizer (constant folding,
    no Identity/Constant nodes). Measured here: 1.5-3 s per MobileNetV2 against 6-45 s for
    ``dynamo=True`` (which also only emits opset >= 18), with an identical optimized graph and
    the same ORT latency. The dynamo exporter is the fallback when TorchScript fails.
    """
    import onnx

    if opset < 17:
        raise ModelError(f"ONNX opset must be >= 17, got {opset}")
    p = Path(path)
    model = model.cpu().eval()
    example = _example(img_size, channels)
    with atomic_path(p) as tmp, quiet():
        raw = tmp.with_suffix(".raw.onnx")  # torch.onnx wants the suffix
        try:
            try:
                torch.onnx.export(
                    model, (example,), str(raw), dynamo=False, opset_version=opset,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                )
            except Exception as err:  # noqa: BLE001 - the legacy exporter may be gone or fail
                log.warning("TorchScript ONNX exporter failed (%s); using the dynamo exporter",
                            type(err).__name__)
                torch.onnx.export(
                    model, (example,), str(raw), dynamo=True, opset_version=max(opset, 18),
                    dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                    verbose=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                )
            proto = _optimize_onnx(onnx.load(str(raw)))
        finally:
            if raw.exists():
                raw.unlink()
        onnx.save(proto, str(tmp))
    _readable(p)
    return p


def _optimize_onnx(proto: Any) -> Any:
    """Fold constants and drop Identity nodes (onnxscript); check the result is valid."""
    import onnx

    try:
        import onnxscript

        proto = onnxscript.optimizer.optimize(proto)
    except Exception as err:  # noqa: BLE001 - optimization is a nicety; ORT optimizes too
        log.warning("onnxscript optimizer skipped: %s", err)
    ext = onnx.TensorProto.EXTERNAL
    external = [t.name for t in proto.graph.initializer if t.data_location == ext]
    if external:
        raise ModelError(f"ONNX export produced {len(external)} external-data tensors")
    onnx.checker.check_model(proto)
    return proto


def _readable(p: Path) -> None:
    """Artifacts are shipped to boards: make them world-readable like a normal file (0644)."""
    umask = os.umask(0)
    os.umask(umask)
    p.chmod(0o666 & ~umask)


def export_tflite(model: nn.Module, path: str | Path, img_size: int, channels: int = 3) -> Path:
    """Write ``model`` as a float32 TFLite flatbuffer through litert-torch (NCHW input)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import litert_torch
    except ImportError as err:
        from edge_common.errors import MissingExtraError

        raise MissingExtraError("litert-torch", "tflite-export") from err
    p = Path(path)
    model = model.cpu().eval()
    with quiet():
        try:
            edge_model = litert_torch.convert(model, (_example(img_size, channels),))
        except Exception as err:  # noqa: BLE001 - conversion raises many types
            raise ModelError(f"TFLite conversion failed: {type(err).__name__}: {err}") from err
    with atomic_path(p) as tmp:
        edge_model.export(str(tmp))
    _readable(p)
    return p


def export(model: nn.Module, fmt: str, path: str | Path, img_size: int,
           channels: int = 3) -> Path:
    """Export ``model`` in ``fmt`` (``onnx`` or ``tflite``) to ``path``."""
    if check_format(fmt) == "onnx":
        return export_onnx(model, path, img_size, channels=channels)
    return export_tflite(model, path, img_size, channels=channels)


def precision_of(path: str | Path) -> str:
    """``int8`` when the file name says so (``model.int8.onnx``), else ``fp32``."""
    return "int8" if ".int8." in Path(path).name else "fp32"


def _as_numpy(inputs: Any) -> np.ndarray:
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim != 4:
        raise ModelError(f"expected a batch of shape (N, 3, s, s), got {x.shape}")
    return x


@torch.no_grad()
def torch_logits(model: nn.Module, inputs: Any, batch_size: int = 64) -> np.ndarray:
    """PyTorch reference logits for a float32 batch."""
    x = _as_numpy(inputs)
    model = model.cpu().eval()
    out = [model(torch.from_numpy(x[i:i + batch_size])).numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def run_artifact(path: str | Path, fmt: str | None, inputs: Any, threads: int = 1,
                 batch_size: int = 64) -> np.ndarray:
    """Logits of the artifact run in its own runtime (batched)."""
    x = _as_numpy(inputs)
    sess = open_session(path, fmt, threads=threads)
    out = [sess.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def compare(
    reference: np.ndarray, got: np.ndarray, labels: Sequence[int] | np.ndarray | None = None
) -> dict[str, Any]:
    """Max/mean abs diff, top-1 agreement (and accuracies when labels are given)."""
    if reference.shape != got.shape:
        raise ParityError(f"output shape {tuple(got.shape)} != reference {tuple(reference.shape)}")
    if not np.all(np.isfinite(got)):
        raise ParityError("artifact produced NaN or infinite outputs")
    diff = np.abs(reference - got)
    same = reference.argmax(-1) == got.argmax(-1)
    res: dict[str, Any] = {
        "n": int(len(reference)),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float(np.mean(same)) if same.size else 1.0,
        "logit_correlation": _correlation(reference, got),
    }
    if labels is not None:
        y = np.asarray(list(labels), dtype=np.int64)
        res["accuracy"] = float(np.mean(got.argmax(-1) == y))
        res["reference_accuracy"] = float(np.mean(reference.argmax(-1) == y))
    return res


def check_parity(
    model: nn.Module,
    artifact_path: str | Path,
    fmt: str,
    inputs: Any,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    precision: str | None = None,
    max_abs: float | None = None,
    min_agreement: float | None = None,
    min_correlation: float | None = None,
    threads: int = 1,
    name: str | None = None,
) -> dict[str, Any]:
    """Run the artifact in its runtime and PyTorch on ``inputs``; raise ParityError on mismatch.

    ``precision`` (default: from the file name) picks the tolerance in :data:`TOLERANCE`;
    ``max_abs`` / ``min_agreement`` / ``min_correlation`` override it; ``name`` is how errors
    call the file. Returns ``{n, max_abs_diff, mean_abs_diff, top1_agreement,
    logit_correlation, tolerance, precision, format[, clear_n, top1_agreement_clear]
    [, accuracy, reference_accuracy]}``.
    """
    check_format(fmt)
    precision = precision or precision_of(artifact_path)
    x = _as_numpy(inputs)
    name = name or Path(artifact_path).name
    ref = torch_logits(model, x)
    try:
        got = run_artifact(artifact_path, fmt, x, threads=threads)
    except EdgeError as err:
        raise ParityError(f"{name}: cannot run in its runtime: {err}") from err
    except Exception as err:  # noqa: BLE001 - a runtime failing on a broken file
        raise ParityError(f"{name}: runtime failed: {type(err).__name__}: {err}") from err
    res = compare(ref, got, labels)
    tol = TOLERANCE[precision]
    judged = None
    if "clear_margin" in tol and ref.size and ref.shape[-1] > 1:
        top2 = np.sort(ref, axis=-1)[:, -2:]
        spread = float(np.median(np.ptp(ref, axis=-1)))
        clear = (top2[:, 1] - top2[:, 0]) > tol["clear_margin"] * spread
        same = ref.argmax(-1) == got.argmax(-1)
        res["clear_n"] = int(clear.sum())
        res["top1_agreement_clear"] = float(same[clear].mean()) if clear.any() else 1.0
        judged = clear if clear.sum() >= MIN_CLEAR else None
    if not ref.size:
        scale = 1.0
    else:
        scale = float(np.abs(ref).max()) if precision == "fp32" else float(np.ptp(ref))
    limit = max_abs if max_abs is not None else tol["max_abs_rel"] * max(1.0, scale)
    agree = min_agreement if min_agreement is not None else tol["min_agreement"]
    corr = min_correlation if min_correlation is not None else tol["min_correlation"]
    res.update(format=fmt, precision=precision,
               tolerance={"max_abs": limit, "min_agreement": agree, "min_correlation": corr})
    if res["max_abs_diff"] > limit:
        raise ParityError(f"{name}: max abs diff {res['max_abs_diff']:.4g} vs PyTorch "
                          f"exceeds {limit:.4g}")
    if res["logit_correlation"] < corr:
        raise ParityError(f"{name}: logits correlate with PyTorch's at "
                          f"{res['logit_correlation']:.3f} (need {corr})")
    if "clear_margin" in tol:
        if judged is not None and res["top1_agreement_clear"] < agree:
            raise ParityError(
                f"{name}: top-1 agrees with PyTorch on {res['top1_agreement_clear']:.1%} of the "
                f"{res['clear_n']} inputs with a clear margin (need {agree:.0%})")
    elif res["top1_agreement"] < agree:
        raise ParityError(f"{name}: top-1 agrees with PyTorch on {res['top1_agreement']:.1%} "
                          f"of inputs (need {agree:.0%})")
    return res


def _correlation(reference: np.ndarray, got: np.ndarray) -> float:
    """Pearson correlation of the logits after removing each input's mean (1.0 if constant)."""
    a = reference - reference.mean(axis=-1, keepdims=True)
    b = got - got.mean(axis=-1, keepdims=True)
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float((a * b).sum() / (na * nb))


def _to_input(item: Any, spec: InputSpec) -> np.ndarray:
    """One dataset item's image → ``(1, 3, s, s)`` float32 (raw frames are preprocessed)."""
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3:
        return preprocess(item, spec)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    x = np.asarray(item, dtype=np.float32)
    return x[None] if x.ndim == 3 else x


def stack_inputs(items: Iterable[tuple[Any, int]], spec: InputSpec,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` items (uint8 frames or preprocessed tensors) → ``(x, y)`` arrays."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for i, (img, label) in enumerate(items):
        if limit is not None and i >= limit:
            break
        xs.append(_to_input(img, spec))
        ys.append(int(label))
    if not xs:
        raise ModelError("no images to evaluate the artifact on")
    return np.concatenate(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def artifact_accuracy(
    path: str | Path,
    fmt: str | None,
    frames_or_dataset: Iterable[tuple[Any, int]],
    spec: InputSpec,
    threads: int = 1,
) -> float:
    """Top-1 accuracy computed by the artifact itself, in its runtime, on ``(image, label)``.

    Raw uint8 frames (``data.raw_test_images``) go through ``edge_common.preprocess`` exactly
    as on the board; float tensors (a torch test dataset) are used as they are.
    """
    x, y = stack_inputs(frames_or_dataset, spec)
    logits = run_artifact(path, fmt, x, threads=threads)
    return float(np.mean(logits.argmax(-1) == y))


def test_arrays(cfg: Any, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, InputSpec]:
    """The test set as the board sees it: raw frames through ``edge_common.preprocess``."""
    from edgectl.pipeline.data import input_spec_for, raw_test_images

    spec = input_spec_for(cfg)
    x, y = stack_inputs(raw_test_images(cfg, limit), spec)
    return x, y, spec


def checked_artifact(
    model: nn.Module,
    fmt: str,
    path: str | Path,
    make: Callable[[Path], Any],
    x: np.ndarray,
    y: np.ndarray | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The one export → check → commit step: ``make(tmp)`` writes the artifact to a hidden
    name beside ``path``; it is checked against ``model`` in its own runtime on ``x``
    (accuracy on ``y``) and only then renamed to ``path``.

    A file that fails (or a ``make`` that raises) is deleted and the error raised: nothing
    unchecked is ever left where a good artifact is expected. Returns the parity dict plus
    ``path`` and ``bytes``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.checking{p.suffix}")
    try:
        make(tmp)
        res = check_parity(model, tmp, fmt, x, y, precision=precision_of(p), threads=threads,
                           name=p.name)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {**res, "path": str(p), "bytes": p.stat().st_size}


def export_checked(
    model: nn.Module,
    fmt: str,
    path: str | Path,
    img_size: int,
    x: np.ndarray,
    y: np.ndarray | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Export ``model`` to ``path`` through :func:`checked_artifact`."""
    return checked_artifact(model, fmt, path, lambda tmp: export(model, fmt, tmp, img_size),
                            x, y, threads)


def export_all(
    model: nn.Module,
    formats: Sequence[str],
    out_dir: str | Path,
    cfg: Any,
    threads: int = 1,
) -> dict[str, Any]:
    """``edgectl export``: FP32 artifacts in ``out_dir``, each checked on the whole test set."""
    x, y, spec = test_arrays(cfg)
    rows = []
    for fmt in formats:
        path = Path(out_dir) / artifact_name(fmt, "fp32")
        rows.append(export_checked(model, fmt, path, spec.size, x, y, threads))
    return {"artifacts": rows, "test_images": int(len(y)), "input": spec.to_dict()}
