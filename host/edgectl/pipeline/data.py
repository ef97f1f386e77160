"""Datasets for training and evaluation: the built-in synthetic set, CIFAR-10, image folders.

Every source is reduced to the same thing: a list of *frames* (``uint8 H×W×3`` RGB, the
same kind of array a camera delivers on the board) with integer labels. Torch datasets
wrap those frames with a torchvision transform. The test-time transform
(:func:`test_transform`) is Pillow bilinear resize, ``ToTensor``, ``Normalize`` — the
same computation as :func:`edge_common.preprocess.preprocess`, which the board runs
(``tests/common/test_preprocess.py`` checks they agree).

Data specs (``--data``):

- ``synthetic`` (default): :mod:`edge_common.synthetic`, rendered at the model input
  size; train images are indices ``0..N-1``, test images start at ``TEST_OFFSET`` so
  the two never overlap. Default sizes 16000 train / 1000 test.
- ``cifar10:DIR``: torchvision's ``CIFAR10`` reading ``DIR/cifar-10-batches-py``;
  downloads only with ``--download``. Frames are 32×32 and resized to the input size.
- ``folder:DIR``: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``, or just
  ``DIR/<class>/*`` split 80/20 per class with the seed.

Reject labels: the synthetic set says which labels are defects. For other data every
label is a reject except one named ``ok``, ``good`` or ``pass`` (any case); when there is
no such label, every label but the first is a reject.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import transforms

from edge_common import synthetic
from edge_common.errors import DataError, DataNotFoundError
from edge_common.preprocess import InputSpec

log = logging.getLogger(__name__)
BILINEAR = transforms.InterpolationMode.BILINEAR

KINDS = ("synthetic", "cifar10", "folder")
SYNTHETIC_TRAIN_SIZE = 16000  # from scratch, unique images beat extra epochs (docs/dataset.md)
SYNTHETIC_TEST_SIZE = 1000
TEST_OFFSET = 10_000_000  # synthetic test images start here; train images at 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp"}
OK_NAMES = ("ok", "good", "pass")
SPLIT_TEST_FRACTION = 0.2

Frame = tuple[np.ndarray, int]
# train frames, test frames, labels, reject labels, description
_Source = tuple[Sequence[Frame], Sequence[Frame], tuple[str, ...], tuple[str, ...], str]


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much, at what size: enough to rebuild the exact same datasets."""

    kind: str = "synthetic"
    path: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    img_size: int = 64
    seed: int = 0
    download: bool = False
    difficulty: float = synthetic.DEFAULT_DIFFICULTY

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown data kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        if self.kind != "synthetic" and not self.path:
            raise DataError(f"--data {self.kind} needs a folder: {self.kind}:DIR")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise DataError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        if int(self.img_size) <= 0:
            raise DataError(f"img-size must be a positive integer, got {self.img_size}")
        if not 0.0 <= float(self.difficulty) <= 1.0:
            raise DataError(f"difficulty must be in [0, 1], got {self.difficulty}")

    @classmethod
    def from_spec(
        cls,
        spec: str,
        train_size: int | None = None,
        test_size: int | None = None,
        img_size: int = 64,
        seed: int = 0,
        download: bool = False,
        difficulty: float = synthetic.DEFAULT_DIFFICULTY,
    ) -> DataConfig:
        """Parse ``synthetic``, ``cifar10:DIR`` or ``folder:DIR``."""
        kind, _, path = (spec or "").strip().partition(":")
        kind = kind.lower()
        if kind not in KINDS:
            raise DataError(
                f"unknown data spec {spec!r} (expected synthetic, cifar10:DIR or folder:DIR)"
            )
        if kind == "synthetic" and path:
            raise DataError(f"the synthetic set takes no folder: {spec!r}")
        if path:  # absolute, so a checkpoint's data config works from any folder
            path = str(Path(path).expanduser().resolve())
        return cls(
            kind,
            path or None,
            train_size,
            test_size,
            int(img_size),
            int(seed),
            bool(download),
            float(difficulty),
        )

    @property
    def spec(self) -> str:
        return self.kind if self.kind == "synthetic" else f"{self.kind}:{self.path}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> DataConfig:
        d = asdict(self)
        d.update(changes)
        return DataConfig(**d)


