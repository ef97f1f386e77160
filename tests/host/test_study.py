"""The study framework (grid, cache, resume, seeds, table, plots, report) with a stand-in
runner, plus one end-to-end run of the real runner through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from edge_common.errors import ConfigError
from edgectl import study as st


class FakeRunner:
    """Deterministic rows from the cell's coordinates; records which cells it ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.baselines = 0

    def baseline(self, cfg: st.StudyConfig, baseline_dir: Path) -> str:
        self.baselines += 1
        (baseline_dir / "model.pt").write_bytes(b"fake")
        return "fp-fake"

    def measure_baseline(self, cfg: st.StudyConfig) -> dict[str, Any]:
        return self._row(0.0, "baseline", 0) | {"regime": "none", "target_sparsity": 0.0}

    def cell(self, cfg: st.StudyConfig, cell: st.Cell) -> dict[str, Any]:
        self.calls.append(cell.id)
        row = self._row(cell.target, cell.method, cell.seed - cfg.seed0)
        steps = st.prune_steps(cfg, cell.regime, cell.target)
        return row | {
            "regime": cell.regime,
            "target_sparsity": cell.target,
            "prune_steps": steps,
            "finetune_epochs": cfg.finetune_epochs,
        }

    @staticmethod
    def _row(s: float, method: str, k: int) -> dict[str, Any]:
        structured = method == "structured"
        params = int(1000 * (1 - s)) if structured else 1000
        lat = 10.0 * (1 - s) if structured else 10.0
        return {
            "method": method,
            "actual_sparsity": s,
            "overall_sparsity": s * 0.98,
            "accuracy": 0.95 - s * (0.2 if structured else 0.02) + 0.01 * k,
            "accuracy_int8": 0.94 - s * (0.2 if structured else 0.02),
            "params": params,
            "nonzero": int(1000 * (1 - s)),
            "macs": params * 10,
            "size_fp32_bytes": params * 4,
            "size_fp32_gz_bytes": int(4000 * (1 - s)) + 100,
            "size_int8_bytes": params + 50,
            "latency_torch_ms": lat * 2,
            "latency_ort_fp32_ms": lat,
            "latency_ort_int8_ms": lat / 2,
            "speedup_torch": 10.0 / lat,
            "speedup_ort_fp32": 10.0 / lat,
            "speedup_ort_int8": 10.0 / lat,
            "prune_steps": 0,
            "finetune_epochs": 0,
            "wall_s": 1.0 + k,
        }


def _cfg(tmp_path: Path, **kw: Any) -> st.StudyConfig:
    from edgectl.pipeline.data import DataConfig

    base = {
        "out": tmp_path / "study",
        "sparsities": (0.3, 0.5),
        "progress": False,
        "data": DataConfig.from_spec("synthetic", img_size=32),
    }
    return st.StudyConfig(**(base | kw))


def test_grid_covers_every_cell_once(tmp_path):
    cfg = _cfg(tmp_path, sparsities=(0.7, 0.3, 0.5), seeds=2)
    cells = cfg.cells()
    assert len(cells) == 2 * 2 * 3 * 2
    assert len({c.id for c in cells}) == len(cells)
    assert cells[0] == st.Cell("unstructured", "oneshot", 0.3, 0)
    assert st.prune_steps(cfg, "iterative", 0.7) == 4  # 0.2, 0.4, 0.6, 0.7
    assert st.prune_steps(cfg, "oneshot", 0.7) == 1


