from __future__ import annotations

import numpy as np
import pytest

from edge_common import synthetic
from edge_common.synthetic import LABELS, REJECT_LABELS, SyntheticSet, render


def test_labels_and_rejects():
    assert LABELS == ("ok", "scratch", "crack", "spot", "chip", "missing_hole")
    assert REJECT_LABELS == LABELS[1:]


def test_render_is_deterministic_and_seed_dependent():
    a, la = render(7, seed=3)
    b, lb = render(7, seed=3)
    c, _ = render(7, seed=4)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert la == lb == 7 % len(LABELS)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", [17, 32, 100, 200])
def test_any_size(size):
    img, _ = render(1, 0, size=size)
    assert img.shape == (size, size, 3)
    assert img.std() > 5  # a picture, not a flat fill


def test_forced_label_and_bad_arguments():
    assert render(0, 0, label=4)[1] == 4
    with pytest.raises(ValueError):
        render(0, 0, label=6)
    with pytest.raises(ValueError):
        render(-1, 0)
    with pytest.raises(ValueError):
        render(0, 0, size=0)


def test_defect_changes_the_part_not_just_the_label():
    # Same index and seed, so the same belt and pose: only the defect differs.
    ok, _ = render(12, 0, label=0, difficulty=0.0)
    for k in range(1, len(LABELS)):
        bad, lab = render(12, 0, label=k, difficulty=0.0)
        assert lab == k
        diff = np.abs(ok.astype(int) - bad.astype(int)).max(axis=2)
        assert (diff > 40).sum() >= 3, LABELS[k]


def test_difficulty_raises_noise():
    # The flat belt corner's pixel-to-pixel variation grows with sensor noise.
    def roughness(d: float) -> float:
        vals = []
        for i in range(12):
            img = render(i, 0, difficulty=d)[0].astype(float)
            vals.append(np.abs(np.diff(img, axis=1)).mean())
        return float(np.mean(vals))

    assert roughness(1.0) > roughness(0.0) * 1.5


def test_synthetic_set_sequence_and_cache():
    s = SyntheticSet(12, seed=1, size=32, offset=100, cache=True)
    assert len(s) == 12
    img, label = s[0]
    assert np.array_equal(img, render(100, 1, size=32)[0])
    assert s[0][0] is img  # cached
    assert s[-1][1] == (100 + 11) % len(LABELS)
    assert [lab for _, lab in s] == s.targets()
    assert sorted(set(s.targets())) == list(range(len(LABELS)))  # balanced, all classes
    assert len(s[2:5]) == 3
    with pytest.raises(IndexError):
        s[12]


def test_train_and_test_offsets_do_not_overlap():
    a = SyntheticSet(3, seed=0, size=16, offset=0)
    b = SyntheticSet(3, seed=0, size=16, offset=10_000_000)
    assert all(not np.array_equal(a[i][0], b[i][0]) for i in range(3))


def test_knobs_monotonic():
    easy, hard = synthetic._knobs(0.0), synthetic._knobs(1.0)
    assert easy.defect_contrast > hard.defect_contrast
    assert easy.noise_sigma < hard.noise_sigma
    assert easy.distractors <= hard.distractors