@dataclass
class Datasets:
    """What a training or evaluation run needs. ``train`` is a ``Subset`` of the frames
    while a search holds images out (``deadline``) or the study fine-tunes on a chunk."""

    train: Samples
    test: FrameDataset
    labels: tuple[str, ...]
    reject_labels: tuple[str, ...]
    input_spec: InputSpec
    description: str


class FrameDataset(Dataset[tuple[torch.Tensor, int]]):
    """Frames (``uint8 H×W×3`` RGB) and labels, turned into tensors by ``transform``."""

    def __init__(
        self, frames: Sequence[Frame], transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.frames = frames
        self.transform = transform
        self._targets: list[int] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> Frame:
        return self.frames[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.frames[i]
        return self.transform(Image.fromarray(img)), int(label)

    @property
    def targets(self) -> list[int]:
        """Labels, without decoding or rendering images."""
        if self._targets is None:
            self._targets = _labels_of(self.frames)
        return self._targets


Samples = FrameDataset | Subset[tuple[torch.Tensor, int]]  # what training and predict read


def test_transform(spec: InputSpec) -> Callable[[Image.Image], torch.Tensor]:
    """torchvision's test-time transform; equals ``edge_common.preprocess.preprocess``."""
    return transforms.Compose(
        [
            transforms.Resize((spec.size, spec.size), interpolation=BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


class _RandomRot90:
    """Rotate a PIL image by a random multiple of 90° (parts on a belt have no "up")."""

    def __call__(self, img: Image.Image) -> Image.Image:
        k = int(torch.randint(4, (1,)))
        return img.rotate(90 * k) if k else img


def train_transform(spec: InputSpec, kind: str) -> Callable[[Image.Image], torch.Tensor]:
    """Light augmentation: flips (parts seen from above are valid both ways; photos
    only left-right), then the test-time transform."""
    flips: list[Any] = [transforms.RandomHorizontalFlip()]
    if kind == "synthetic":
        flips.append(transforms.RandomVerticalFlip())
        flips.append(_RandomRot90())
    return transforms.Compose(
        [
            transforms.Resize((spec.size, spec.size), interpolation=BILINEAR),
            *flips,
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


def reject_labels_for(labels: Sequence[str]) -> tuple[str, ...]:
    """Every label but the "good" one (``ok``/``good``/``pass``), else all but the first."""
    good = next((lb for lb in labels if lb.lower() in OK_NAMES), None)
    if good is None:
        good = labels[0]
    return tuple(lb for lb in labels if lb != good)


# --- sources: each returns (train frames, test frames, labels, reject labels, description) ---


class _Subset(Sequence[Frame]):
    def __init__(self, base: Sequence[Frame], index: Sequence[int]) -> None:
        self.base, self.indices = base, list(index)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Frame:  # type: ignore[override]  # no slices
        return self.base[self.indices[i]]

    def labels(self) -> list[int]:
        base = _labels_of(self.base)
        return [base[i] for i in self.indices]


def _labels_of(frames: Sequence[Frame]) -> list[int]:
    if isinstance(frames, synthetic.SyntheticSet):
        return frames.targets()
    if isinstance(frames, (_Subset, _ArrayFrames, _FileFrames)):
        return frames.labels()
    return [int(frames[i][1]) for i in range(len(frames))]


def _take(base: Sequence[Frame], n: int | None, seed: int, what: str) -> Sequence[Frame]:
    """A seeded random subset of ``n`` items (all of them when ``n`` is None or too big)."""
    if n is None or n >= len(base):
        if n is not None and n > len(base):
            log.warning("%s: asked for %d images, only %d available; using all", what, n, len(base))
        return base
    idx = np.sort(np.random.default_rng([seed, len(base)]).permutation(len(base))[:n])
    return _Subset(base, idx.tolist())


def _synthetic(cfg: DataConfig) -> _Source:
    ntr = cfg.train_size or SYNTHETIC_TRAIN_SIZE
    nte = cfg.test_size or SYNTHETIC_TEST_SIZE
    train = synthetic.SyntheticSet(
        ntr, cfg.seed, cfg.img_size, cfg.difficulty, offset=0, cache=True
    )
    test = synthetic.SyntheticSet(
        nte, cfg.seed, cfg.img_size, cfg.difficulty, offset=TEST_OFFSET, cache=True
    )
    desc = (
        f"synthetic inspection set (seed {cfg.seed}, difficulty {cfg.difficulty:g}, "
        f"{ntr} train / {nte} test, {cfg.img_size}px)"
    )
    return train, test, synthetic.LABELS, synthetic.REJECT_LABELS, desc


class _ArrayFrames(Sequence[Frame]):
    def __init__(self, data: np.ndarray, targets: Sequence[int]) -> None:
        self.data, self.targets = data, list(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Frame:  # type: ignore[override]  # no slices
        return self.data[i], int(self.targets[i])

    def labels(self) -> list[int]:
        return [int(t) for t in self.targets]


def _cifar10(cfg: DataConfig) -> _Source:
    from torchvision.datasets import CIFAR10

    root = Path(str(cfg.path)).expanduser()
    if not cfg.download and not root.is_dir():
        raise DataNotFoundError(f"CIFAR-10 folder not found: {root} (pass --download to fetch it)")
    sets = []
    for is_train in (True, False):
        try:
            sets.append(CIFAR10(str(root), train=is_train, download=cfg.download))
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataNotFoundError(
                f"CIFAR-10 not found or corrupted in {root / CIFAR10.base_folder} ({err}); "
                "pass --download to fetch it (needs network)"
            ) from err
        except OSError as err:  # network errors while downloading (URLError is an OSError)
            raise DataError(f"cannot download CIFAR-10 into {root}: {err}") from err
    tr, te = sets
    labels = tuple(tr.classes)
    train = _take(_ArrayFrames(tr.data, tr.targets), cfg.train_size, cfg.seed, "cifar10 train")
    test = _take(_ArrayFrames(te.data, te.targets), cfg.test_size, cfg.seed + 1, "cifar10 test")
    desc = (
        f"CIFAR-10 from {root} ({len(train)} train / {len(test)} test, resized to {cfg.img_size}px)"
    )
    return train, test, labels, reject_labels_for(labels), desc


class _FileFrames(Sequence[Frame]):
    """Image files read on demand, converted to RGB; an unreadable file is a DataError."""

    def __init__(self, items: Sequence[tuple[Path, int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Frame:  # type: ignore[override]  # no slices
        path, label = self.items[i]
        return read_image(path), label

    def labels(self) -> list[int]:
        return [label for _, label in self.items]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8 H×W×3`` RGB."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def _class_folders(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image files>)")
    out: dict[str, list[Path]] = {}
    for c in classes:
        files = sorted(f for f in c.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {c} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:  # read headers now, so a non-image fails here and not mid-epoch
            try:
                with Image.open(f):
                    pass
            except (OSError, UnidentifiedImageError) as err:
                raise DataError(f"cannot read image {f}: {err}") from err
        out[c.name] = files
    return out


def _folder(cfg: DataConfig) -> _Source:
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data folder not found: {root}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        tr, te = _class_folders(root / "train"), _class_folders(root / "test")
        if sorted(tr) != sorted(te):
            raise DataError(
                f"{root}: train and test have different classes ({sorted(tr)} vs {sorted(te)})"
            )
        labels = tuple(sorted(tr))
        train_items = [(f, labels.index(c)) for c in labels for f in tr[c]]
        test_items = [(f, labels.index(c)) for c in labels for f in te[c]]
        layout = "train/ and test/"
    else:
        folders = _class_folders(root)
        labels = tuple(sorted(folders))
        rng = np.random.default_rng(cfg.seed)
        train_items, test_items = [], []
        for k, c in enumerate(labels):
            files = folders[c]
            order = rng.permutation(len(files))
            n_test = int(round(len(files) * SPLIT_TEST_FRACTION)) if len(files) > 1 else 0
            n_test = max(n_test, 1) if len(files) > 1 else 0
            test_items += [(files[i], k) for i in sorted(order[:n_test])]
            train_items += [(files[i], k) for i in sorted(order[n_test:])]
        layout = f"one set split {1 - SPLIT_TEST_FRACTION:.0%}/{SPLIT_TEST_FRACTION:.0%} per class"
    if len(labels) < 2:
        raise DataError(f"{root}: need at least 2 classes, found {list(labels)}")
    train = _take(_FileFrames(train_items), cfg.train_size, cfg.seed, "folder train")
    test = _take(_FileFrames(test_items), cfg.test_size, cfg.seed + 1, "folder test")
    if len(test) == 0:
        raise DataError(f"{root}: no test images (each class needs at least 2 images to split)")
    desc = (
        f"image folder {root} ({layout}; {len(train)} train / {len(test)} test, {cfg.img_size}px)"
    )
    return train, test, labels, reject_labels_for(labels), desc


_SOURCES = {"synthetic": _synthetic, "cifar10": _cifar10, "folder": _folder}


def input_spec_for(cfg: DataConfig) -> InputSpec:
    """The model input: ImageNet mean/std (so ImageNet weights fit), RGB, NCHW."""
    return InputSpec(size=cfg.img_size)


def load_datasets(cfg: DataConfig, augment: bool = True) -> Datasets:
    """Build train and test torch datasets for ``cfg`` (train augmented unless told not to)."""
    train, test, labels, reject, desc = _SOURCES[cfg.kind](cfg)
    spec = input_spec_for(cfg)
    tf_test = test_transform(spec)
    tf_train = train_transform(spec, cfg.kind) if augment else tf_test
    return Datasets(
        train=FrameDataset(train, tf_train),
        test=FrameDataset(test, tf_test),
        labels=tuple(labels),
        reject_labels=tuple(reject),
        input_spec=spec,
        description=desc,
    )


def raw_test_images(source: DataConfig | Datasets, n: int | None = None) -> Iterator[Frame]:
    """The first ``n`` test frames as ``(uint8 H×W×3 RGB, label)``, before preprocessing.

    For INT8 calibration and bundle test vectors: feed them to ``preprocess``. Given loaded
    ``Datasets`` it reads their test frames (a build loads its data once); given a
    ``DataConfig`` it opens the source.
    """
    if isinstance(source, Datasets):
        frames: Sequence[Frame] = source.test.frames
    else:
        frames = _SOURCES[source.kind](source)[1]
    count = len(frames) if n is None else min(int(n), len(frames))
    for i in range(count):
        yield frames[i]


def class_counts(ds: FrameDataset, labels: Sequence[str]) -> dict[str, int]:
    """Images per class label."""
    counts = np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(labels))
    return {lb: int(counts[i]) for i, lb in enumerate(labels)}


def export_image_folder(
    cfg: DataConfig,
    out: str | Path,
    split: str = "test",
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write a split as PNGs in class folders (``out/<class>/NNNNNN.png``).

    ``split="all"`` writes ``out/train/<class>`` and ``out/test/<class>``: the layout
    ``folder:DIR`` reads back. Everything is written to a temp folder beside ``out``
    and renamed into place at the end, so a failure leaves no half-written folder.
    Returns ``{split: {label: count}}``.
    """
    import shutil
    import tempfile

    from tqdm.auto import tqdm

    if split not in ("train", "test", "all"):
        raise DataError(f"split must be train, test or all, got {split!r}")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be a positive integer, got {limit}")
    target = Path(out)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not overwrite:
        raise DataError(f"{target} already exists and is not empty (use --overwrite)")
    train, test, labels, _, _ = _SOURCES[cfg.kind](cfg)
    parts = {"train": train, "test": test}
    chosen = ["train", "test"] if split == "all" else [split]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    counts: dict[str, dict[str, int]] = {}
    try:
        for name in chosen:
            frames = parts[name]
            base = tmp / name if split == "all" else tmp
            n = len(frames) if limit is None else min(limit, len(frames))
            counts[name] = {lb: 0 for lb in labels}
            for lb in labels:
                (base / lb).mkdir(parents=True, exist_ok=True)
            for i in tqdm(
                range(n), desc=f"export {name}", unit="img", disable=not progress, leave=False
            ):
                img, label = frames[i]
                Image.fromarray(img).save(base / labels[label] / f"{i:06d}.png")
                counts[name][labels[label]] += 1
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return counts
