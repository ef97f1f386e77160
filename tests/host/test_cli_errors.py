"""Bad input through the CLI: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import pytest
import torch

from edgectl.cli import main


def _check(res, code_nonzero_msg):
    assert res.exit_code != 0
    assert code_nonzero_msg in res.output
    assert "Traceback" not in res.output


def _folder(tmp_path, classes):
    import numpy as np
    from PIL import Image

    for c, n in classes.items():
        (tmp_path / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(tmp_path / c / f"{i}.png")
    return tmp_path


def test_unknown_data_spec(cli_runner):
    _check(
        cli_runner.invoke(main, ["data", "show", "--data", "imagenet:/x"]),
        "unknown data spec 'imagenet:/x'",
    )


def test_missing_folder(cli_runner, tmp_path):
    _check(
        cli_runner.invoke(main, ["data", "show", "--data", f"folder:{tmp_path}/nope"]),
        "data folder not found",
    )


def test_empty_class_folder(cli_runner, tmp_path):
    root = _folder(tmp_path, {"ok": 2})
    (root / "chip").mkdir()
    _check(cli_runner.invoke(main, ["data", "show", "--data", f"folder:{root}"]), "has no images")


def test_unreadable_image(cli_runner, tmp_path):
    root = _folder(tmp_path, {"ok": 2, "bad": 2})
    (root / "bad" / "x.jpg").write_bytes(b"garbage")
    _check(
        cli_runner.invoke(main, ["data", "show", "--data", f"folder:{root}"]), "cannot read image"
    )


def test_missing_cifar_says_download(cli_runner, tmp_path):
    _check(cli_runner.invoke(main, ["data", "show", "--data", f"cifar10:{tmp_path}"]), "--download")


@pytest.mark.parametrize("flag", ["--train-size", "--test-size", "--img-size"])
def test_negative_size(cli_runner, flag):
    _check(cli_runner.invoke(main, ["data", "show", flag, "-3"]), "must be a positive integer")


def test_checkpoint_that_is_not_ours(cli_runner, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    _check(cli_runner.invoke(main, ["eval", str(junk)]), "is not an edgectl checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    _check(cli_runner.invoke(main, ["eval", str(foreign)]), "is not an edgectl checkpoint")
    _check(cli_runner.invoke(main, ["eval", str(tmp_path / "missing")]), "checkpoint not found")


def test_eval_on_data_with_other_labels(cli_runner, tiny_checkpoint, tmp_path):
    root = _folder(tmp_path, {"ok": 3, "bad": 3})
    _check(
        cli_runner.invoke(
            main, ["eval", str(tiny_checkpoint), "--data", f"folder:{root}", "--no-latency"]
        ),
        "was trained on labels",
    )


def test_bad_weights_in_train(cli_runner, tmp_path):
    res = cli_runner.invoke(
        main,
        [
            "train",
            "--weights",
            str(tmp_path / "none.pth"),
            "--train-size",
            "12",
            "--test-size",
            "6",
            "--img-size",
            "32",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    _check(res, "weights file not found")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_export_refuses_existing_folder(cli_runner, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    _check(
        cli_runner.invoke(
            main, ["data", "export", "--out", str(tmp_path / "out"), "--test-size", "6"]
        ),
        "already exists",
    )
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
