"""The built-in synthetic inspection dataset: manufactured parts on a conveyor belt.

Each image shows one part (washer, gear, hex nut or L-bracket) lying on a textured
belt, at a random position, rotation and scale, under varying light, with motion and
optics blur and sensor noise. The label says what is wrong with it:

====  ==============  ================================================================
 0    ``ok``          a good part (may carry harmless machining marks and glints)
 1    ``scratch``     a thin bright line where the coating is scraped off
 2    ``crack``       a dark jagged line running in from the edge
 3    ``spot``        a dark stain (rust, oil) on the part
 4    ``chip``        a bite missing from the outline
 5    ``missing_hole`` one of the part's holes was never punched
====  ==============  ================================================================

Everything is numpy (+ Pillow for the final blur), deterministic in ``(index, seed,
size, difficulty)`` through a per-index generator ``np.random.default_rng([seed,
index])``, so any image can be rendered alone, in any order, on the host or on the
board (whose synthetic camera uses this module). Labels cycle with the index
(``index % 6``), so every split is class-balanced. A 64×64 image costs about 2.5 ms
of CPU on an x86 server core: the part is drawn at twice the output size and
box-downsampled, which gives anti-aliased outlines without a rasteriser.

**Difficulty.** ``difficulty`` is a float in ``[0, 1]`` (``DEFAULT_DIFFICULTY`` is what
the defaults of ``edgectl train`` were tuned on: MobileNetV2 lands at roughly 90–97 %
test accuracy;
measured: 91.4 % with 16000 training images, see docs/dataset.md). Raising it makes
defects smaller and fainter and the nuisances
stronger: more sensor noise and blur, wider lighting and colour variation, more dirt,
seams and glints that look a little like defects. ``0`` gives large, high-contrast
defects on a clean belt (near 100 % accuracy); ``1`` is hard even for a person at
64×64. The knobs are all in :func:`_knobs`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
from PIL import Image, ImageFilter

LABELS: tuple[str, ...] = ("ok", "scratch", "crack", "spot", "chip", "missing_hole")
REJECT_LABELS: tuple[str, ...] = LABELS[1:]
SHAPES: tuple[str, ...] = ("washer", "gear", "hex_nut", "bracket")
DEFAULT_DIFFICULTY = 0.0
DEFAULT_SIZE = 64

_F = np.float32


@dataclass(frozen=True)
class _Knobs:
    """Rendering parameters derived from ``difficulty`` (see module docstring)."""

    defect_contrast: float  # 0..1 intensity change a defect causes at its core
    defect_scale: float  # multiplies defect sizes (lengths, radii)
    noise_sigma: float  # sensor noise, in 0..255 units (varies per image up to this)
    blur_max: float  # optics blur sigma, output pixels (up to this)
    motion_max: float  # conveyor motion blur, output pixels (up to this)
    light_range: float  # +- brightness variation, and directional gradient strength
    tint_range: float  # +- per-channel colour cast
    distractors: int  # max dirt spots / seams / glints per image


def _knobs(difficulty: float) -> _Knobs:
    d = float(min(max(difficulty, 0.0), 1.0))

    def lerp(a: float, b: float) -> float:
        return a + (b - a) * d

    return _Knobs(
        defect_contrast=lerp(1.0, 0.14),
        defect_scale=lerp(3.0, 0.6),
        noise_sigma=lerp(2.0, 14.0),
        blur_max=lerp(0.2, 1.1),
        motion_max=lerp(0.0, 2.0),
        light_range=lerp(0.08, 0.35),
        tint_range=lerp(0.02, 0.12),
        distractors=int(round(lerp(0, 6))),
    )


# ---------------------------------------------------------------------------------------
# Shapes as signed distance functions in part-local units (the part spans about [-1, 1]).
# They take arrays of coordinates so the same code draws the grid and samples points.


def _sd_box(u: np.ndarray, v: np.ndarray, cu: float, cv: float, hu: float, hv: float) -> np.ndarray:
    qu = np.abs(u - cu) - hu
    qv = np.abs(v - cv) - hv
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0)


def _outline(shape: str, u: np.ndarray, v: np.ndarray, teeth: int) -> np.ndarray:
    """Signed distance (negative inside) to the outer outline of ``shape``."""
    if shape == "washer":
        return np.hypot(u, v) - 1.0
    if shape == "gear":
        rho = np.hypot(u, v)
        theta = np.arctan2(v, u)
        r_out = 0.84 + 0.14 * np.clip(2.5 * np.cos(teeth * theta), -1.0, 1.0)
        return (rho - r_out) * 0.8
    if shape == "hex_nut":
        a = np.abs(u)
        b = np.abs(0.5 * u + 0.8660254 * v)
        c = np.abs(-0.5 * u + 0.8660254 * v)
        return np.maximum(np.maximum(a, b), c) - 0.88
    # bracket: an L of two bars, shifted so its middle sits near the origin
    return np.minimum(
        _sd_box(u, v, 0.0, -0.62, 0.95, 0.33),
        _sd_box(u, v, -0.62, 0.0, 0.33, 0.95),
    )


def _holes(shape: str) -> list[tuple[float, float, float]]:
    """Holes ``(u, v, radius)`` a good part has."""
    if shape == "washer":
        return [(0.0, 0.0, 0.42)]
    if shape == "gear":
        return [(0.0, 0.0, 0.3)]
    if shape == "hex_nut":
        return [(0.0, 0.0, 0.4)]
    return [(0.55, -0.62, 0.17), (-0.62, 0.55, 0.17), (-0.62, -0.62, 0.17)]


def _seg_dist(u: np.ndarray, v: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance from points to the segment p0–p1."""
    a0, a1, b0, b1 = float(p0[0]), float(p0[1]), float(p1[0]), float(p1[1])
    du, dv = b0 - a0, b1 - a1
    ll = du * du + dv * dv + 1e-12
    t = np.clip(((u - a0) * du + (v - a1) * dv) * (1.0 / ll), 0.0, 1.0)
    return np.hypot(u - (a0 + t * du), v - (a1 + t * dv))


