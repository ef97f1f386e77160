"""`edgectl prune` through the CLI: output contract, checkpoint meta, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgectl.cli import main

IMG = 32


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-0.25 MobileNetV2 checkpoint on a tiny synthetic set (its own data config)."""
    from edge_common.synthetic import LABELS, REJECT_LABELS
    from edgectl.pipeline.checkpoint import save_checkpoint
    from edgectl.pipeline.data import DataConfig
    from edgectl.pipeline.model import build_model

    torch.manual_seed(0)
    model = build_model(len(LABELS), width_mult=0.25)
    cfg = DataConfig.from_spec("synthetic", train_size=32, test_size=24, img_size=IMG, seed=1)
    meta = {
        "arch": "mobilenet_v2",
        "num_classes": len(LABELS),
        "labels": list(LABELS),
        "reject_labels": list(REJECT_LABELS),
        "data": cfg.to_dict(),
    }
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("base") / "model.pt")


def _run(cli_runner, *args: str):  # type: ignore[no-untyped-def]
    return cli_runner.invoke(main, ["prune", *args], catch_exceptions=False)


def test_prune_structured_json_contract(cli_runner, tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "s50"
    res = _run(
        cli_runner,
        str(tiny_ckpt),
        "--method",
        "structured",
        "--sparsity",
        "0.5",
        "--round-to",
        "0",
        "--finetune-epochs",
        "1",
        "--latency-runs",
        "3",
        "--out",
        str(out),
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("before", "after", "steps", "speed"):
        assert key in doc
    for key in (
        "accuracy",
        "per_class",
        "confusion",
        "params",
        "nonzero",
        "sparsity",
        "size_bytes",
        "macs",
        "latency_ms",
    ):
        assert key in doc["before"] and key in doc["after"]
    assert 1 - doc["after"]["params"] / doc["before"]["params"] == pytest.approx(0.5, abs=0.01)
    assert doc["after"]["macs"] < doc["before"]["macs"]
    (step,) = doc["steps"]
    assert step["target"] == 0.5 and 0.0 <= step["accuracy"] <= 1.0
    assert doc["speed"]["onnxruntime_fp32"]["ratio"] > 0
    assert doc["speed"]["pytorch_eager"]["ratio"] > 0
    # the checkpoint carries the parent's meta plus the pruning record and loads whole
    from edgectl.pipeline.checkpoint import load_checkpoint

    model, meta = load_checkpoint(out)
    assert meta["labels"] == json.loads(tiny_ckpt.with_suffix(".json").read_text())["labels"]
    p = meta["pruning"]
    assert (p["method"], p["regime"], p["target"], p["finetune_epochs"]) == (
        "structured",
        "oneshot",
        0.5,
        1,
    )
    assert p["parent"] == str(tiny_ckpt) and p["actual"] == pytest.approx(0.5, abs=0.01)
    assert 0 < p["channel_ratio"] < 1 and 0 < p["macs_reduction"] < 1
    assert meta["metrics"]["params"] == doc["after"]["params"]
    assert model(torch.zeros(1, 3, IMG, IMG)).shape == (1, 6)
    assert json.loads((out / "prune.json").read_text())["after"] == doc["after"]


def test_prune_unstructured_iterative_says_why_not_faster(
    cli_runner, tiny_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "u"
    res = _run(
        cli_runner,
        str(tiny_ckpt),
        "--method",
        "unstructured",
        "--regime",
        "iterative",
        "--sparsity",
        "0.5",
        "--step",
        "0.25",
        "--finetune-epochs",
        "1",
        "--latency-runs",
        "3",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    assert "zeros do not make dense kernels faster" in res.stdout
    assert "reached 0.5000" in res.stdout
    from edgectl.pipeline import pruning
    from edgectl.pipeline.checkpoint import load_checkpoint

    model, meta = load_checkpoint(out)
    assert pruning.weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)  # kept through tuning
    assert [s["target"] for s in meta["pruning"]["steps"]] == [0.25, 0.5]

    # pruning that model to less than it already is: refused, nothing written
    again = tmp_path / "again"
    res = cli_runner.invoke(
        main,
        ["prune", str(out), "--method", "unstructured", "--sparsity", "0.3", "--out", str(again)],
    )
    assert res.exit_code == 1
    assert "already at 0.500" in res.stderr and "Traceback" not in res.output
    assert not again.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "structured", "--sparsity", "1.2"], "--sparsity must be in (0, 1)"),
        (["--method", "structured", "--sparsity", "0"], "--sparsity must be in (0, 1)"),
        (["--method", "magnitude", "--sparsity", "0.5"], "unknown pruning method 'magnitude'"),
        (
            ["--method", "structured", "--regime", "weekly", "--sparsity", "0.5"],
            "unknown pruning regime 'weekly'",
        ),
    ],
)
def test_bad_input_is_one_line(cli_runner, tiny_ckpt: Path, tmp_path: Path, args, message) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "x"
    res = cli_runner.invoke(main, ["prune", str(tiny_ckpt), *args, "--out", str(out)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_missing_checkpoint_is_one_line(cli_runner, tmp_path: Path) -> None:
    res = cli_runner.invoke(
        main,
        [
            "prune",
            str(tmp_path / "nope"),
            "--method",
            "structured",
            "--sparsity",
            "0.5",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 1
    assert "checkpoint not found" in res.stderr
