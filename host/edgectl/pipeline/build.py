"""The whole pipeline behind ``edgectl build``: data → baseline → prune → fine-tune →
export → quantize → evaluate every artifact → accuracy gate → signed bundle.

Layout of ``--out``::

    baseline/model.pt    the unpruned baseline (trained, reused with --from, or cached)
    model/model.pt       pruned and fine-tuned PyTorch model
    artifacts/           model.{fp32,int8}.{onnx,tflite} as exported / quantized
    bundle/ bundle.tar   the deployable bundle (only when the accuracy gate passes)
    build.json           everything the summary table shows

Baselines are cached under ``cache_dir/baselines/<key>`` (``BuildConfig.cache_dir``; the
CLI's default is ``$EDGECTL_CACHE``, else ``~/.cache/edgectl``); the key hashes what
decides the baseline (:func:`baseline_key`): the data recipe, the training settings and
the source of the code that trains it, so a changed setting or a commit that changes
training retrains, and no other commit does.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_common.errors import ConfigError, ModelError
from edge_common.hashing import settings_key
from edgectl.pipeline.build_results import (
    ArtifactResult,
    BaselineResult,
    BuildResult,
    Gate,
    PruneResult,
    format_table,
)
from edgectl.pipeline.gates import (
    CHANCE_MARGIN,
    DEFAULT_INT8_MAX_DROP,
    BelowMinAccuracy,
    chance_floor,
    default_gate,
    gate_message,
    int8_drop_gate,
)

if TYPE_CHECKING:
    from edgectl.pipeline.data import Datasets

__all__ = ["ArtifactResult", "BaselineResult", "BelowMinAccuracy", "BuildConfig", "BuildResult",
           "Gate", "PruneResult", "format_table", "run_build"]

PRUNE_METHODS = ("none", "unstructured", "structured")
USER_CACHE = Path.home() / ".cache" / "edgectl"   # BuildConfig.cache_dir's default
PARITY_IMAGES = 64
VECTOR_CANDIDATES = 64

Echo = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class BuildConfig:
    """Every setting of one build (``edgectl build`` options)."""

    data: Any  # edgectl.pipeline.data.DataConfig
    out: Path
    prune: str = "unstructured"
    sparsity: float = 0.5
    regime: str = "oneshot"
    step: float = 0.1
    round_to: int = 8  # structured: channel counts multiples of this (0 = off)
    quantize: str = "int8"
    formats: tuple[str, ...] = ("onnx", "tflite")
    epochs: int | None = None  # None: training.DEFAULT_EPOCHS
    finetune_epochs: int = 5
    batch_size: int = 64
    lr: float | None = None
    calib_size: int = 300
    min_accuracy: float | None = None  # None: baseline − DEFAULT_MAX_DROP
    max_accuracy_drop: float = DEFAULT_INT8_MAX_DROP  # points: INT8 vs its FP32 twin
    allow_below_min: bool = False
    from_model: Path | None = None
    key: Path | None = None
    name: str | None = None
    width_mult: float = 1.0
    weights: str = "none"
    threads: int = 1
    device: str = "auto"  # where training and fine-tuning run (compute.resolve)
    latency_runs: int = 30
    cache: bool = True
    # baselines and latency tables (``cli/options.default_cache_dir``: $EDGECTL_CACHE)
    cache_dir: Path = field(default_factory=lambda: USER_CACHE)
    progress: bool = True

    def validate(self) -> None:
        from edgectl.pipeline.pruning import check_request

        if self.prune not in PRUNE_METHODS:
            raise ConfigError(
                f"--prune must be one of {', '.join(PRUNE_METHODS)}, got {self.prune!r}"
            )
        if self.prune != "none":
            check_request(self.prune, self.regime, self.sparsity, self.step)
        if self.round_to < 0:
            raise ConfigError(f"--round-to must be >= 0, got {self.round_to}")
        if self.quantize not in ("int8", "none"):
            raise ConfigError(f"--quantize must be int8 or none, got {self.quantize!r}")
        if not self.formats:
            raise ConfigError("--formats: give at least one of onnx, tflite")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"--min-accuracy must be in [0, 1], got {self.min_accuracy}")
        if not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise ConfigError(f"--max-accuracy-drop must be in [0, 100] points, got "
                              f"{self.max_accuracy_drop}")
        if self.finetune_epochs < 0 or (self.epochs is not None and self.epochs < 0):
            raise ConfigError("--epochs and --finetune-epochs must be >= 0")
        if self.calib_size <= 0:
            raise ConfigError(f"--calib-size must be positive, got {self.calib_size}")
        if self.key is not None:
            from edge_common.bundle import load_private_key

            load_private_key(self.key)  # fail now, not after ten minutes of training
        bundle = self.out / "bundle"
        if bundle.exists() and any(bundle.iterdir()) and not (bundle / "manifest.json").is_file():
            raise ConfigError(f"{bundle} exists and is not a bundle; choose another --out")

    def train_settings(self) -> dict[str, Any]:
        from edgectl.pipeline.training import DEFAULT_EPOCHS, DEFAULT_LR

        return {
            "epochs": DEFAULT_EPOCHS if self.epochs is None else self.epochs,
            "batch_size": self.batch_size, "lr": self.lr or DEFAULT_LR,
            "seed": self.data.seed, "width_mult": self.width_mult, "weights": self.weights,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = self.data.to_dict()
        del d["cache_dir"]      # where this machine caches, not what was built
        for k in ("out", "from_model", "key"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["formats"] = list(self.formats)
        return d


# --------------------------------------------------------------------------- baseline


# The modules whose source decides a baseline's weights, given its settings: the data
# recipe (sources, synthetic renderer, preprocessing, augmentation), the model, and the
# training loop with its device plan. Hashed into baseline_key.
BASELINE_SOURCES = ("edgectl.pipeline.baseline", "edgectl.pipeline.training",
                    "edgectl.pipeline.compute", "edgectl.pipeline.model",
                    "edgectl.pipeline.data", "edge_common.synthetic", "edge_common.preprocess")


def training_source_digest(modules: tuple[str, ...] = BASELINE_SOURCES) -> str:
    """The sha256 of the source files of ``modules``, in order."""
    import importlib.util

    from edge_common.hashing import sha256_chunks

    files = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModelError(f"baseline key: no source for {name}")
        files.append(Path(spec.origin))
    return sha256_chunks(name.encode() + b"\0" + f.read_bytes()
                         for name, f in zip(modules, files, strict=True))


def baseline_key(cfg: BuildConfig) -> str:
    """Hash of what decides the baseline: the data recipe (``DataConfig`` without
    ``download``), the training settings (``train_settings``), the source of the code that
    trains it (:data:`BASELINE_SOURCES`) and the torch/torchvision versions.

    Not the git commit nor the package version: a commit that does not touch training keeps
    a baseline that takes minutes to train; one that does retrains it.
    """
    from importlib.metadata import version

    data = {k: v for k, v in cfg.data.to_dict().items() if k != "download"}
    return settings_key({"data": data, "train": cfg.train_settings(),
                         "code": training_source_digest(),
                         "torch": [version("torch"), version("torchvision")]})


def _baseline(cfg: BuildConfig, datasets: Any, echo: Echo) -> tuple[Any, dict[str, Any], str]:
    """``(model, meta, source)``: from --from, the cache, or trained now (and cached)."""
    from edgectl.pipeline.checkpoint import load_checkpoint

    if cfg.from_model is not None:
        model, meta = load_checkpoint(cfg.from_model)
        if list(meta.get("labels") or []) != list(datasets.labels):
            raise ModelError(
                f"--from {cfg.from_model}: labels {meta.get('labels')} do not match the data's "
                f"{list(datasets.labels)}"
            )
        size = (meta.get("input") or {}).get("size")
        if size is not None and int(size) != datasets.input_spec.size:
            raise ModelError(f"--from {cfg.from_model}: trained at {size}px, --img-size is "
                             f"{datasets.input_spec.size}")
        return model, meta, f"--from {cfg.from_model}"
    cached = cfg.cache_dir / "baselines" / baseline_key(cfg) / "model.pt"
    if cfg.cache and cached.is_file():
        try:
            model, meta = load_checkpoint(cached)
            return model, meta, f"cache {cached.parent}"
        except ModelError as err:
            echo(f"  cached baseline unusable ({err}); retraining")
    from edgectl.pipeline.baseline import train_baseline

    ts = cfg.train_settings()
    echo(f"  training MobileNetV2 (width {cfg.width_mult}) for {ts['epochs']} epochs")
    target = cached if cfg.cache else cfg.out / "baseline" / "model.pt"
    res = train_baseline(cfg.data, target, epochs=ts["epochs"], batch_size=ts["batch_size"],
                         lr=ts["lr"], weights=cfg.weights, width_mult=cfg.width_mult,
                         progress=cfg.progress, device=cfg.device, datasets=datasets)
    model, meta = load_checkpoint(res["checkpoint"])
    return model, meta, "trained" + (f", cached in {cached.parent}" if cfg.cache else "")


# --------------------------------------------------------------------------- stages


def baseline_stage(cfg: BuildConfig, datasets: Any, echo: Echo) -> BaselineResult:
    """The baseline (``--from``, cache or trained), saved to ``OUT/baseline`` and evaluated."""
    from edgectl.pipeline.checkpoint import save_checkpoint
    from edgectl.pipeline.evaluation import evaluate

    model, meta, source = _baseline(cfg, datasets, echo)
    echo(f"  baseline from {source}")
    ckpt = save_checkpoint(model, meta, cfg.out / "baseline" / "model.pt")
    metrics = evaluate(model, datasets, threads=cfg.threads, checkpoint_path=ckpt,
                       latency=True, latency_runs=cfg.latency_runs)
    echo(f"  baseline accuracy {metrics['accuracy']:.2%}")
    return BaselineResult(model, meta, source, ckpt, metrics)


def gate_for(cfg: BuildConfig, datasets: Any, baseline: BaselineResult, echo: Echo) -> Gate:
    """``--min-accuracy`` (or the default gate) and ``--max-accuracy-drop``; warns when an
    explicit gate is so low that always answering one class passes it."""
    from edgectl.pipeline.data import class_counts

    counts = class_counts(datasets.test, datasets.labels)
    floor, majority = chance_floor(counts)
    explicit = cfg.min_accuracy
    min_acc = explicit if explicit is not None else default_gate(
        baseline.metrics["accuracy"], counts)
    if explicit is not None and explicit < floor:
        echo(f"  warning: --min-accuracy {explicit:.2%} is below chance level "
             f"({majority!r} is {floor - CHANCE_MARGIN:.2%} of the test set): a model that "
             "always answers one class passes it")
    return Gate(min_acc, (floor, majority), cfg.max_accuracy_drop)


def prune_stage(cfg: BuildConfig, datasets: Any, base: BaselineResult, echo: Echo) -> PruneResult:
    """Prune a copy of the baseline and fine-tune (or only fine-tune for ``--prune none``);
    save it to ``OUT/model``, evaluate it, and time it against the baseline in one run
    (``prune_eval.prune_and_evaluate``)."""
    from edgectl.pipeline.prune_eval import PruneSpec, prune_and_evaluate
    from edgectl.pipeline.training import fine_tune_hook

    tune = fine_tune_hook(datasets, cfg.finetune_epochs, batch_size=cfg.batch_size,
                          seed=cfg.data.seed, progress=cfg.progress, device=cfg.device)
    spec = PruneSpec(cfg.prune, cfg.regime, cfg.sparsity, cfg.step, cfg.round_to or None)
    res = prune_and_evaluate(base.model, base.meta, datasets, spec,
                             fine_tune=tune, out=cfg.out / "model" / "model.pt",
                             threads=cfg.threads, latency_runs=cfg.latency_runs,
                             progress=cfg.progress)
    if res.report is not None:
        echo(f"  {cfg.prune} sparsity {res.report['actual']:.4f} (target {cfg.sparsity:.2f})")
    echo(f"  model accuracy {res.metrics['accuracy']:.2%} "
         f"(baseline {base.metrics['accuracy']:.2%})")
    return res


def export_stage(cfg: BuildConfig, model: Any, img_size: int, x: Any, y: Any,
                 echo: Echo) -> list[ArtifactResult]:
    """FP32 artifacts in ``OUT/artifacts``, each committed only after its parity check."""
    from edgectl.pipeline import export as ex

    arts = []
    for fmt in cfg.formats:
        path = cfg.out / "artifacts" / ex.artifact_name(fmt, "fp32")
        parity = ex.export_checked(model, fmt, path, img_size, x, y, cfg.threads)
        echo(f"  {path.name}: parity max abs diff {parity['max_abs_diff']:.2e}")
        arts.append(ArtifactResult(fmt, "fp32", path, parity))
    return arts


def quantize_stage(cfg: BuildConfig, model: Any, datasets: Any, x: Any, y: Any,
                   echo: Echo) -> list[ArtifactResult]:
    """INT8 twins of the FP32 artifacts, calibrated on ``calibration_inputs``, each
    committed only after its parity check."""
    from edgectl.pipeline import export as ex
    from edgectl.pipeline.calibration import calibration_inputs
    from edgectl.pipeline.quantization import quantize

    calib = calibration_inputs(datasets, cfg.calib_size, cfg.data.seed)
    arts = []
    for fmt in cfg.formats:
        fp32 = cfg.out / "artifacts" / ex.artifact_name(fmt, "fp32")
        path = fp32.with_name(ex.artifact_name(fmt, "int8"))
        parity = ex.checked_artifact(
            model, fmt, path, functools.partial(quantize, fmt, fp32, calib_inputs=calib),
            x, y, cfg.threads)
        echo(f"  {path.name}: parity max abs diff {parity['max_abs_diff']:.3f}, "
             f"top-1 agreement {parity['top1_agreement']:.1%}")
        arts.append(ArtifactResult(fmt, "int8", path, parity))
    return arts


def measure_stage(cfg: BuildConfig, arts: list[ArtifactResult], x: Any, y: Any,
                  echo: Echo) -> None:
    """Accuracy on the whole test set, batch-1 latency and size of every artifact, each
    in its own runtime; INT8 rows get their accuracy against the FP32 twin."""
    import numpy as np

    from edge_common.timing import artifact_latency
    from edgectl.pipeline.export import run_artifact
    from edgectl.pipeline.metrics import compressed_size

    for a in arts:
        logits = run_artifact(a.path, a.format, x, threads=cfg.threads)
        a.accuracy = float(np.mean(logits.argmax(-1) == y))
        a.latency = artifact_latency(a.path, a.format, x[:1], cfg.threads, cfg.latency_runs)
        a.bytes, a.gzip_bytes = a.path.stat().st_size, compressed_size(a.path)
        echo(f"  {a.name}: accuracy {a.accuracy:.2%}, p50 {a.latency['p50']:.2f} ms")
    fp32 = {a.format: a.accuracy for a in arts if a.precision == "fp32"}
    for a in arts:
        if a.precision == "int8" and a.format in fp32:
            a.accuracy_vs_fp32 = a.accuracy - fp32[a.format]


def accuracy_gate(cfg: BuildConfig, gate: Gate, what: str, accuracy: float) -> bool:
    """True when ``accuracy`` passes ``--min-accuracy``; below it, raise
    :class:`BelowMinAccuracy` unless ``--allow-below-min``."""
    if accuracy >= gate.min_accuracy:
        return True
    if not cfg.allow_below_min:
        raise BelowMinAccuracy(gate_message(what, accuracy, gate.min_accuracy,
                                            cfg.min_accuracy is not None, cfg.out / "bundle",
                                            gate.chance))
    return False


def speed_notes(pruned: PruneResult) -> list[str]:
    """What the measured pruned/dense latency means: for unstructured sparsity that brings
    no speed (ratio >= ``speed.NO_SPEED_RATIO``) it names ``--prune structured``."""
    if pruned.speed is None:
        return []
    return [f"speed: {pruned.speed['note']}"]


def bundle_stage(cfg: BuildConfig, datasets: Any, base: BaselineResult, pruned: PruneResult,
                 arts: list[ArtifactResult], gate: Gate, deployable: bool,
                 x_test: Any, echo: Echo,
                 deadline: dict[str, Any] | None = None) -> tuple[Path, Path, str, str]:
    """The signed bundle (manifest, artifacts, test vectors) and its tar:
    ``(bundle_dir, tar, name, version)``."""
    from edge_common.bundle import pack_tar
    from edgectl.pipeline.bundle_writer import write_bundle
    from edgectl.pipeline.checkpoint import code_version

    version = _version(cfg, deadline)
    name = cfg.name or f"inspection-{base.meta.get('arch', 'mobilenet_v2')}"
    int8_ok = any(a.precision == "int8" and a.deployable for a in arts)
    bundle_dir = write_bundle(
        cfg.out / "bundle", name=name, version=version, labels=list(datasets.labels),
        reject_labels=list(datasets.reject_labels), input_spec=datasets.input_spec,
        artifacts=[{"path": a.path, "format": a.format, "precision": a.precision,
                    "metrics": a.gate_metrics(gate)} for a in arts],
        metrics={**_slim(pruned.metrics), "sparsity_pruning": pruned.sparsity},
        baseline=_slim(base.metrics),
        provenance={"config": cfg.to_dict(), "dataset": {"description": datasets.description,
                                                         **cfg.data.to_dict()},
                    "code_version": code_version(), "baseline_source": base.source,
                    "pruning": pruned.report},
        min_accuracy=gate.min_accuracy, test_inputs=x_test[:VECTOR_CANDIDATES],
        private_key_pem=cfg.key, deployable=deployable,
        default_precision="int8" if int8_ok else "fp32", deadline=deadline,
    )
    tar = pack_tar(bundle_dir, cfg.out / "bundle.tar")
    signed = " and signed" if cfg.key else " (unsigned: pass --key to sign)"
    echo(f"  {bundle_dir} and {tar.name} written{signed}")
    return bundle_dir, tar, name, version


# --------------------------------------------------------------------------- pipeline


class _Stages:
    """Numbered stage lines with the elapsed time: ``[3/7] prune ...  (12s)``."""

    def __init__(self, echo: Echo, total: int) -> None:
        self.echo, self.total, self.n, self.t0 = echo, total, 0, time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.n += 1
        self.echo(f"[{self.n}/{self.total}] {msg}  ({self.elapsed():.0f}s)")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _prune_title(cfg: BuildConfig) -> str:
    if cfg.prune == "none":
        return "prune: skipped (--prune none)"
    per_step = "" if cfg.regime == "oneshot" else " per step"
    return (f"prune: {cfg.prune} {cfg.regime} to {cfg.sparsity:.2f}, fine-tune "
            f"{cfg.finetune_epochs} epoch(s){per_step}")


PruneStage = Callable[[BuildConfig, Any, BaselineResult, Echo], PruneResult]


def run_build(cfg: BuildConfig, echo: Echo = _stderr, prune: PruneStage | None = None,
              prune_title: str | None = None,
              deadline: Callable[[PruneResult], dict[str, Any]] | None = None,
              datasets: Datasets | None = None) -> BuildResult:
    """Run the whole pipeline, stage by stage; write ``OUT/build.json`` (its ``to_dict()``).

    Raises :class:`BelowMinAccuracy` (after writing artifacts but no bundle) when the
    model or any artifact misses the gate and ``allow_below_min`` is not set. An INT8
    artifact that drops more than ``max_accuracy_drop`` points against its FP32 twin is
    kept in the bundle marked not deployable (the board then serves FP32).

    ``prune``: the stage that makes the model from the baseline (default
    :func:`prune_stage`; the latency-budget search passes its own, ``pipeline.deadline``),
    titled ``prune_title``; ``deadline(pruned)``: the manifest's ``deadline`` section.
    ``datasets``: ``load_datasets(cfg.data)`` when the caller has already loaded it (the
    data is loaded once per build: training, evaluation and the test vectors share it).
    """
    from edge_common.bundle import load_bundle, replay_test_vectors
    from edge_common.fileio import write_json_atomic
    from edgectl.pipeline.data import load_datasets, raw_test_images
    from edgectl.pipeline.export import stack_inputs

    cfg.validate()
    stage = _Stages(echo, 7)
    cfg.out.mkdir(parents=True, exist_ok=True)

    stage("data")
    datasets = datasets if datasets is not None else load_datasets(cfg.data)
    echo(f"  {datasets.description}")

    stage("baseline")
    base = baseline_stage(cfg, datasets, echo)
    gate = gate_for(cfg, datasets, base, echo)

    stage(prune_title or _prune_title(cfg))
    pruned = (prune or prune_stage)(cfg, datasets, base, echo)
    model_ok = accuracy_gate(cfg, gate, "the pruned model", pruned.metrics["accuracy"])

    stage(f"export: {', '.join(cfg.formats)} (FP32) with parity checks")
    x_test, y_test = stack_inputs(list(raw_test_images(datasets)), datasets.input_spec)
    x_par, y_par = x_test[:PARITY_IMAGES], y_test[:PARITY_IMAGES]
    arts = export_stage(cfg, pruned.model, datasets.input_spec.size, x_par, y_par, echo)

    if cfg.quantize == "int8":
        stage(f"quantize: INT8 static, {cfg.calib_size} calibration images")
        arts += quantize_stage(cfg, pruned.model, datasets, x_par, y_par, echo)
    else:
        stage("quantize: skipped (--quantize none)")

    stage(f"evaluate {len(arts)} artifact(s) in their runtimes on {len(y_test)} images")
    measure_stage(cfg, arts, x_test, y_test, echo)
    notes = int8_drop_gate(arts, gate.max_drop)
    for line in notes:
        echo(f"  {line}")
    # INT8 files the drop gate already set aside are not served, so they do not fail the build
    worst = min((a for a in arts if a.deployable), key=lambda a: a.accuracy)
    deployable = accuracy_gate(cfg, gate, worst.name, worst.accuracy) and model_ok
    notes += speed_notes(pruned)

    stage("bundle" + ("" if deployable else " (NOT deployable: below --min-accuracy)"))
    bundle_dir, tar, name, version = bundle_stage(
        cfg, datasets, base, pruned, arts, gate, deployable, x_test, echo,
        deadline=deadline(pruned) if deadline is not None else None)
    b = load_bundle(bundle_dir)
    result = BuildResult(
        config=cfg, name=name, version=version, bundle=bundle_dir, bundle_tar=tar,
        deployable=deployable, gate=gate, baseline=base, model=pruned, artifacts=arts,
        sha256={x.path: x.sha256 for x in b.artifacts},
        test_vectors={r["path"]: r.get("status")
                      for r in replay_test_vectors(b, threads=cfg.threads)},
        notes=notes, seconds=stage.elapsed())
    summary = result.to_dict()
    write_json_atomic(cfg.out / "build.json", json.loads(json.dumps(summary, default=str)))
    return result


def _version(cfg: BuildConfig, deadline: dict[str, Any] | None = None) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y.%m.%d-%H%M%S")
    if deadline is not None:
        return f"{stamp}-deadline-{deadline['budget_ms']:g}ms"
    if cfg.prune == "none":
        return f"{stamp}-dense"
    return f"{stamp}-{cfg.prune}-{cfg.sparsity:.2f}"


def _slim(ev: dict[str, Any]) -> dict[str, Any]:
    """An evaluation without the bulky per-class/confusion tables (they stay in build.json)."""
    return {k: v for k, v in ev.items() if k not in ("confusion", "labels")}