def _inside_points(
    rng: np.random.Generator,
    shape: str,
    teeth: int,
    holes: list[tuple[float, float, float]],
    margin: float,
) -> np.ndarray:
    """A point well inside the part's material (not in a hole, not at the edge)."""
    cand = rng.uniform(-1.0, 1.0, size=(96, 2))
    ok = _outline(shape, cand[:, 0], cand[:, 1], teeth) < -margin
    for hu, hv, hr in holes:
        ok &= np.hypot(cand[:, 0] - hu, cand[:, 1] - hv) > hr + margin
    idx = np.flatnonzero(ok)
    return cand[idx[0]] if idx.size else np.array([0.0, -0.62 if shape == "bracket" else 0.7])


def _edge_point(rng: np.random.Generator, shape: str, teeth: int) -> np.ndarray:
    """A point on the outer outline, in a random direction from the centre."""
    phi = rng.uniform(0, 2 * math.pi)
    if shape == "bracket":  # aim at the L's arms, not at its empty quadrant
        arms = [rng.uniform(-0.5 * math.pi, 0.1), rng.uniform(0.5 * math.pi, 1.07 * math.pi)]
        phi = float(rng.choice(arms))
    r = np.linspace(0.0, 1.5, 151)
    u, v = r * math.cos(phi), r * math.sin(phi)
    inside = np.flatnonzero(_outline(shape, u, v, teeth) < 0)
    k = inside[-1] if inside.size else 100
    return np.array([u[k], v[k]])


# ---------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly (Pillow)."""
    grid = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    img = Image.fromarray(grid, mode="L").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=_F) / 127.5 - 1.0


