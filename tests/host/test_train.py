from __future__ import annotations

import json
from pathlib import Path

import torch

from edgectl.cli import main
from edgectl.pipeline.checkpoint import load_checkpoint, read_meta
from edgectl.pipeline.data import DataConfig, load_datasets
from edgectl.pipeline.model import build_model
from edgectl.pipeline.training import accuracy, fine_tune, train


def _tiny(seed=0, n=32):
    return load_datasets(
        DataConfig.from_spec("synthetic", train_size=n, test_size=12, img_size=32, seed=seed)
    )


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(6, width_mult=0.25)


def test_training_is_deterministic_under_a_seed():
    ds = _tiny()
    a, b = _model(), _model()
    ha = train(a, ds, epochs=1, batch_size=16, seed=5, progress=False)
    hb = train(b, ds, epochs=1, batch_size=16, seed=5, progress=False)
    assert ha["epochs"][0]["loss"] == hb["epochs"][0]["loss"]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = _model()
    train(c, ds, epochs=1, batch_size=16, seed=6, progress=False)
    assert not torch.equal(c.classifier[-1].weight, a.classifier[-1].weight)


def test_training_fits_one_batch_and_keeps_contiguous_layout():
    # One batch of 16 seen 10 times: a working loop memorises it.
    ds = load_datasets(
        DataConfig.from_spec("synthetic", train_size=16, test_size=6, img_size=32), augment=False
    )
    m = _model()
    h = train(
        m, ds, epochs=10, batch_size=16, lr=3e-3, seed=0, progress=False, eval_each_epoch=False
    )
    losses = [r["loss"] for r in h["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    assert h["config"]["optimizer"] == "adam" and h["images_per_s"] > 0
    assert m.features[0][0].weight.is_contiguous()  # saved/exported as an ordinary model
    assert not m.training


def test_fine_tune_calls_after_step_every_step():
    ds = _tiny(n=48)
    m = _model()
    calls = []

    def zero_first_conv(model):  # what pruning does: re-apply a mask after every step
        calls.append(1)
        with torch.no_grad():
            model.features[0][0].weight[0].zero_()

    h = fine_tune(m, ds, epochs=2, batch_size=16, after_step=zero_first_conv, progress=False)
    assert len(calls) == 2 * (48 // 16)
    assert torch.count_nonzero(m.features[0][0].weight[0]) == 0
    assert 0.0 <= h["epochs"][-1]["test_accuracy"] <= 1.0
    assert 0.0 <= accuracy(m, ds.test) <= 1.0


def test_tiny_checkpoint_has_the_full_metadata(tiny_checkpoint, tiny_data_config):
    model, meta = load_checkpoint(tiny_checkpoint)
    assert meta == read_meta(tiny_checkpoint)  # the sidecar holds the same metadata
    for key in (
        "arch",
        "num_classes",
        "labels",
        "reject_labels",
        "input",
        "data",
        "train",
        "metrics",
        "created",
        "code_version",
    ):
        assert key in meta, key
    assert meta["arch"] == "mobilenet_v2" and meta["num_classes"] == 6
    assert meta["data"] == tiny_data_config.to_dict()
    assert meta["input"]["size"] == 32
    assert len(meta["train"]["history"]) == 1 and meta["train"]["epochs"] == 1
    assert 0.0 <= meta["metrics"]["accuracy"] <= 1.0
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 6)


def test_train_command_json(cli_runner, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--train-size",
        "24",
        "--test-size",
        "12",
        "--img-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--width-mult",
        "0.25",
        "--train-threads",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    res = cli_runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["checkpoint"] == str(out / "model.pt")
    assert (out / "model.pt").is_file() and (out / "model.json").is_file()
    assert payload["metrics"]["n"] == 12
    assert read_meta(out)["train"]["batch_size"] == 12
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_train_baseline_uses_the_callers_datasets(tiny_data_config, tmp_path, monkeypatch):
    """`build` hands its loaded datasets to the baseline trainer, so images rendered while
    training stay cached for the fine-tune (a second load rendered all of them again)."""
    import edgectl.pipeline.baseline as baseline
    from edgectl.pipeline.data import load_datasets

    datasets = load_datasets(tiny_data_config)

    def no_second_load(*_a, **_k):
        raise AssertionError("train_baseline loaded the data again")

    monkeypatch.setattr(baseline, "load_datasets", no_second_load)
    res = baseline.train_baseline(tiny_data_config, tmp_path, epochs=1, batch_size=16, lr=1e-3,
                                  width_mult=0.25, threads=1, progress=False, datasets=datasets)
    assert Path(res["checkpoint"]).is_file()

