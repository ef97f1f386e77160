"""The run of a study: baseline, every cell of the grid (resumable, one JSON per cell), the
table and the outputs."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edge_common.errors import ConfigError
from edge_common.fileio import write_json_atomic
from edgectl.study.cell import Runner, TorchRunner
from edgectl.study.grid import (
    BASELINE,
    Cell,
    StudyConfig,
    cell_key,
)
from edgectl.study.report import best_tradeoff, build_table, write_outputs

log = logging.getLogger("edgectl.study")


# --------------------------------------------------------------------------- the run


@dataclass
class StudyResult:
    """What ``run_study`` produced: the table, the per-seed rows, file paths, the pick."""

    table: pd.DataFrame
    cells: pd.DataFrame
    files: dict[str, Path]
    best: dict[str, Any] | None
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def run_study(
    cfg: StudyConfig, runner: Runner | None = None, echo: Callable[[str], None] | None = None
) -> StudyResult:
    """Run (or resume) the study described by ``cfg`` and write its outputs under ``cfg.out``."""
    cfg.validate()
    out = Path(cfg.out)
    cells_dir, baseline_dir = out / "cells", out / "baseline"
    if not cfg.resume and (any(cells_dir.glob("*.json")) or (baseline_dir / "model.pt").exists()):
        raise ConfigError(
            f"{out} already holds a study: pass --resume to continue it, or choose another --out"
        )
    fresh = not out.exists()
    cells_dir.mkdir(parents=True, exist_ok=True)
    baseline_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "study.json", cfg.to_dict())
    runner = runner or TorchRunner()
    say = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()

    say("study: baseline")
    try:
        fingerprint = runner.baseline(cfg, baseline_dir)
    except BaseException:
        if fresh:  # e.g. a data folder that does not exist: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    base_cell = Cell(BASELINE, "none", 0.0, cfg.seed0)
    base_key = cell_key(cfg, base_cell, fingerprint)
    base_row = _load_cell(cells_dir / f"{BASELINE}.json", base_key) if cfg.resume else None
    if base_row is None:
        base_row = runner.measure_baseline(cfg)
        _save_cell(cells_dir / f"{BASELINE}.json", base_key, base_cell, base_row)

    grid = cfg.cells()
    rows: list[dict[str, Any]] = []
    computed: list[str] = []
    reused: list[str] = []
    todo: list[tuple[Cell, str]] = []
    for cell in grid:
        key = cell_key(cfg, cell, fingerprint)
        cached = _load_cell(cells_dir / f"{cell.id}.json", key) if cfg.resume else None
        if cached is not None:
            rows.append(cached)
            reused.append(cell.id)
        else:
            todo.append((cell, key))
    if reused:
        say(f"study: resuming, {len(reused)} of {len(grid)} cells already done")
    t_cells = time.perf_counter()
    bar = _bar(len(todo), cfg.progress)
    try:
        for k, (cell, key) in enumerate(todo, start=1):
            bar.set_postfix_str(cell.id)
            row = dict(runner.cell(cfg, cell), seed=cell.seed)
            _save_cell(cells_dir / f"{cell.id}.json", key, cell, row)
            rows.append(row)
            computed.append(cell.id)
            bar.update(1)
            elapsed = time.perf_counter() - t_cells
            eta = elapsed / k * (len(todo) - k)
            bar.write(
                f"cell {len(reused) + k}/{len(grid)} {cell.id}: accuracy {row['accuracy']:.3f}, "
                f"sparsity {row['actual_sparsity']:.3f}, {row['wall_s']:.0f} s "
                f"(elapsed {_hms(elapsed)}, ETA {_hms(eta)})",
                file=sys.stderr,
            )
    finally:
        bar.close()

    per_seed = pd.DataFrame(rows)
    table = build_table(base_row, rows, seeds=cfg.seeds)
    files = write_outputs(table, per_seed, cfg, out, wall_s=time.perf_counter() - t_start)
    return StudyResult(table, per_seed, files, best_tradeoff(table), computed, reused)


def _load_cell(path: Path, key: str) -> dict[str, Any] | None:
    """A finished cell's row if its file exists and its key matches, else None."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if blob.get("key") != key:
        if path.exists():
            log.info("study: %s was made with other settings; rerunning it", path.name)
        return None
    return dict(blob["result"])


def _save_cell(path: Path, key: str, cell: Cell, row: dict[str, Any]) -> None:
    write_json_atomic(path, {"key": key, "cell": asdict(cell), "result": row})


def _bar(n: int, enabled: bool) -> Any:
    """A tqdm bar over cells (count, rate, ETA) on stderr."""
    from tqdm import tqdm

    return tqdm(total=n, unit="cell", desc="study", disable=not enabled or n == 0, file=sys.stderr)


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


