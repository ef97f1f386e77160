"""``pipeline.deadline``: the build's prune stage replaced by the NetAdapt search, ending
in a bundle whose manifest records the budget; or, when nothing meets it, no bundle and
one error naming the closest point. The oracle here counts MACs (a deterministic stand-in
for a device; the measured table and the real board are tested where they are built)."""

from __future__ import annotations

import json

import pytest

from edgectl.pipeline.metrics import count_macs


class MacOracle:
    """ms = MACs / 1e5 of the model; estimates from a per-stage linear table."""

    def __init__(self, dense, img: int) -> None:
        self.img, self.base = img, count_macs(dense, img) / 1e5
        self.measured = 0

    def estimate(self, keep):
        share = [0.03, 0.02, 0.05, 0.03, 0.07, 0.03, 0.14, 0.06, 0.14, 0.06, 0.12, 0.05,
                 0.07, 0.03, 0.04]
        return self.base * (0.1 + sum(s * k for s, k in zip(share, keep, strict=True)))

    def measure(self, model):
        self.measured += 1
        return count_macs(model, self.img) / 1e5

    def facts(self):
        return {"device": "test-board", "cpu": "test CPU", "runtime": "onnxruntime",
                "runtime_version": "0", "precision": "fp32", "threads": 1}

    # the rest of pipeline.deadline.Oracle: no table to bind, fetch ahead or refit
    def bind(self, dense):
        return self

    def peek(self, keep):
        return self.estimate(keep)

    def missing(self, keep):
        return 0

    def prefetch(self, keeps):
        return 0

    def observe(self, keep, measured_ms):
        pass


def _cfg(tiny_data_config, tiny_checkpoint, out):
    from edgectl.pipeline.build import BuildConfig

    return BuildConfig(data=tiny_data_config, out=out, prune="structured",
                       formats=("onnx",), quantize="none", finetune_epochs=0,
                       from_model=tiny_checkpoint, latency_runs=1, cache=False,
                       progress=False, min_accuracy=0.0)


def _dl(budget, **kw):
    from edgectl.pipeline import netadapt
    from edgectl.pipeline.deadline import DeadlineConfig

    return DeadlineConfig(budget_ms=budget, short_images=8, selection_images=12,
                          plan=netadapt.Plan(budget_ms=budget, step_frac=0.05), **kw)


