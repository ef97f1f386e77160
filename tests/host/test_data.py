from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from edge_common.errors import DataError, DataNotFoundError
from edge_common.preprocess import preprocess
from edge_common.synthetic import LABELS, REJECT_LABELS
from edgectl.pipeline.data import (
    DataConfig,
    class_counts,
    export_image_folder,
    load_datasets,
    raw_test_images,
    reject_labels_for,
)


def test_spec_parsing_and_round_trip(tmp_path):
    cfg = DataConfig.from_spec("folder:" + str(tmp_path), train_size=5, img_size=40, seed=3)
    assert (cfg.kind, cfg.path, cfg.train_size, cfg.test_size) == ("folder", str(tmp_path), 5, None)
    d = cfg.to_dict()
    assert d["spec"] == f"folder:{tmp_path}"
    assert DataConfig.from_dict(d) == cfg
    assert DataConfig.from_spec("synthetic").spec == "synthetic"


@pytest.mark.parametrize(
    ("spec", "kw", "match"),
    [
        ("imagenet", {}, "unknown data spec"),
        ("synthetic:/x", {}, "takes no folder"),
        ("folder", {}, "needs a folder"),
        ("synthetic", {"train_size": -1}, "train-size must be a positive"),
        ("synthetic", {"test_size": 0}, "test-size must be a positive"),
        ("synthetic", {"img_size": -5}, "img-size must be a positive"),
    ],
)
def test_bad_specs(spec, kw, match):
    with pytest.raises(DataError, match=match):
        DataConfig.from_spec(spec, **kw)


def test_synthetic_datasets(tiny_data_config):
    ds = load_datasets(tiny_data_config)
    assert ds.labels == LABELS and ds.reject_labels == REJECT_LABELS
    assert (len(ds.train), len(ds.test)) == (48, 24)
    x, y = ds.test[0]
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point and isinstance(y, int)
    assert ds.input_spec.size == 32
    assert set(class_counts(ds.test, ds.labels).values()) == {4}  # balanced
    train_imgs = {ds.train.frame(i)[0].tobytes() for i in range(len(ds.train))}
    assert not any(ds.test.frame(i)[0].tobytes() in train_imgs for i in range(len(ds.test)))
    again = load_datasets(tiny_data_config)
    assert np.array_equal(again.test.frame(5)[0], ds.test.frame(5)[0])


def test_raw_test_images_preprocess_to_the_test_tensors(tiny_data_config):
    ds = load_datasets(tiny_data_config, augment=False)
    raw = list(raw_test_images(tiny_data_config, 3))
    assert len(raw) == 3
    for i, (frame, label) in enumerate(raw):
        assert frame.dtype == np.uint8 and frame.shape == (32, 32, 3)
        x, y = ds.test[i]
        assert label == y
        np.testing.assert_allclose(preprocess(frame, ds.input_spec)[0], x.numpy(), atol=1e-5)
    # from the loaded set (what a build passes: no second load), the same frames
    loaded = list(raw_test_images(ds, 3))
    assert [lb for _, lb in loaded] == [lb for _, lb in raw]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(loaded, raw, strict=True))


def test_reject_labels_rule():
    assert reject_labels_for(["defect", "Good", "dent"]) == ("defect", "dent")
    assert reject_labels_for(["a", "b", "c"]) == ("b", "c")