def test_iterative_splits_the_same_finetune_budget():
    one = st.finetune_chunks(100, 1.0, 1, seed=3)
    four = st.finetune_chunks(100, 1.0, 4, seed=3)
    assert [len(c) for c in four] == [25, 25, 25, 25]
    assert sorted(sum(four, [])) == sorted(one[0]) == list(range(100))  # one pass each
    two = st.finetune_chunks(10, 2.0, 3, seed=0)
    assert sum(len(c) for c in two) == 20 and sorted(sum(two, [])) == sorted(list(range(10)) * 2)
    assert st.finetune_chunks(10, 0.5, 1, seed=0)[0] != st.finetune_chunks(10, 0.5, 1, seed=1)[0]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"sparsities": (0.5, 1.0)}, "sparsity must be in (0, 1)"),
        ({"methods": ("random",)}, "unknown pruning method 'random'"),
        ({"regimes": ("gradual",)}, "the study runs regimes oneshot and iterative, not 'gradual'"),
        ({"step": 0.0}, "--step must be in (0, 1)"),
        ({"seeds": 0}, "seeds must be >= 1"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        st.run_study(_cfg(tmp_path, **bad), runner=FakeRunner())
    assert not (tmp_path / "study").exists()  # nothing half-written


def test_failed_baseline_leaves_no_half_made_study(tmp_path):
    from edge_common.errors import DataNotFoundError

    class NoData(FakeRunner):
        def baseline(self, cfg: st.StudyConfig, baseline_dir: Path) -> str:
            raise DataNotFoundError("data folder not found: /nowhere")

    with pytest.raises(DataNotFoundError):
        st.run_study(_cfg(tmp_path), runner=NoData(), echo=lambda m: None)
    assert not (tmp_path / "study").exists()


def test_study_writes_table_plots_report(tmp_path):
    runner = FakeRunner()
    res = st.run_study(_cfg(tmp_path), runner=runner, echo=lambda m: None)
    out = tmp_path / "study"
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 1 + 2 * 2 * 2
    assert list(table.columns) == list(st.COLUMN_NAMES)
    assert not table.isna().any().any()
    assert table.iloc[0]["method"] == "baseline" and table.iloc[0]["accuracy_delta"] == 0
    row = table[
        (table.method == "structured")
        & (table.regime == "iterative")
        & (table.target_sparsity == 0.5)
    ].iloc[0]
    assert row["accuracy_delta"] == pytest.approx(-0.1)
    assert row["finetune_epochs"] == st.DEFAULT_FINETUNE_EPOCHS and row["prune_steps"] == 3
    assert json.loads((out / "results.json").read_text())[0]["method"] == "baseline"
    for png in ("accuracy.png", "size.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "![latency](latency.png)" in report and "| baseline |" in report
    # Rule: fastest ORT artifact within 1 point of 95%: unstructured is not faster, structured
    # loses too much, so the baseline's own INT8 model wins.
    assert res.best["method"] == "baseline" and res.best["precision"] == "int8"
    assert "Pick: **baseline, ORT INT8**" in report
    assert sorted(p.name for p in (out / "cells").glob("*.json")) == sorted(
        [f"{c.id}.json" for c in _cfg(tmp_path).cells()] + ["baseline.json"]
    )


def test_resume_recomputes_only_missing_or_stale_cells(tmp_path):
    cfg = _cfg(tmp_path)
    st.run_study(cfg, runner=FakeRunner(), echo=lambda m: None)
    with pytest.raises(ConfigError, match="--resume"):
        st.run_study(cfg, runner=FakeRunner(), echo=lambda m: None)
    gone = "structured-oneshot-0.50-seed0"
    (cfg.out / "cells" / f"{gone}.json").unlink()
    cfg.resume = True
    again = FakeRunner()
    res = st.run_study(cfg, runner=again, echo=lambda m: None)
    assert again.calls == [gone] and res.computed == [gone] and len(res.reused) == 7
    assert len(pd.read_csv(cfg.out / "results.csv")) == 9
    # A changed setting changes every cell's key: nothing stale is reused.
    cfg.finetune_epochs = 3
    third = FakeRunner()
    st.run_study(cfg, runner=third, echo=lambda m: None)
    assert len(third.calls) == 8


def test_seeds_give_mean_and_std(tmp_path):
    res = st.run_study(
        _cfg(tmp_path, seeds=3, methods=("unstructured",), regimes=("oneshot",)),
        runner=FakeRunner(),
        echo=lambda m: None,
    )
    t = res.table
    assert len(res.cells) == 2 * 3 and list(t["seeds"]) == [1, 3, 3]
    row = t[t.target_sparsity == 0.3].iloc[0]
    # accuracy = 0.95 - 0.006 + 0.01 * k for k = 0, 1, 2
    assert row["accuracy"] == pytest.approx(0.944 + 0.01)
    assert row["accuracy_std"] == pytest.approx(0.01)
    assert row["wall_s_std"] == pytest.approx(1.0)
    assert t.iloc[0]["accuracy_std"] == 0.0
    assert not t.isna().any().any()
    assert "±" in (tmp_path / "study" / "report.md").read_text()


def test_best_tradeoff_picks_fastest_within_a_point():
    rows = [
        {
            "method": "baseline",
            "regime": "none",
            "target_sparsity": 0.0,
            "actual_sparsity": 0.0,
            "accuracy": 0.90,
            "accuracy_int8": 0.85,
            "latency_ort_fp32_ms": 10.0,
            "latency_ort_int8_ms": 6.0,
        },
        {
            "method": "structured",
            "regime": "iterative",
            "target_sparsity": 0.3,
            "actual_sparsity": 0.3,
            "accuracy": 0.895,
            "accuracy_int8": 0.70,
            "latency_ort_fp32_ms": 7.0,
            "latency_ort_int8_ms": 3.0,
        },
        {
            "method": "structured",
            "regime": "oneshot",
            "target_sparsity": 0.5,
            "actual_sparsity": 0.5,
            "accuracy": 0.80,
            "accuracy_int8": 0.80,
            "latency_ort_fp32_ms": 4.0,
            "latency_ort_int8_ms": 2.0,
        },
    ]
    best = st.best_tradeoff(pd.DataFrame(rows))
    assert (best["method"], best["target_sparsity"], best["precision"]) == (
        "structured",
        0.3,
        "fp32",
    )
    assert best["speedup_vs_baseline_fp32"] == pytest.approx(10 / 7)
    assert st.best_tradeoff(pd.DataFrame(rows), tolerance=0.0)["method"] == "baseline"


def test_cli_rejects_bad_values_with_one_line(cli_runner, tmp_path):
    from edgectl.cli import main

    for args, text in (
        (["--sparsities", "0.5,1.2"], "sparsity must be in (0, 1)"),
        (["--methods", "magic"], "unknown pruning method 'magic'"),
        (["--sparsities", "half"], "not a list of float"),
    ):
        r = cli_runner.invoke(main, ["study", *args, "--out", str(tmp_path / "o")])
        assert r.exit_code != 0
        assert text in r.output
        assert "Traceback" not in r.output


def test_real_study_end_to_end_and_resume(cli_runner, tmp_path):
    """The real runner through the CLI: tiny data at 32 px, width 0.25, 1 epoch."""
    from edgectl.cli import main

    out = tmp_path / "real"
    args = ["study", "--methods", "unstructured,structured", "--regimes", "oneshot",
            "--sparsities", "0.3,0.5", "--train-size", "32", "--test-size", "12",
            "--img-size", "32", "--width", "0.25", "--epochs", "1", "--finetune-epochs", "1",
            "--latency-runs", "3", "--latency-time", "0", "--out", str(out), "--json"]
    first = cli_runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 5 and not table.isna().any().any()
    assert list(table.columns) == list(st.COLUMN_NAMES)
    base = table.iloc[0]
    unstructured = table[(table.method == "unstructured") & (table.target_sparsity == 0.5)].iloc[0]
    structured = table[(table.method == "structured") & (table.target_sparsity == 0.5)].iloc[0]
    assert unstructured["actual_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert unstructured["params"] == base["params"] > unstructured["nonzero"]
    assert unstructured["size_fp32_gz_bytes"] < base["size_fp32_gz_bytes"]
    assert structured["params"] < 0.6 * base["params"] and structured["macs"] < base["macs"]
    assert structured["size_fp32_bytes"] < base["size_fp32_bytes"]
    assert (table["size_int8_bytes"] < table["size_fp32_bytes"]).all()
    assert (table[[c for c, _ in st.RUNTIMES]] > 0).all().all()
    assert (out / "baseline" / "model.pt").is_file()
    for name in ("report.md", "accuracy.png", "size.png", "latency.png", "results.json"):
        assert (out / name).stat().st_size > 0

    gone = "structured-oneshot-0.30-seed0"
    (out / "cells" / f"{gone}.json").unlink()
    second = cli_runner.invoke(main, [*args, "--resume"])
    assert second.exit_code == 0, second.output
    result = json.loads(second.stdout)
    assert result["computed"] == [gone]
    assert sorted(result["reused"]) == sorted(
        ["unstructured-oneshot-0.30-seed0", "unstructured-oneshot-0.50-seed0",
         "structured-oneshot-0.50-seed0"])
    assert (out / "cells" / f"{gone}.json").is_file()

    # --from reuses that baseline (no training): same baseline accuracy and weights.
    reused = tmp_path / "from"
    third = cli_runner.invoke(main, [
        "study", "--methods", "unstructured", "--regimes", "oneshot", "--sparsities", "0.5",
        "--train-size", "32", "--test-size", "12", "--img-size", "32", "--latency-runs", "3",
        "--latency-time", "0", "--from", str(out / "baseline" / "model.pt"),
        "--out", str(reused), "--json"])
    assert third.exit_code == 0, third.output
    rows = json.loads(third.stdout)["table"]
    assert [r["method"] for r in rows] == ["baseline", "unstructured"]
    assert rows[0]["accuracy"] == pytest.approx(base["accuracy"])
    assert rows[0]["params"] == base["params"]
    study_meta = json.loads((reused / "baseline" / "model.json").read_text())["study"]
    assert study_meta == {"from": str(out / "baseline" / "model.pt"), "train_s": 0.0}
