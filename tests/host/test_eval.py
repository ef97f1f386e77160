from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgectl.cli import main
from edgectl.pipeline.checkpoint import load_checkpoint
from edgectl.pipeline.data import load_datasets
from edgectl.pipeline.evaluation import confusion_matrix, evaluate, format_report


def test_confusion_matrix():
    m = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_evaluate_without_latency(tiny_checkpoint, tiny_data_config):
    model, meta = load_checkpoint(tiny_checkpoint)
    ds = load_datasets(tiny_data_config, augment=False)
    r = evaluate(model, ds, checkpoint_path=tiny_checkpoint, latency=False)
    conf = np.array(r["confusion"])
    assert conf.shape == (6, 6) and conf.sum() == r["n"] == 24
    assert r["accuracy"] == pytest.approx(np.trace(conf) / 24)
    for i, lb in enumerate(r["labels"]):
        assert r["per_class"][lb] == pytest.approx(conf[i, i] / conf[i].sum())
    assert r["sparsity"] == pytest.approx(1 - r["nonzero"] / r["params"])
    assert r["size_bytes"] == tiny_checkpoint.stat().st_size
    assert r["macs"] > 0 and "latency_ms" not in r
    assert r["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])  # same model, same data


def test_evaluate_counts_zeros_and_measures_latency(tiny_checkpoint, tiny_data_config):
    model, _ = load_checkpoint(tiny_checkpoint)
    ds = load_datasets(tiny_data_config, augment=False)
    with torch.no_grad():
        for p in model.features.parameters():
            p.mul_((torch.rand_like(p) > 0.5).float())
    r = evaluate(model, ds.test, ds.labels, 32, threads=1, latency=True, latency_runs=3,
                 macs=False)
    assert 0.3 < r["sparsity"] < 0.6
    lat = r["latency_ms"]
    assert lat["threads"] == 1 and lat["batch"] == 1 and lat["n"] >= 3
    assert 0 < lat["p50"] <= lat["p95"]
    assert lat["batch32"]["batch"] == 32 and lat["batch32"]["p50"] > 0
    assert "accuracy" in format_report(r) and "p95" in format_report(r)
    assert torch.get_num_threads() >= 1


def test_eval_command_uses_the_checkpoint_data_config(cli_runner, tiny_checkpoint):
    res = cli_runner.invoke(main, ["eval", str(tiny_checkpoint), "--no-latency", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["n"] == 24 and r["data"]["img_size"] == 32
    for key in (
        "accuracy",
        "per_class",
        "confusion",
        "params",
        "nonzero",
        "sparsity",
        "size_bytes",
        "macs",
    ):
        assert key in r
    res = cli_runner.invoke(
        main,
        [
            "eval",
            str(tiny_checkpoint.parent),
            "--test-size",
            "12",
            "--threads",
            "1",
            "--runs",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["n"] == 12 and r["data"]["img_size"] == 32  # overrides only what was given
    assert r["latency_ms"]["threads"] == 1 and r["latency_ms"]["p50"] > 0


def test_eval_command_human_table(cli_runner, tiny_checkpoint):
    res = cli_runner.invoke(main, ["eval", str(tiny_checkpoint), "--no-latency"])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.stdout and "missing_hole" in res.stdout and "sparsity" in res.stdout
