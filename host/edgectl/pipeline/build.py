"""The whole pipeline behind ``edgectl build``: data → baseline → prune → fine-tune →
export → quantize → evaluate every artifact → accuracy gate → signed bundle.

Layout of ``--out``::

    baseline/model.pt    the unpruned baseline (trained, reused with --from, or cached)
    model/model.pt       pruned and fine-tuned PyTorch model
    artifacts/           model.{fp32,int8}.{onnx,tflite} as exported / quantized
    bundle/ bundle.tar   the deployable bundle (only when the accuracy gate passes)
    build.json           everything the summary table shows

Baselines are cached under ``$EDGECTL_CACHE/baselines/<key>`` (default
``~/.cache/edgectl``); the key hashes the data config, the training settings and the
code version, so a changed setting or commit retrains.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_common.errors import ConfigError, EdgeError, ModelError

PRUNE_METHODS = ("none", "unstructured", "structured")
DEFAULT_MAX_DROP = 0.02  # default gate: baseline accuracy minus 2 points...
CHANCE_MARGIN = 0.05  # ...and never less than always-the-majority-class plus 5 points
PARITY_IMAGES = 64
VECTOR_CANDIDATES = 64

Echo = Callable[[str], None]


class BelowMinAccuracy(EdgeError, ValueError):
    """The built model misses its accuracy gate; no deployable bundle is written."""


def chance_floor(counts: dict[str, int], margin: float = CHANCE_MARGIN) -> tuple[float, str]:
    """``(majority share + margin, majority label)`` from the test set's class counts:
    a model must beat answering the most common class every time by a clear margin."""
    total = sum(counts.values())
    if total <= 0:
        return margin, "-"
    label = max(counts, key=lambda k: counts[k])
    return min(1.0, counts[label] / total + margin), label


def default_gate(baseline_accuracy: float, counts: dict[str, int]) -> float:
    """The accuracy gate when ``--min-accuracy`` is not given: the larger of the baseline
    minus ``DEFAULT_MAX_DROP`` and :func:`chance_floor`, so a model that scores at chance
    (or whose baseline does) is never deployable by default."""
    return round(max(baseline_accuracy - DEFAULT_MAX_DROP, chance_floor(counts)[0]), 4)


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
    allow_below_min: bool = False
    from_model: Path | None = None
    key: Path | None = None
    name: str | None = None
    width_mult: float = 1.0
    weights: str = "none"
    threads: int = 1
    latency_runs: int = 30
    cache: bool = True
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

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
        for k in ("out", "from_model", "key"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["formats"] = list(self.formats)
        return d


# --------------------------------------------------------------------------- baseline


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECTL_CACHE") or Path.home() / ".cache" / "edgectl")


def baseline_key(cfg: BuildConfig) -> str:
    """Hash of what determines the baseline: data config, training settings, package version.

    The package version, not the git commit: a commit that does not touch training must not
    throw away a baseline that takes minutes to train (bump the version when training changes).
    """
    from importlib.metadata import version

    data = {k: v for k, v in cfg.data.to_dict().items() if k != "download"}
    blob = json.dumps({"data": data, "train": cfg.train_settings(), "code": version("edgectl")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    cached = cache_dir() / "baselines" / baseline_key(cfg) / "model.pt"
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
                         progress=cfg.progress)
    model, meta = load_checkpoint(res["checkpoint"])
    return model, meta, "trained" + (f", cached in {cached.parent}" if cfg.cache else "")


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pruning_sparsity(model: Any, report: dict[str, Any] | None, method: str) -> float:
    if report is None:
        return 0.0
    from edgectl.pipeline.pruning import current_sparsity

    return float(current_sparsity(model, method, int(report["original_params"])))


# --------------------------------------------------------------------------- pipeline


def run_build(cfg: BuildConfig, echo: Echo = _stderr) -> dict[str, Any]:
    """Run the whole pipeline; return the summary (also written to ``OUT/build.json``).

    Raises :class:`BelowMinAccuracy` (after writing artifacts but no bundle) when the
    model or any artifact misses the gate and ``allow_below_min`` is not set.
    """
    import numpy as np

    from edge_common.bundle import pack_tar
    from edge_common.fileio import write_json_atomic
    from edge_common.timing import artifact_latency
    from edgectl.pipeline import export as ex
    from edgectl.pipeline.bundle_writer import write_bundle
    from edgectl.pipeline.checkpoint import code_version, save_checkpoint
    from edgectl.pipeline.data import load_datasets, raw_test_images
    from edgectl.pipeline.evaluation import evaluate
    from edgectl.pipeline.training import fine_tune_hook

    cfg.validate()
    t_start = time.perf_counter()
    stages = 7
    step = iter(range(1, stages + 1))

    def stage(msg: str) -> None:
        echo(f"[{next(step)}/{stages}] {msg}  ({time.perf_counter() - t_start:.0f}s)")

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)

    stage("data")
    datasets = load_datasets(cfg.data)
    spec = datasets.input_spec
    echo(f"  {datasets.description}")

    stage("baseline")
    baseline_model, base_meta, source = _baseline(cfg, datasets, echo)
    echo(f"  baseline from {source}")
    base_ckpt = save_checkpoint(baseline_model, base_meta, out / "baseline" / "model.pt")
    baseline = evaluate(baseline_model, datasets, threads=cfg.threads, checkpoint_path=base_ckpt,
                        latency=True, latency_runs=cfg.latency_runs)
    echo(f"  baseline accuracy {baseline['accuracy']:.2%}")
    from edgectl.pipeline.data import class_counts

    counts = class_counts(datasets.test, datasets.labels)
    floor, majority = chance_floor(counts)
    min_acc = (cfg.min_accuracy if cfg.min_accuracy is not None
               else default_gate(baseline["accuracy"], counts))
    if cfg.min_accuracy is not None and cfg.min_accuracy < floor:
        echo(f"  warning: --min-accuracy {cfg.min_accuracy:.2%} is below chance level "
             f"({majority!r} is {floor - CHANCE_MARGIN:.2%} of the test set): a model that "
             "always answers one class passes it")
    chance = (floor, majority)

    tune = fine_tune_hook(datasets, cfg.finetune_epochs, batch_size=cfg.batch_size,
                          seed=cfg.data.seed, progress=cfg.progress)
    report: dict[str, Any] | None = None
    if cfg.prune == "none":
        stage("prune: skipped (--prune none)")
        model = copy.deepcopy(baseline_model)
        if cfg.finetune_epochs:
            tune(model, None)
    else:
        from edgectl.pipeline.pruning import lineage, prune_model

        per_step = "" if cfg.regime == "oneshot" else " per step"
        stage(f"prune: {cfg.prune} {cfg.regime} to {cfg.sparsity:.2f}, fine-tune "
              f"{cfg.finetune_epochs} epoch(s){per_step}")
        orig_params, orig_channels = lineage(base_meta, baseline_model)
        model, report = prune_model(
            copy.deepcopy(baseline_model), cfg.prune, cfg.regime, cfg.sparsity, step=cfg.step,
            img_size=spec.size, round_to=cfg.round_to or None, original_params=orig_params,
            original_channels=orig_channels,
            fine_tune=tune, progress=cfg.progress,
        )
        echo(f"  {cfg.prune} sparsity {report['actual']:.4f} (target {cfg.sparsity:.2f})")
    meta = {**base_meta, "pruning": report, "created": _now(), "code_version": code_version()}
    model_ckpt = save_checkpoint(model, meta, out / "model" / "model.pt")
    result = evaluate(model, datasets, threads=cfg.threads, checkpoint_path=model_ckpt,
                      latency=True, latency_runs=cfg.latency_runs)
    echo(f"  model accuracy {result['accuracy']:.2%} (baseline {baseline['accuracy']:.2%})")
    if result["accuracy"] < min_acc and not cfg.allow_below_min:
        raise BelowMinAccuracy(_gate_message("the pruned model", result["accuracy"], min_acc,
                                             cfg, chance))

    stage(f"export: {', '.join(cfg.formats)} (FP32) with parity checks")
    frames = list(raw_test_images(cfg.data))
    x_test, y_test = ex.stack_inputs(frames, spec)
    x_par, y_par = x_test[:PARITY_IMAGES], y_test[:PARITY_IMAGES]
    art_dir = out / "artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    artifacts: list[dict[str, Any]] = []
    for fmt in cfg.formats:
        path = art_dir / ex.artifact_name(fmt, "fp32")
        parity = ex.export_checked(model, fmt, path, spec.size, x_par, y_par, cfg.threads)
        echo(f"  {path.name}: parity max abs diff {parity['max_abs_diff']:.2e}")
        artifacts.append({"format": fmt, "precision": "fp32", "path": path, "parity": parity})

    if cfg.quantize == "int8":
        stage(f"quantize: INT8 static, {cfg.calib_size} calibration images")
        from edgectl.pipeline.calibration import calibration_inputs
        from edgectl.pipeline.quantization import quantize

        calib = calibration_inputs(datasets, cfg.calib_size, cfg.data.seed)
        for fmt in cfg.formats:
            fp32 = art_dir / ex.artifact_name(fmt, "fp32")
            path = art_dir / ex.artifact_name(fmt, "int8")
            parity = ex.checked_artifact(
                model, fmt, path, lambda tmp, fmt=fmt, src=fp32: quantize(fmt, src, tmp, calib),
                x_par, y_par, cfg.threads)
            echo(f"  {path.name}: parity max abs diff {parity['max_abs_diff']:.3f}, "
                 f"top-1 agreement {parity['top1_agreement']:.1%}")
            artifacts.append({"format": fmt, "precision": "int8", "path": path, "parity": parity})
    else:
        stage("quantize: skipped (--quantize none)")

    stage(f"evaluate {len(artifacts)} artifact(s) in their runtimes on {len(y_test)} images")
    x1 = x_test[:1]
    for a in artifacts:
        logits = ex.run_artifact(a["path"], a["format"], x_test, threads=cfg.threads)
        a["accuracy"] = float(np.mean(logits.argmax(-1) == y_test))
        a["latency_ms"] = artifact_latency(a["path"], a["format"], x1, cfg.threads,
                                           cfg.latency_runs)
        a["bytes"] = a["path"].stat().st_size
        from edgectl.pipeline.metrics import compressed_size

        a["gzip_bytes"] = compressed_size(a["path"])
        echo(f"  {a['path'].name}: accuracy {a['accuracy']:.2%}, "
             f"p50 {a['latency_ms']['p50']:.2f} ms")
    below = [a for a in artifacts if a["accuracy"] < min_acc]
    deployable = result["accuracy"] >= min_acc and not below
    if below and not cfg.allow_below_min:
        worst = min(below, key=lambda a: a["accuracy"])
        raise BelowMinAccuracy(_gate_message(worst["path"].name, worst["accuracy"], min_acc,
                                             cfg, chance))

    stage("bundle" + ("" if deployable else " (NOT deployable: below --min-accuracy)"))
    version = _version(cfg)
    name = cfg.name or f"inspection-{base_meta.get('arch', 'mobilenet_v2')}"
    x_vec = x_test[:VECTOR_CANDIDATES]
    model_metrics = {**_slim(result),
                     "sparsity_pruning": _pruning_sparsity(model, report, cfg.prune)}
    bundle_dir = write_bundle(
        out / "bundle", name=name, version=version, labels=list(datasets.labels),
        reject_labels=list(datasets.reject_labels), input_spec=spec,
        artifacts=[{"path": a["path"], "format": a["format"], "precision": a["precision"],
                    "metrics": {"accuracy": a["accuracy"], "latency_ms": a["latency_ms"],
                                "parity": _slim_parity(a["parity"]),
                                "gzip_bytes": a["gzip_bytes"]}}
                   for a in artifacts],
        metrics=model_metrics, baseline=_slim(baseline),
        provenance={"config": cfg.to_dict(), "dataset": {"description": datasets.description,
                                                         **cfg.data.to_dict()},
                    "code_version": code_version(), "baseline_source": source,
                    "pruning": report},
        min_accuracy=min_acc, test_inputs=x_vec,
        private_key_pem=cfg.key, deployable=deployable,
        default_precision="int8" if cfg.quantize == "int8" else "fp32",
    )
    tar = pack_tar(bundle_dir, out / "bundle.tar")
    signed = " and signed" if cfg.key else " (unsigned: pass --key to sign)"
    echo(f"  {bundle_dir} and {tar.name} written{signed}")

    from edge_common.bundle import load_bundle

    b = load_bundle(bundle_dir)
    vec = {r["path"]: r for r in _replay(b, cfg.threads)}
    summary = {
        "bundle": str(bundle_dir),
        "bundle_tar": str(tar),
        "name": name,
        "version": version,
        "deployable": deployable,
        "signed": cfg.key is not None,
        "min_accuracy": min_acc,
        "baseline": {**baseline, "sparsity_pruning": 0.0, "source": source},
        "model": {**result, "sparsity_pruning": model_metrics["sparsity_pruning"]},
        "pruning": report,
        "artifacts": [
            {"format": a["format"], "precision": a["precision"],
             "path": str(bundle_dir / ex.artifact_name(a["format"], a["precision"])),
             "bytes": a["bytes"], "gzip_bytes": a["gzip_bytes"],
             "sha256": next(x.sha256 for x in b.artifacts
                            if x.path == ex.artifact_name(a["format"], a["precision"])),
             "accuracy": a["accuracy"], "latency_ms": a["latency_ms"]["p50"],
             "latency": a["latency_ms"], "max_abs_diff": a["parity"]["max_abs_diff"],
             "top1_agreement": a["parity"]["top1_agreement"],
             "test_vectors": (vec.get(ex.artifact_name(a["format"], a["precision"])) or {})
             .get("status")}
            for a in artifacts
        ],
        "config": cfg.to_dict(),
        "seconds": time.perf_counter() - t_start,
    }
    fp32_acc = {a["format"]: a["accuracy"] for a in summary["artifacts"]
                if a["precision"] == "fp32"}
    for a in summary["artifacts"]:
        if a["format"] in fp32_acc:
            a["accuracy_vs_fp32"] = a["accuracy"] - fp32_acc[a["format"]]
    write_json_atomic(out / "build.json", json.loads(json.dumps(summary, default=str)))
    return summary


def _replay(bundle: Any, threads: int) -> list[dict[str, Any]]:
    from edge_common.bundle import replay_test_vectors

    return replay_test_vectors(bundle, threads=threads)



def _gate_message(what: str, acc: float, min_acc: float, cfg: BuildConfig,
                  floor: tuple[float, str] | None = None) -> str:
    chance = (f", at least majority class {floor[1]!r} {floor[0] - CHANCE_MARGIN:.2%} + "
              f"{100 * CHANCE_MARGIN:.0f} points" if floor else "")
    gate = (f"--min-accuracy {min_acc:.2%}" if cfg.min_accuracy is not None
            else f"the default gate {min_acc:.2%} (baseline − {100 * DEFAULT_MAX_DROP:.0f} "
                 f"points{chance})")
    old = cfg.out / "bundle"
    note = f"; the earlier bundle in {old} is left as it was" if old.exists() else ""
    return (f"{what} reaches {acc:.2%} accuracy, below {gate}: no bundle written{note} "
            f"(fine-tune longer or prune less; --allow-below-min writes a non-deployable "
            f"bundle for experiments)")


def _version(cfg: BuildConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y.%m.%d-%H%M%S")
    if cfg.prune == "none":
        return f"{stamp}-dense"
    return f"{stamp}-{cfg.prune}-{cfg.sparsity:.2f}"


def _slim(ev: dict[str, Any]) -> dict[str, Any]:
    """An evaluation without the bulky per-class/confusion tables (they stay in build.json)."""
    return {k: v for k, v in ev.items() if k not in ("confusion", "labels")}


def _slim_parity(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "max_abs_diff", "mean_abs_diff", "top1_agreement", "tolerance")
    return {k: p[k] for k in keys if k in p}


# --------------------------------------------------------------------------- table


def _mb(n: Any) -> str:
    return f"{n / 1e6:.2f} MB" if isinstance(n, (int, float)) else "-"


def format_table(summary: dict[str, Any]) -> str:
    """Baseline vs result, and every artifact: the table ``edgectl build`` prints."""
    head = (f"{'':<20} {'accuracy':>9} {'params':>10} {'nonzero':>10} {'sparsity':>8} "
            f"{'size':>9} {'gzip':>9} {'p50 ms':>7}")
    lines = [head, "-" * len(head)]
    rows = (("baseline (PyTorch)", summary["baseline"]), ("model (PyTorch)", summary["model"]))
    for label, ev in rows:
        lat = (ev.get("latency_ms") or {}).get("p50")
        lines.append(
            f"{label:<20} {ev['accuracy']:>9.2%} {ev['params']:>10,} {ev['nonzero']:>10,} "
            f"{ev.get('sparsity_pruning', 0.0):>8.3f} {_mb(ev.get('size_bytes')):>9} "
            f"{_mb(ev.get('size_gzip_bytes')):>9} {(f'{lat:.2f}' if lat else '-'):>7}"
        )
    for a in summary["artifacts"]:
        label = f"{Path(a['path']).name}"
        lines.append(
            f"{label:<20} {a['accuracy']:>9.2%} {'':>10} {'':>10} {'':>8} "
            f"{_mb(a['bytes']):>9} {_mb(a['gzip_bytes']):>9} {a['latency_ms']:>7.2f}"
        )
    p = summary.get("pruning")
    if p:
        what = ("zeroed share of prunable conv/linear weights, classifier excluded"
                if p["method"] == "unstructured" else "share of the parameters removed")
        lines.append(f"sparsity: {p['method']} {p['regime']}, target {p['target']:.2f}, "
                     f"reached {p['actual']:.4f} ({what})")
    lines.append(f"latency: batch 1, {summary['config']['threads']} thread(s), median; "
                 f"artifacts in their own runtimes (ONNX Runtime / LiteRT)")
    twins = [f"{Path(a['path']).name} {100 * a['accuracy_vs_fp32']:+.2f} pt"
             for a in summary["artifacts"] if a["precision"] == "int8" and "accuracy_vs_fp32" in a]
    if twins:
        lines.append("INT8 vs its FP32 twin: " + ", ".join(twins))
    gate = "passed" if summary["deployable"] else "NOT passed (bundle marked not deployable)"
    lines.append(f"accuracy gate {summary['min_accuracy']:.2%}: {gate}")
    return "\n".join(lines)
