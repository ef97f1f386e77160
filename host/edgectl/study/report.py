"""The study's table (mean over seeds), best trade-off, plots and report.md."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from edge_common.fileio import write_bytes_atomic
from edgectl.study.grid import (
    ACCURACY_TOLERANCE,
    BASELINE,
    COLUMN_NAMES,
    COLUMNS,
    INT_COLUMNS,
    METHODS,
    METRICS,
    REGIMES,
    RUNTIMES,
    StudyConfig,
)

log = logging.getLogger("edgectl.study")


# --------------------------------------------------------------------------- the table


def build_table(
    baseline: dict[str, Any], rows: Sequence[dict[str, Any]], seeds: int = 1
) -> pd.DataFrame:
    """Baseline row first, then the mean over seeds per (method, regime, target).

    With ``seeds > 1`` every metric also gets a ``*_std`` column (sample std; 0 for the
    baseline, which is measured once)."""
    base = {c: baseline.get(c) for c in COLUMN_NAMES}
    base.update(method=BASELINE, regime="none", target_sparsity=0.0, accuracy_delta=0.0, seeds=1)
    frame = pd.DataFrame(list(rows))
    keys = ["method", "regime", "target_sparsity"]
    metrics = [m for m in METRICS if m != "accuracy_delta"]
    if frame.empty:
        table = pd.DataFrame([base], columns=list(COLUMN_NAMES))
    else:
        grouped = frame.groupby(keys, sort=False)
        mean = grouped[metrics].mean()
        mean["seeds"] = grouped.size()
        mean = mean.reset_index()
        mean["accuracy_delta"] = mean["accuracy"] - float(baseline["accuracy"])
        table = pd.concat([pd.DataFrame([base]), mean], ignore_index=True)[list(COLUMN_NAMES)]
        if seeds > 1:
            std = grouped[metrics].std(ddof=1).fillna(0.0).reset_index()
            std = std.rename(columns={m: f"{m}_std" for m in metrics})
            table = table.merge(std, on=keys, how="left")
            table.loc[table["method"] == BASELINE, [f"{m}_std" for m in metrics]] = 0.0
    if seeds > 1 and "accuracy_std" not in table:
        for m in metrics:
            table[f"{m}_std"] = 0.0
    for c in INT_COLUMNS:
        table[c] = table[c].round().astype("int64")
    order = {m: i for i, m in enumerate((BASELINE, "none", *METHODS, *REGIMES))}
    table = table.sort_values(
        by=["method", "regime", "target_sparsity"],
        key=lambda s: s.map(order) if s.name != "target_sparsity" else s,
        kind="stable",
    ).reset_index(drop=True)
    return table


def best_tradeoff(
    table: pd.DataFrame, tolerance: float = ACCURACY_TOLERANCE
) -> dict[str, Any] | None:
    """The fastest deployable artifact (ORT FP32 or ORT INT8, batch 1) whose own accuracy is
    within ``tolerance`` of the baseline's FP32 accuracy; the baseline's artifacts compete too."""
    base = table[table["method"] == BASELINE].iloc[0]
    floor = float(base["accuracy"]) - tolerance
    candidates = []
    for _, r in table.iterrows():
        for precision, acc_col, lat_col in (
            ("fp32", "accuracy", "latency_ort_fp32_ms"),
            ("int8", "accuracy_int8", "latency_ort_int8_ms"),
        ):
            if float(r[acc_col]) >= floor - 1e-12:
                candidates.append((float(r[lat_col]), r, precision, acc_col, lat_col))
    if not candidates:
        return None
    lat, r, precision, acc_col, _ = min(candidates, key=lambda c: c[0])
    return {
        "method": r["method"],
        "regime": r["regime"],
        "target_sparsity": float(r["target_sparsity"]),
        "actual_sparsity": float(r["actual_sparsity"]),
        "precision": precision,
        "accuracy": float(r[acc_col]),
        "latency_ms": lat,
        "speedup_vs_baseline_fp32": float(base["latency_ort_fp32_ms"]) / lat
        if lat
        else float("nan"),
        "rule": "fastest ONNX Runtime artifact (FP32 or INT8, batch 1) whose own accuracy is"
        f" at most {tolerance * 100:g} point(s) below the baseline's FP32 accuracy",
    }


# --------------------------------------------------------------------------- outputs


def write_outputs(
    table: pd.DataFrame, per_seed: pd.DataFrame, cfg: StudyConfig, out: Path, wall_s: float = 0.0
) -> dict[str, Path]:
    """results.csv/json, cells.csv, the three plots and report.md, each written atomically."""
    files = {"csv": out / "results.csv", "json": out / "results.json", "cells": out / "cells.csv"}
    write_bytes_atomic(files["csv"], table.to_csv(index=False).encode())
    write_bytes_atomic(files["json"], (table.to_json(orient="records", indent=2) + "\n").encode())
    write_bytes_atomic(files["cells"], per_seed.to_csv(index=False).encode())
    files.update(plot_study(table, out))
    files["report"] = write_report(table, cfg, out, files, wall_s)
    return files


def _series(table: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    pruned = table[table["method"] != BASELINE]
    for (method, regime), g in pruned.groupby(["method", "regime"], sort=False):
        yield f"{method} {regime}", g.sort_values("actual_sparsity")


def _plot(
    table: pd.DataFrame, panels: Sequence[tuple[str, str, float]], path: Path, title: str
) -> Path:
    """One panel per (column, y label, scale); one line per method × regime; baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = table[table["method"] == BASELINE].iloc[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
    styles = {"oneshot": ("-", "o"), "iterative": ("--", "s")}
    for ax, (col, ylabel, scale) in zip(axes[0], panels, strict=True):
        for label, g in _series(table):
            method, regime = label.split(" ")
            err = g[f"{col}_std"] * scale if f"{col}_std" in g else None
            ls, marker = styles.get(regime, ("-", "o"))
            ax.errorbar(
                g["actual_sparsity"],
                g[col] * scale,
                yerr=err,
                color=colours.get(method),
                ls=ls,
                marker=marker,
                ms=4,
                capsize=3,
                label=label,
            )
        ax.axhline(base[col] * scale, color="black", ls="--", lw=1, label="baseline")
        ax.plot([base["actual_sparsity"]], [base[col] * scale], "k*", ms=10)
        ax.set_xlabel("actual sparsity")
        ax.set_ylabel(ylabel)
        if not col.startswith("accuracy"):
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as fh:
        tmp = Path(fh.name)
    try:
        fig.savefig(tmp, dpi=90)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_study(table: pd.DataFrame, out: Path) -> dict[str, Path]:
    """accuracy.png, size.png, latency.png (PNG, Agg backend)."""
    return {
        "accuracy_png": _plot(
            table,
            [
                ("accuracy", "top-1 accuracy (%)", 100.0),
                ("accuracy_int8", "INT8 top-1 accuracy (%)", 100.0),
            ],
            out / "accuracy.png",
            "Accuracy against sparsity",
        ),
        "size_png": _plot(
            table,
            [
                ("size_fp32_bytes", "ONNX FP32 (KB)", 1e-3),
                ("size_fp32_gz_bytes", "gzip ONNX FP32 (KB)", 1e-3),
                ("size_int8_bytes", "ONNX INT8 (KB)", 1e-3),
            ],
            out / "size.png",
            "Size on disk against sparsity",
        ),
        "latency_png": _plot(
            table,
            [(c, f"{name} p50 (ms)", 1.0) for c, name in RUNTIMES],
            out / "latency.png",
            "Batch-1 latency against sparsity",
        ),
    }


_STD_SHOWN = ("accuracy", "accuracy_int8", "actual_sparsity", *(c for c, _ in RUNTIMES))


def markdown_table(table: pd.DataFrame) -> str:
    """The results table as GitHub markdown, numbers formatted for people."""
    cols: list[tuple[str, str, Callable[[Any], str]]] = [
        ("method", "method", str),
        ("regime", "regime", str),
        ("target_sparsity", "target", "{:.2f}".format),
        ("actual_sparsity", "actual", "{:.3f}".format),
        ("accuracy", "acc %", lambda v: f"{v * 100:.1f}"),
        ("accuracy_delta", "Δ pts", lambda v: f"{v * 100:+.1f}"),
        ("accuracy_int8", "INT8 acc %", lambda v: f"{v * 100:.1f}"),
        ("params", "params", "{:,}".format),
        ("nonzero", "nonzero", "{:,}".format),
        ("macs", "MMACs", lambda v: f"{v / 1e6:.1f}"),
        ("size_fp32_bytes", "FP32 KB", lambda v: f"{v / 1e3:.0f}"),
        ("size_fp32_gz_bytes", "FP32 gz KB", lambda v: f"{v / 1e3:.0f}"),
        ("size_int8_bytes", "INT8 KB", lambda v: f"{v / 1e3:.0f}"),
        ("latency_torch_ms", "eager ms", "{:.2f}".format),
        ("latency_ort_fp32_ms", "ORT FP32 ms", "{:.2f}".format),
        ("latency_ort_int8_ms", "ORT INT8 ms", "{:.2f}".format),
        ("finetune_epochs", "FT ep", "{:g}".format),
        ("wall_s", "wall s", "{:.0f}".format),
    ]
    std = "accuracy_std" in table
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for col, _, fmt in cols:
            text = fmt(r[col])
            if std and col in _STD_SHOWN and r["method"] != BASELINE:
                s = r[f"{col}_std"]
                text += f" ± {s * 100:.1f}" if col.startswith("accuracy") else f" ± {s:.2f}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    table: pd.DataFrame, cfg: StudyConfig, out: Path, files: dict[str, Path], wall_s: float
) -> Path:
    """report.md: settings, table, plots, the best trade-off by a stated rule, glossary."""
    base = table[table["method"] == BASELINE].iloc[0]
    best = best_tradeoff(table)
    grid = (
        f"{len(cfg.methods)} methods × {len(cfg.regimes)} regimes"
        f" × {len(cfg.sparsities)} sparsities"
    )
    d = cfg.data_dict()
    baseline = (
        f"reused from `{cfg.from_model}`"
        if cfg.from_model
        else f"MobileNetV2 width {cfg.width_mult:g}, trained {cfg.epochs} epochs"
    )
    sizes = f"{d.get('train_size') or 'default'} train / {d.get('test_size') or 'default'} test"
    lines = [
        "# Pruning study",
        "",
        f"Grid: {grid} × {cfg.seeds} seed(s). Every cell is pruned from the same baseline "
        f"({baseline}) and fine-tuned; data `{d.get('spec', '?')}` ({sizes} images) "
        f"at {int(cfg.data.img_size)} px.",
        "",
        f"- Fine-tune budget: {cfg.finetune_epochs:g} epoch(s) of the training set per cell "
        "(Adam, one-cycle learning rate, pruned weights held at zero). One-shot prunes once to "
        "the target and spends it all; iterative splits it evenly over its steps, so both see "
        "the same images.",
        f"- Iterative: prune in steps of {cfg.step:g} (sparsity of the original model, the last "
        "step lands exactly on the target), fine-tuning on its share of the budget after each "
        "step.",
        f"- Latency: batch 1, {cfg.threads} thread(s), median of ≥ {cfg.latency_runs} runs; each "
        "cell is timed alternately with the baseline (best of two medians each) in the same run, "
        "so the speedup columns compare like with like. Compare ratios, not absolute ms, across "
        "machines.",
        "- Compressed size: gzip -9 of the ONNX FP32 file.",
        f"- Wall time of this invocation: {wall_s / 60:.1f} min (cells reused by --resume cost "
        "nothing).",
        "",
        "## Results",
        "",
        markdown_table(table),
        "",
    ]
    if cfg.seeds > 1:
        lines += [
            "Pruned rows are mean ± standard deviation over seeds (baseline measured once).",
            "",
        ]
    lines += ["## Plots", ""]
    for key in ("accuracy_png", "size_png", "latency_png"):
        lines += [f"![{key[:-4]}]({files[key].name})", ""]
    lines += ["## Best trade-off", ""]
    if best is None:
        lines.append(f"No artifact is within {ACCURACY_TOLERANCE * 100:g} point of the baseline.")
    else:
        name = (
            BASELINE
            if best["method"] == BASELINE
            else (f"{best['method']} {best['regime']} {best['target_sparsity']:.2f}")
        )
        lines.append(
            f"Rule: the {best['rule']}. Pick: **{name}, ORT {best['precision'].upper()}** — "
            f"{best['latency_ms']:.2f} ms, accuracy {best['accuracy'] * 100:.1f}% "
            f"(baseline {base['accuracy'] * 100:.1f}%), {best['speedup_vs_baseline_fp32']:.2f}× "
            f"faster than the baseline on ORT FP32."
        )
    lines += (
        ["", "## Columns", ""]
        + [f"- `{c}`: {d}" for c, d in COLUMNS]
        + ["- `*_std`: standard deviation over seeds (only with --seeds > 1)", ""]
    )
    path = out / "report.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path


def copy_report(out: Path, dest: Path) -> None:
    """Copy report.md, the plots and results.csv to ``dest`` (for docs/study/)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (
        "report.md",
        "results.csv",
        "results.json",
        "accuracy.png",
        "size.png",
        "latency.png",
    ):
        shutil.copy2(out / name, dest / name)