def _write_images(folder, n, size=(20, 16), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")


def test_folder_with_one_set_is_split_per_class(tmp_path):
    _write_images(tmp_path / "ok", 10)
    _write_images(tmp_path / "scratch", 5, seed=1)
    cfg = DataConfig.from_spec(f"folder:{tmp_path}", img_size=24, seed=1)
    ds = load_datasets(cfg)
    assert ds.labels == ("ok", "scratch") and ds.reject_labels == ("scratch",)
    assert class_counts(ds.test, ds.labels) == {"ok": 2, "scratch": 1}
    assert class_counts(ds.train, ds.labels) == {"ok": 8, "scratch": 4}
    assert ds.test[0][0].shape == (3, 24, 24)  # 20×16 files resized
    frame, _ = ds.test.frame(0)
    assert frame.shape == (16, 20, 3)  # raw frames keep their size
    same = load_datasets(cfg)
    assert [ds.test.frames.items[i] for i in range(3)] == [
        same.test.frames.items[i] for i in range(3)
    ]


def test_folder_with_train_and_test(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        _write_images(tmp_path / split / "good", n)
        _write_images(tmp_path / split / "bad", n, seed=2)
    ds = load_datasets(DataConfig.from_spec(f"folder:{tmp_path}", img_size=16))
    assert ds.labels == ("bad", "good") and ds.reject_labels == ("bad",)
    assert (len(ds.train), len(ds.test)) == (8, 4)


def test_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        load_datasets(DataConfig.from_spec(f"folder:{tmp_path / 'nope'}"))
    _write_images(tmp_path / "ok", 3)
    (tmp_path / "chip").mkdir()
    with pytest.raises(DataError, match="chip has no images"):
        load_datasets(DataConfig.from_spec(f"folder:{tmp_path}"))
    (tmp_path / "chip" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_datasets(DataConfig.from_spec(f"folder:{tmp_path}"))


def _write_tiny_cifar(root, n_per_batch=4, n_test=6):
    """CIFAR-10 in its real on-disk format (pickled dicts, rows of 3072 CHW bytes)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]

    def batch(n, label):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        return {
            "batch_label": label,
            "labels": labels,
            "data": data,
            "filenames": [f"{i}.png" for i in range(n)],
        }

    batches = {}
    for k in range(1, 6):
        batches[f"data_batch_{k}"] = batch(n_per_batch, f"training batch {k} of 5")
    batches["test_batch"] = batch(n_test, "testing batch 1 of 1")
    for name, obj in batches.items():
        (base / name).write_bytes(pickle.dumps(obj))
    (base / "batches.meta").write_bytes(
        pickle.dumps({"label_names": names, "num_cases_per_batch": 4, "num_vis": 3072})
    )
    return batches


def test_cifar10_from_a_local_folder(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    batches = _write_tiny_cifar(tmp_path)
    # torchvision checks each file's md5 against the real CIFAR-10 release, which a tiny
    # set cannot match. Only that check is patched here; the stock CIFAR10 class still
    # unpickles the batches, reshapes CHW rows to HWC and reads the label names.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    cfg = DataConfig.from_spec(f"cifar10:{tmp_path}", img_size=40, test_size=4)
    ds = load_datasets(cfg)
    assert ds.labels[0] == "airplane" and len(ds.labels) == 10
    assert ds.reject_labels == ds.labels[1:]
    assert (len(ds.train), len(ds.test)) == (20, 4)
    assert ds.test[0][0].shape == (3, 40, 40)
    frame, label = ds.train.frame(0)
    first = batches["data_batch_1"]
    assert np.array_equal(frame, first["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == first["labels"][0]


def test_cifar10_missing_is_a_clear_error_without_network(tmp_path):
    with pytest.raises(DataNotFoundError, match="--download"):
        load_datasets(DataConfig.from_spec(f"cifar10:{tmp_path / 'none'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="--download"):
        load_datasets(DataConfig.from_spec(f"cifar10:{tmp_path / 'empty'}"))


def test_export_round_trips_through_folder_spec(tiny_data_config, tmp_path):
    out = tmp_path / "set"
    counts = export_image_folder(tiny_data_config, out, split="all", limit=12, progress=False)
    assert sum(counts["train"].values()) == 12 and sum(counts["test"].values()) == 12
    ds = load_datasets(DataConfig.from_spec(f"folder:{out}", img_size=32))
    assert set(ds.labels) == set(LABELS)
    assert len(ds.train) == 12 and len(ds.test) == 12
    # PNG is lossless: the exported frame is the rendered one
    src = load_datasets(tiny_data_config).test.frame(0)
    path = out / "test" / LABELS[src[1]] / "000000.png"
    assert np.array_equal(np.asarray(Image.open(path)), src[0])
    with pytest.raises(DataError, match="already exists"):
        export_image_folder(tiny_data_config, out, limit=1, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
