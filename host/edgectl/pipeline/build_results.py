"""Typed results of the stages of ``edgectl build`` (``pipeline.build``) and the summary
table it prints. ``BuildResult.to_dict()`` is ``OUT/build.json`` and ``build --json``;
:func:`format_table` reads that dict, so it also renders a saved ``build.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- stage results


@dataclass
class Gate:
    """The accuracy gates of one build: ``min_accuracy`` for the model and every artifact,
    ``max_drop`` (points, as ``--max-accuracy-drop``) for an INT8 artifact against its FP32
    twin."""

    min_accuracy: float
    chance: tuple[float, str]  # (majority share + margin, majority label)
    max_drop: float


@dataclass
class BaselineResult:
    """The unpruned model, where it came from, and its evaluation."""

    model: Any
    meta: dict[str, Any]
    source: str
    checkpoint: Path
    metrics: dict[str, Any]


@dataclass
class PruneResult:
    """The pruned and fine-tuned model (``report`` is None for ``--prune none``)."""

    model: Any
    report: dict[str, Any] | None
    checkpoint: Path | None    # None: not saved (the study's cells)
    metrics: dict[str, Any]
    sparsity: float
    speed: dict[str, Any] | None = None  # speed.measure_speed: dense vs pruned, one run


@dataclass
class ArtifactResult:
    """One exported or quantized file, checked, then measured in its own runtime."""

    format: str
    precision: str
    path: Path
    parity: dict[str, Any]
    accuracy: float = 0.0
    latency: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    gzip_bytes: int = 0
    accuracy_vs_fp32: float | None = None  # this accuracy minus its FP32 twin's
    deployable: bool = True  # False: an INT8 file that drops more than --max-accuracy-drop

    @property
    def name(self) -> str:
        return self.path.name

    def gate_metrics(self, gate: Gate) -> dict[str, Any]:
        """What the manifest records of this artifact's measurements and gates."""
        m: dict[str, Any] = {"accuracy": self.accuracy, "latency_ms": self.latency,
                             "parity": _slim_parity(self.parity), "gzip_bytes": self.gzip_bytes,
                             "deployable": self.deployable}
        if self.accuracy_vs_fp32 is not None:
            m.update(accuracy_vs_fp32=self.accuracy_vs_fp32, max_accuracy_drop=gate.max_drop)
        return m


@dataclass
class BuildResult:
    """Everything one build produced; :meth:`to_dict` is ``build.json`` and ``--json``."""

    config: Any  # build.BuildConfig
    name: str
    version: str
    bundle: Path
    bundle_tar: Path
    deployable: bool
    gate: Gate
    baseline: BaselineResult
    model: PruneResult
    artifacts: list[ArtifactResult]
    sha256: dict[str, str]  # bundle path -> sha256, as the manifest lists it
    test_vectors: dict[str, str | None]  # bundle path -> replay status
    notes: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        from edgectl.pipeline.export import artifact_name

        rows = []
        for a in self.artifacts:
            rel = artifact_name(a.format, a.precision)
            row = {"format": a.format, "precision": a.precision, "path": str(self.bundle / rel),
                   "bytes": a.bytes, "gzip_bytes": a.gzip_bytes, "sha256": self.sha256[rel],
                   "accuracy": a.accuracy, "latency_ms": a.latency["p50"], "latency": a.latency,
                   "max_abs_diff": a.parity["max_abs_diff"],
                   "top1_agreement": a.parity["top1_agreement"],
                   "test_vectors": self.test_vectors.get(rel), "deployable": a.deployable}
            if a.accuracy_vs_fp32 is not None:
                row["accuracy_vs_fp32"] = a.accuracy_vs_fp32
            rows.append(row)
        return {
            "bundle": str(self.bundle), "bundle_tar": str(self.bundle_tar), "name": self.name,
            "version": self.version, "deployable": self.deployable,
            "signed": self.config.key is not None, "min_accuracy": self.gate.min_accuracy,
            "max_accuracy_drop": self.gate.max_drop,
            "baseline": {**self.baseline.metrics, "sparsity_pruning": 0.0,
                         "source": self.baseline.source},
            "model": {**self.model.metrics, "sparsity_pruning": self.model.sparsity},
            "pruning": self.model.report, "speed": self.model.speed, "artifacts": rows,
            "notes": list(self.notes), "config": self.config.to_dict(), "seconds": self.seconds,
        }


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
        label = Path(a["path"]).name + ("" if a.get("deployable", True) else " (x)")
        lines.append(
            f"{label:<20} {a['accuracy']:>9.2%} {'':>10} {'':>10} {'':>8} "
            f"{_mb(a['bytes']):>9} {_mb(a['gzip_bytes']):>9} {a['latency_ms']:>7.2f}"
        )
    p = summary.get("pruning")
    if p and p.get("method") == "deadline":
        lines.append(f"search: p95 budget {p['budget_ms']:g} ms, measured {p['final_ms']:.3f} ms "
                     f"on {(p.get('oracle') or {}).get('device', '?')} after "
                     f"{len(p.get('steps', ()))} step(s) ({p.get('stop')}); stage keep "
                     f"{[round(k, 3) for k in p['keep']]}")
    elif p:
        what = ("zeroed share of prunable conv/linear weights, classifier excluded"
                if p["method"] == "unstructured" else "share of the parameters removed")
        lines.append(f"sparsity: {p['method']} {p['regime']}, target {p['target']:.2f}, "
                     f"reached {p['actual']:.4f} ({what})")
    lines.append(f"latency: batch 1, {summary['config']['threads']} thread(s), median; "
                 f"artifacts in their own runtimes (ONNX Runtime / LiteRT)")
    twins = [f"{Path(a['path']).name} {100 * a['accuracy_vs_fp32']:+.2f} pt"
             for a in summary["artifacts"] if a["precision"] == "int8" and "accuracy_vs_fp32" in a]
    if twins:
        limit = summary.get("max_accuracy_drop")
        gate = f" (at most {limit:g} pt lost)" if limit is not None else ""
        lines.append(f"INT8 vs its FP32 twin{gate}: " + ", ".join(twins))
    gate = "passed" if summary["deployable"] else "NOT passed (bundle marked not deployable)"
    lines.append(f"accuracy gate {summary['min_accuracy']:.2%}: {gate}")
    lines += [f"note: {n}" for n in summary.get("notes", ())]
    return "\n".join(lines)