def test_a_deadline_build_ends_in_a_bundle_that_records_the_budget(
        tiny_data_config, tiny_checkpoint, tmp_path):
    from edgectl.pipeline.build import run_build
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.deadline import manifest_section, search_stage

    dense, _ = load_checkpoint(tiny_checkpoint)
    oracle = MacOracle(dense, 32)
    budget = oracle.base * 0.8
    dl = _dl(budget, max_accuracy_drop=100.0)
    steps = []
    res = run_build(_cfg(tiny_data_config, tiny_checkpoint, tmp_path / "b"),
                    echo=lambda _m: None, prune=search_stage(dl, oracle, steps.append),
                    deadline=lambda p: manifest_section(dl, oracle, p))
    manifest = json.loads((res.bundle / "manifest.json").read_text())
    d = manifest["deadline"]
    assert d["budget_ms"] == budget and d["device"] == "test-board" and d["quantile"] == "p95"
    assert d["measured_ms"] <= budget
    assert d["measured_ms"] == pytest.approx(count_macs(res.model.model, 32) / 1e5)
    report = json.loads((tmp_path / "b" / "build.json").read_text())["pruning"]
    assert res.model.report["method"] == "deadline" and res.model.report["met"]
    assert len(res.model.report["steps"]) == len(steps) >= 1
    assert (tmp_path / "b" / "search" / "steps.json").is_file()   # resumable state
    assert report["method"] == "deadline" and report["final_ms"] == d["measured_ms"]
    assert len(report["estimation_error"]) == len(report["steps"])

    from edgectl.pipeline.front import format_front, front_rows, plot_front

    rows = front_rows(json.loads((tmp_path / "b" / "build.json").read_text()), True)
    names = [r["model"] for r in rows]
    assert names[0] == "baseline" and "final" in names and "final onnx fp32" in names
    assert len([n for n in names if n.startswith("step ")]) == len(report["steps"])
    assert {r["accuracy_on"] for r in rows} == {"selection", "test"}
    assert all(r["latency_source"] == "measured" for r in rows)
    front = [r for r in rows if r["front"]]
    assert front and all(not (o["accuracy"] > f["accuracy"] and o["latency_ms"] < f["latency_ms"])
                         for f in front for o in rows if o["accuracy_on"] == f["accuracy_on"])
    assert f"budget {budget:g} ms" in format_front(rows, budget)
    png = plot_front(rows, budget, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_within_the_drop_is_one_error_naming_the_closest_point_and_no_bundle(
        tiny_data_config, tiny_checkpoint, tmp_path):
    from edgectl.pipeline.build import run_build
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.deadline import BudgetNotMet, manifest_section, search_stage

    dense, _ = load_checkpoint(tiny_checkpoint)
    oracle = MacOracle(dense, 32)
    dl = _dl(oracle.base * 1e-3, max_accuracy_drop=100.0)
    dl.plan = dl.plan.__class__(budget_ms=dl.budget_ms, step_frac=0.3, max_steps=3)
    with pytest.raises(BudgetNotMet, match=r"closest is .* ms p95 .* would meet a budget of"):
        run_build(_cfg(tiny_data_config, tiny_checkpoint, tmp_path / "b"),
                  echo=lambda _m: None, prune=search_stage(dl, oracle),
                  deadline=lambda p: manifest_section(dl, oracle, p))
    assert not (tmp_path / "b" / "bundle").exists()


def test_selection_slice_is_held_out_of_fine_tuning(tiny_data_config):
    from edge_common.errors import ConfigError
    from edgectl.pipeline.data import load_datasets
    from edgectl.pipeline.deadline import split_selection

    ds = load_datasets(tiny_data_config)
    tune, sel = split_selection(ds, 12, seed=0)
    assert len(sel) == 12 and len(tune.train) == len(ds.train) - 12
    assert not set(sel.indices) & set(tune.train.indices)
    assert sel.dataset.transform is ds.test.transform         # scored without augmentation
    assert ds.train.transform is not ds.test.transform         # the training set untouched
    with pytest.raises(ConfigError, match="selection"):
        split_selection(ds, len(ds.train), seed=0)


def test_the_final_figure_pools_every_trip_of_its_shape(
        tiny_data_config, tiny_checkpoint, tmp_path):
    """Weights do not change latency: the final figure is the median of the last step's
    trips and the final model's, not of the final 3 alone."""
    import statistics

    from edgectl.pipeline.build import run_build
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.deadline import search_stage

    class Noisy(MacOracle):
        def __init__(self, dense, img):
            super().__init__(dense, img)
            self.log = []

        def measure(self, model):
            ms = super().measure(model) * (1 + 0.01 * self.measured)   # a board warming up
            self.log.append((count_macs(model, self.img), ms))
            return ms

    dense, _ = load_checkpoint(tiny_checkpoint)
    oracle = Noisy(dense, 32)
    dl = _dl(oracle.base * 0.8, max_accuracy_drop=100.0, guard=0.1)
    res = run_build(_cfg(tiny_data_config, tiny_checkpoint, tmp_path / "b"),
                    echo=lambda _m: None, prune=search_stage(dl, oracle))
    report = res.model.report
    last = oracle.log[-1][0]
    trips = [ms for macs, ms in oracle.log if macs == last]
    assert len(trips) == 6 and report["steps"]
    assert report["final_ms"] == statistics.median_high(trips)
    assert report["final_ms"] != statistics.median_high(trips[3:])   # not the last 3 alone
    assert report["steps"][-1]["measured_ms"] == statistics.median_high(trips[:3])


def test_dry_run_text_says_the_counts_it_computes(tiny_data_config, tiny_checkpoint, tmp_path):
    """The plan's sentences carry the same numbers as its fields: a step proposes every
    unit and the whole network, each with its short fine-tune."""
    from edgectl.pipeline import netadapt
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.deadline import plan_summary

    dense, _ = load_checkpoint(tiny_checkpoint)
    oracle = MacOracle(dense, tiny_data_config.img_size)
    dl = _dl(oracle.base * 0.5)
    info = plan_summary(dl, oracle, _cfg(tiny_data_config, tiny_checkpoint, tmp_path / "o"))
    per_step = netadapt.UNITS + 1
    assert info["expected_steps"] >= 1
    assert info["short_fine_tunes"] == info["expected_steps"] * per_step
    assert f"each: ≤ {per_step} proposals" in info["text"]
    assert f"fine-tunes: ≤ {info['short_fine_tunes']} short + 1 long" in info["text"]