def _motion_blur(img: np.ndarray, length: int, horizontal: bool) -> np.ndarray:
    """Box blur of ``length`` pixels along the belt direction (cumulative sums)."""
    if length <= 1:
        return img
    if horizontal:
        img = img.transpose(1, 0, 2)
    n = img.shape[0]
    pad = np.pad(img, ((length // 2, length - 1 - length // 2), (0, 0), (0, 0)), mode="edge")
    out = pad[0:n].copy()
    for k in range(1, length):
        out += pad[k : k + n]
    out *= _F(1.0 / length)
    return out.transpose(1, 0, 2) if horizontal else out


@functools.lru_cache(maxsize=8)
def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:res, 0:res].astype(_F)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def render(
    index: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    difficulty: float = DEFAULT_DIFFICULTY,
    label: int | None = None,
) -> tuple[np.ndarray, int]:
    """Render image ``index`` of the set ``seed``: ``(uint8 size×size×3 RGB, label index)``.

    ``label`` forces a class (the board's synthetic camera uses it to set a defect
    rate); by default it is ``index % len(LABELS)``.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if label is None:
        label = index % len(LABELS)
    if not 0 <= label < len(LABELS):
        raise ValueError(f"label must be in 0..{len(LABELS) - 1}, got {label}")
    k = _knobs(difficulty)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    # The defect draws from its own stream, so the same index with another label shows
    # the very same part, belt and light: only the defect differs.
    drng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 1])
    ss = 2 if size <= 160 else 1  # supersampling factor (the downsample below assumes 2)
    res = size * ss
    name = LABELS[label]

    # --- belt: grey-green rubber, ridges across the motion, smooth blotches, dirt ---
    horizontal = bool(rng.integers(2))  # belt runs left-right or top-bottom
    ys, xs = _grid(res)
    along, across = (xs, ys) if horizontal else (ys, xs)
    belt_base = rng.uniform(0.18, 0.42)
    belt_col = (belt_base * (1 + rng.uniform(-0.15, 0.15, 3))).astype(_F)
    ridge_period = rng.uniform(3.0, 8.0) * ss
    ridges = 0.04 * np.sin(2 * math.pi * along / ridge_period + rng.uniform(0, 6.3))
    blotch = 0.06 * _value_noise(rng, res, res, int(rng.integers(3, 7)))
    grain = 0.03 * rng.standard_normal((res, res)).astype(_F)
    belt: np.ndarray = (ridges + blotch + grain)[..., None] + belt_col
    for _ in range(int(rng.integers(0, k.distractors + 1))):
        kind = rng.integers(3)
        cy, cx = (float(t) for t in rng.uniform(0, res, 2))
        if kind == 0:  # dirt spot on the belt
            r = rng.uniform(1.0, 3.5) * ss
            blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
            belt = belt - (rng.uniform(0.05, 0.15) * blob)[..., None]
        elif kind == 1:  # seam across the belt
            pos = rng.uniform(0, res)
            seam = np.exp(-((along - pos) ** 2) / (2 * (0.7 * ss) ** 2))
            belt = belt + (rng.choice([-1, 1]) * rng.uniform(0.04, 0.12) * seam)[..., None]
        else:  # a bright speck (a crumb, a reflection)
            r = rng.uniform(0.6, 1.5) * ss
            blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
            belt = belt + (rng.uniform(0.1, 0.3) * blob)[..., None]

    # --- part pose ---
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    teeth = int(rng.integers(8, 13))
    scale = rng.uniform(0.24, 0.36) * res  # pixels per part-local unit
    margin = 1.05 * scale
    cx, cy = (float(t) for t in rng.uniform(margin, res - margin, 2))
    ang = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    u = ((xs - cx) * ca + (ys - cy) * sa) / scale
    v = (-(xs - cx) * sa + (ys - cy) * ca) / scale
    px = 1.0 / scale  # one internal pixel in local units

    holes = _holes(shape)
    sdf = _outline(shape, u, v, teeth)
    ds = k.defect_scale
    if name == "missing_hole":
        holes = [h for i, h in enumerate(holes) if i != int(drng.integers(len(holes)))]
    if name == "chip":
        p = _edge_point(drng, shape, teeth)
        rc = drng.uniform(0.16, 0.26) * ds
        p0f, p1f = float(p[0]), float(p[1])
        wobble = 1 + 0.15 * np.sin(5 * np.arctan2(v - p1f, u - p0f) + drng.uniform(0, 6.3))
        sdf = np.maximum(sdf, -(np.hypot(u - p0f, v - p1f) - rc * wobble))
    for hu, hv, hr in holes:
        sdf = np.maximum(sdf, -(np.hypot(u - hu, v - hv) - hr))
    alpha = np.clip(0.5 - sdf / px, 0.0, 1.0)

    # --- part surface: brushed/turned metal, directional light, specular highlight ---
    metal = rng.uniform(0.5, 0.8)
    cast = np.array([0.02, 0.02, 0.04]) * rng.uniform(-1, 1)
    metal_col = metal * (1 + rng.uniform(-0.06, 0.06, 3)) + cast
    metal_col = metal_col.astype(_F)
    light_ang = rng.uniform(0, 2 * math.pi)
    shade = 0.12 * (u * math.cos(light_ang) + v * math.sin(light_ang))
    h0, h1 = (float(x) for x in rng.uniform(-0.5, 0.5, 2))
    spec = rng.uniform(0.05, 0.2) * np.exp(-((u - h0) ** 2 + (v - h1) ** 2) * (1 / 0.15))
    if shape in ("washer", "gear"):
        marks = 0.025 * np.sin(np.hypot(u, v) * rng.uniform(40, 70))  # turning rings
    else:
        marks = 0.02 * np.sin((u * math.cos(0.3) + v) * rng.uniform(40, 70))  # brushing
    surf: np.ndarray = (shade + spec + marks).astype(_F)
    for _ in range(int(rng.integers(0, k.distractors // 2 + 1))):  # harmless glints
        q = _inside_points(rng, shape, teeth, holes, 0.05)
        q0, q1 = float(q[0]), float(q[1])
        surf = surf + 0.25 * np.exp(-((u - q0) ** 2 + (v - q1) ** 2) * (1 / (2 * 0.03**2)))
    part = surf[..., None] + metal_col

    # --- the defect ---
    c = k.defect_contrast * drng.uniform(0.8, 1.25)
    if name == "scratch":
        p0 = _inside_points(drng, shape, teeth, holes, 0.1)
        th = drng.uniform(0, 2 * math.pi)
        length = drng.uniform(0.5, 0.9) * ds
        p1 = p0 + length * np.array([math.cos(th), math.sin(th)])
        w = max(0.022 * ds, 0.7 * px)
        dist = _seg_dist(u, v, p0, p1)
        line = np.exp(-0.5 * (dist / w) ** 2)
        groove = np.exp(-0.5 * (dist / (2.2 * w)) ** 2) - line  # dark burr beside the bright core
        part = part * (1 - (0.8 * c * groove)[..., None]).clip(0.1, 1) + (c * line)[..., None]
    elif name == "crack":
        p = _edge_point(drng, shape, teeth) * 0.97
        th = math.atan2(-p[1], -p[0]) + drng.uniform(-0.5, 0.5)  # head inwards
        d = np.full(u.shape, np.inf, dtype=_F)
        for _ in range(int(drng.integers(4, 7))):
            th += drng.uniform(-0.8, 0.8)
            q = p + drng.uniform(0.09, 0.16) * ds * np.array([math.cos(th), math.sin(th)])
            d = np.minimum(d, _seg_dist(u, v, p, q))
            p = q
        w = max(0.03, 0.9 * px)
        line = np.exp(-0.5 * (d / w) ** 2)
        part = part * (1 - (1.4 * c * line)[..., None]).clip(0.05, 1)
    elif name == "spot":
        q = _inside_points(drng, shape, teeth, holes, 0.12)
        r = drng.uniform(0.09, 0.16) * ds
        e = drng.uniform(0.6, 1.0)
        q0, q1 = float(q[0]), float(q[1])
        blob = np.exp(-(((u - q0) / r) ** 2 + ((v - q1) / (r * e)) ** 2) * 1.5)
        rust = np.array([0.55, 0.35, 0.2]) if drng.integers(2) else np.array([0.3, 0.3, 0.3])
        mix = (1.3 * c * blob).clip(0, 0.9)[..., None]
        part = part * (1 - mix) + rust.astype(_F) * metal * 0.6 * mix

    # --- composite: shadow on the belt, then the part ---
    sh_off = rng.uniform(0.02, 0.06) * scale
    shadow = np.roll(alpha, (int(sh_off), int(sh_off)), axis=(0, 1))
    a3 = alpha[..., None]
    img = belt * ((1 - 0.35 * shadow) * (1 - alpha))[..., None]
    img += part * a3

    # --- lighting: gain, gradient across the frame, colour cast ---
    gain = 1 + rng.uniform(-k.light_range, k.light_range)
    g_ang = rng.uniform(0, 2 * math.pi)
    gx, gy = math.cos(g_ang) / res, math.sin(g_ang) / res
    grad = 1 + k.light_range * ((xs - res / 2) * gx + (ys - res / 2) * gy)
    tint = 1 + rng.uniform(-k.tint_range, k.tint_range, 3)
    img *= (gain * grad)[..., None]
    img *= tint.astype(_F)

    # --- camera: motion blur, downsample, optics blur, sensor noise ---
    m = int(round(rng.uniform(0, k.motion_max) * ss))
    img = _motion_blur(img.astype(_F), m, horizontal)
    if ss > 1:
        img = (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2]) * _F(0.25)
    out = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    sigma = rng.uniform(0.0, k.blur_max)
    if sigma > 0.3:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
    noise = rng.normal(0.0, rng.uniform(0.3, 1.0) * k.noise_sigma, out.shape)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out, int(label)


class SyntheticSet(Sequence[tuple[np.ndarray, int]]):
    """``n`` synthetic images ``offset .. offset+n-1`` of the set ``seed``.

    Train and test sets use the same seed with disjoint offsets, so they never share an
    image. ``cache=True`` keeps rendered images in memory (about 12 KB per 64×64
    image), which makes later epochs free.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: int = DEFAULT_SIZE,
        difficulty: float = DEFAULT_DIFFICULTY,
        offset: int = 0,
        cache: bool = False,
    ) -> None:
        if n < 0 or offset < 0:
            raise ValueError(f"n and offset must be >= 0, got n={n}, offset={offset}")
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.difficulty, self.offset = float(difficulty), int(offset)
        self._cache: dict[int, tuple[np.ndarray, int]] | None = {} if cache else None
        self.labels = LABELS

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> tuple[np.ndarray, int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[np.ndarray, int]]: ...

    def __getitem__(self, i: int | slice) -> tuple[np.ndarray, int] | list[tuple[np.ndarray, int]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        item = render(self.offset + i, self.seed, self.size, self.difficulty)
        if self._cache is not None:
            self._cache[i] = item
        return item

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(self.n):
            yield self[i]

    def targets(self) -> list[int]:
        """Labels without rendering (they depend only on the index)."""
        return [(self.offset + i) % len(LABELS) for i in range(self.n)]
