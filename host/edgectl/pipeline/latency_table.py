"""Latency from the target, not from MACs: a per-block lookup table of MobileNetV2 measured
on the device, as NetAdapt's layer-wise tables (Yang et al. 2018, section 3.3).

A model is the stem (``features.0``), 17 inverted-residual blocks (``features.1–17``) and
the head (``features.18`` + pooling + classifier). Under per-stage pruning
(``search_units.stage_prune``) each block's shape is fixed by the keep ratios of its stage's two
units and the one before, so a block's latency is looked up by its exact convolution shapes
(:func:`block_specs`, the same channel arithmetic as ``stage_prune``, checked against it
by the tests). A missing entry is built as that block alone (random weights: latency does
not depend on them), exported with the one exporter and timed on the target by the
agent's own bench (``edge-agent bench --profile``: locally, or on a board over the
existing Ansible path), in one batch per lookup.

``estimate(keep) = scale · Σ blocks + overhead``: calibrated first from an end-to-end
measurement of the dense model (scale 1, the overhead exact there: the session call, what
the runtime fuses across blocks), then refitted to every end-to-end measurement the
search makes (each step's winner: :meth:`LatencyTable.observe` says why). The table's
error is what the search reports: each step's estimate, made before its measurement,
against that measurement.

The table is one JSON file per (device, runtime, precision, threads) under the build cache;
it records the device's CPU model and runtime version of its first measurement, and a
measurement on the same device that reports another CPU or runtime version discards it
(a board upgraded or swapped is measured again, never estimated from stale entries).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edge_common.errors import ConfigError, EdgeError, ModelError
from edge_common.fileio import write_json_atomic
from edge_common.hashing import settings_key
from edge_common.runtime import RUNTIME_NAMES as RUNTIME_KEYS
from edgectl.pipeline import pruning, search_units
from edgectl.pipeline.checkpoint import channel_plan, rebuild

HEAD = 18
PROFILE_LIST = "profile.json"  # edge_agent.bench.PROFILE_LIST: what the agent reads


@dataclass(frozen=True)
class BlockSpec:
    index: int          # features[index]; HEAD = features.18 + pooling + classifier
    in_channels: int
    size: int           # input height = width
    convs: tuple[tuple[int, int, int, int, int], ...]  # (in, out, groups, kernel, stride)

    @property
    def key(self) -> str:
        convs = ",".join("-".join(str(v) for v in c) for c in self.convs)
        return f"{self.index}@{self.size}:{convs}"


def pruned_plan(dense: nn.Module, keep: Sequence[float], round_to: int | None) -> dict[str, list]:
    """The channel plan (``checkpoint.channel_plan``) of ``stage_prune(dense, keep)``
    without pruning anything: each stage conv keeps ``round_channels(keep·dense)``, a
    depthwise conv keeps its input's width, every layer's input follows its predecessor."""
    targets: dict[str, int] = {}
    mods = dict(dense.named_modules())
    for k, names in zip(keep, search_units.unit_convs(dense), strict=True):
        for name in names:
            out = mods[name].out_channels
            targets[name] = min(out, search_units.round_channels(k * out, round_to))
    plan: dict[str, list] = {}
    cur = 3
    for name, spec in channel_plan(dense).items():
        if spec[0] == "Conv2d":
            _, cin, cout, groups = spec
            if groups > 1 and groups == cin:                   # depthwise: follows its input
                plan[name] = ["Conv2d", cur, cur, cur]
            else:
                out = targets.get(name, cout)
                plan[name] = ["Conv2d", cur, out, 1]
                cur = out
        elif spec[0] == "BatchNorm2d":
            plan[name] = ["BatchNorm2d", cur]
        elif spec[0] == "Linear":
            plan[name] = ["Linear", cur, spec[2]]
        else:
            plan[name] = list(spec)
    return plan


def block_specs(dense: nn.Module, keep: Sequence[float], img_size: int,
                round_to: int | None) -> list[BlockSpec]:
    """The 19 blocks of ``stage_prune(dense, keep)``: shapes and input sizes."""
    plan = pruned_plan(dense, keep, round_to)
    mods = dict(dense.named_modules())
    specs, size = [], int(img_size)
    for i in range(HEAD + 1):
        prefix = f"features.{i}."
        convs = []
        size_in, cin = size, None
        for name, spec in plan.items():
            if not name.startswith(prefix) or spec[0] != "Conv2d":
                continue
            m = mods[name]
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            convs.append((spec[1], spec[2], spec[3], k, s))
            cin = spec[1] if cin is None else cin
            size = (size + 2 * p - k) // s + 1
        specs.append(BlockSpec(i, int(cin or 3), size_in, tuple(convs)))
    return specs


def block_module(dense: nn.Module, keep: Sequence[float], spec: BlockSpec,
                 round_to: int | None) -> nn.Module:
    """That block alone, with its pruned shapes (random weights), in eval mode."""
    from edgectl.pipeline.model import ARCH

    head = pruning.classifier_of(dense)  # MobileNetV2's classifier[-1]
    if head is None:
        raise ModelError("latency table: the model has no Linear classifier")
    model = rebuild(ARCH, head.out_features, 1.0, pruned_plan(dense, keep, round_to)).eval()
    if spec.index < HEAD:
        return model.get_submodule(f"features.{spec.index}")
    return nn.Sequential(model.get_submodule(f"features.{HEAD}"), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(1), model.get_submodule("classifier")).eval()


# (folder, threads) -> the agent's bench report on the target. Passed in by whoever composes
# the search (``edgectl.fleet.ansible.profile_runner``: here or on a board over Ansible);
# pipeline/ does not reach fleet/ itself.
Runner = Callable[[Path, list[int]], dict[str, Any]]
MAX_POINTS = 64                              # end-to-end points a table keeps for its fit
FIT_SPREAD = 0.25      # the scale is fitted once the points' sums span this much of the largest
DENSE_POINT = ",".join(["1"] * search_units.UNITS)


class LatencyTable:
    """Block latencies (p50 ms) for one target × runtime × precision × threads."""

    def __init__(self, path: Path, dense: nn.Module, img_size: int, runtime: str,
                 precision: str, threads: int, runner: Runner, round_to: int | None = 8,
                 echo: Callable[[str], None] = lambda _m: None) -> None:
        if runtime not in RUNTIME_KEYS or precision not in ("fp32", "int8"):
            raise ConfigError(f"latency table: runtime onnx|tflite and precision fp32|int8, "
                              f"got {runtime}/{precision}")
        self.path, self.dense, self.img_size = path, dense, int(img_size)
        self.runtime, self.precision, self.threads = runtime, precision, int(threads)
        self.runner, self.round_to, self.echo = runner, round_to, echo
        self.doc: dict[str, Any] = {"entries": {}, "facts": None, "overhead_ms": None}
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
                if isinstance(doc.get("entries"), dict):
                    self.doc = doc
                    # end-to-end points of another unit layout (7 per-stage keeps, before
                    # the search's units were split): their keeps cannot be read; the
                    # block entries are keyed by shape and stay
                    pts = doc.get("points") or {}
                    doc["points"] = {k: v for k, v in pts.items()
                                     if len(k.split(",")) == search_units.UNITS}
            except (OSError, ValueError) as err:
                echo(f"  latency table {path} unreadable ({err}); measuring again")
        self.measured = 0     # block models timed by this instance (a cache hit adds none)

    # -- lookups -----------------------------------------------------------------------

    def specs(self, keep: Sequence[float]) -> list[BlockSpec]:
        return block_specs(self.dense, keep, self.img_size, self.round_to)

    def missing(self, keep: Sequence[float]) -> int:
        return sum(s.key not in self.doc["entries"] for s in self.specs(keep))

    def peek(self, keep: Sequence[float]) -> float | None:
        """The estimate from cached entries only (None if any is missing or no overhead)."""
        over, total = self.doc.get("overhead_ms"), self._sum(keep)
        if over is None or total is None:
            return None
        return float(self.doc.get("scale", 1.0)) * total + float(over)

    def _sum(self, keep: Sequence[float]) -> float | None:
        entries = self.doc["entries"]
        specs = self.specs(keep)
        if any(s.key not in entries for s in specs):
            return None
        return sum(entries[s.key]["p50"] for s in specs)

    def blocks_ms(self, keep: Sequence[float]) -> float:
        self.ensure([keep])
        return sum(self.doc["entries"][s.key]["p50"] for s in self.specs(keep))

    def estimate(self, keep: Sequence[float]) -> float:
        if self.doc.get("overhead_ms") is None:
            raise EdgeError("latency table: no overhead yet; calibrate(dense_ms) first")
        return float(self.doc.get("scale", 1.0)) * self.blocks_ms(keep) + \
            float(self.doc["overhead_ms"])

    def calibrate(self, dense_measured_ms: float) -> float:
        """The first end-to-end point, the dense model: overhead = measured dense − Σ dense
        blocks (may be negative: fusion across blocks saves more than a call costs)."""
        self.blocks_ms((1.0,) * search_units.UNITS)
        self.observe((1.0,) * search_units.UNITS, dense_measured_ms)
        return float(self.doc["overhead_ms"])

    def observe(self, keep: Sequence[float], measured_ms: float) -> None:
        """An end-to-end measurement of the model with ``keep``: the table is refitted to
        every such point it has (``estimate = scale · Σ blocks + overhead``).

        Why a scale and not only NetAdapt's sum: blocks timed alone do not shrink as fast
        as the same blocks inside one graph (measured on this project's runs: a model the
        sum put at 0.40 ms ran in 0.17), so a sum calibrated on the dense model alone
        overestimated pruned models more the smaller they got (a third of the search's
        ΔR went unseen, and steps cut more than planned). Once the points span at least
        :data:`FIT_SPREAD` of the largest sum, the scale is fitted: Theil–Sen (the median
        of the pairwise slopes, bounded to [0.25, 4]) and the overhead the median
        residual, so one noisy trip cannot tilt the line (a least-squares fit over three
        points near the dense model once took a slow trip for a negative slope, clamped
        the scale to 0.25, and the next step cut every unit to a quarter to make its ΔR).
        Before that the scale is 1 and the overhead the median residual. The search
        records every step's estimate before its measurement is observed, so the
        reported error stays a prediction error."""
        pts = self.doc.setdefault("points", {})
        pts[",".join(f"{float(k):.6g}" for k in keep)] = float(measured_ms)
        while len(pts) > MAX_POINTS:
            del pts[next(k for k in pts if k != DENSE_POINT)]
        xy = [(x, y) for k, y in pts.items()
              if (x := self._sum([float(v) for v in k.split(",")])) is not None]
        if not xy:
            return
        scale = 1.0
        xs = [x for x, _ in xy]
        if len(xy) >= 2 and max(xs) - min(xs) >= FIT_SPREAD * max(xs):
            slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(xy)
                      for x2, y2 in xy[i + 1:] if abs(x2 - x1) > 1e-9]
            scale = min(4.0, max(0.25, statistics.median(slopes)))
        self.doc["scale"] = scale
        self.doc["overhead_ms"] = statistics.median(y - scale * x for x, y in xy)
        self._save()

    # -- measuring ---------------------------------------------------------------------

    def ensure(self, keeps: Sequence[Sequence[float]]) -> int:
        """Measure every block of ``keeps`` not in the table, in one batch; return how many."""
        todo: dict[str, tuple[Sequence[float], BlockSpec]] = {}
        for keep in keeps:
            for s in self.specs(keep):
                if s.key not in self.doc["entries"] and s.key not in todo:
                    todo[s.key] = (keep, s)
        if not todo:
            return 0
        fmt = "onnx" if self.runtime == "onnx" else "tflite"
        with tempfile.TemporaryDirectory(prefix="edgectl-profile-") as tmp:
            folder = Path(tmp) / "profile"
            folder.mkdir()
            listing, names = [], {}
            for n, (key, (keep, spec)) in enumerate(sorted(todo.items())):
                name = f"b{spec.index:02d}-{n:04d}.{fmt}"
                export_as(block_module(self.dense, keep, spec, self.round_to), fmt,
                          self.precision, folder / name, spec.size, spec.in_channels)
                listing.append({"file": name, "shape": [1, spec.in_channels, spec.size,
                                                        spec.size]})
                names[name] = key
            write_json_atomic(folder / PROFILE_LIST, {"models": listing})
            self.echo(f"  latency table: timing {len(todo)} block(s) on the target")
            report = self.runner(folder, [self.threads])
        self._check_facts(report)
        for row in report["results"]:
            entry = names.get(row.get("file"))
            if entry is None or row.get("threads") != self.threads:
                continue
            if "error" in row:
                raise EdgeError(f"latency table: the target could not time {row['file']}: "
                                f"{row['error']}")
            lat = row["latency_ms"]
            self.doc["entries"][entry] = {"p50": float(lat["p50"]), "p95": float(lat["p95"])}
        lost = [k for k in todo if k not in self.doc["entries"]]
        if lost:
            raise EdgeError(f"latency table: the target's report lacks {len(lost)} block(s)")
        self.measured += len(todo)
        self._save()
        return len(todo)

    def facts(self) -> dict[str, Any]:
        return dict(self.doc.get("facts") or {})

    def _check_facts(self, report: dict[str, Any]) -> None:
        m = report.get("machine") or {}
        facts = {"device": report.get("device"), "cpu": m.get("cpu"),
                 "runtime": RUNTIME_KEYS[self.runtime],
                 "runtime_version": (m.get("runtimes") or {}).get(RUNTIME_KEYS[self.runtime]),
                 "precision": self.precision, "threads": self.threads}
        old = self.doc.get("facts")
        if old and (old.get("cpu"), old.get("runtime_version")) != (facts["cpu"],
                                                                   facts["runtime_version"]):
            self.echo(f"  latency table: the target now reports {facts['cpu']} / "
                      f"{facts['runtime']} {facts['runtime_version']} (was {old.get('cpu')} / "
                      f"{old.get('runtime_version')}); its entries are discarded")
            self.doc = {"entries": {}, "facts": None, "overhead_ms": None}
        self.doc["facts"] = facts

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.doc)


def table_path(cache: Path, target: str, runtime: str, precision: str, threads: int,
               img_size: int, dense: nn.Module) -> Path:
    """One file per target × runtime × precision × threads × architecture (CPU model and
    runtime version are checked inside: see the module docstring)."""
    arch = settings_key({"plan": channel_plan(dense), "img": int(img_size)})
    key = settings_key({"target": target, "runtime": runtime, "precision": precision,
                        "threads": int(threads), "arch": arch})
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in target)[:40]
    return cache / "latency-tables" / f"{safe}-{runtime}-{precision}-t{threads}-{key}.json"


def export_as(model: nn.Module, fmt: str, precision: str, path: Path, size: int,
              channels: int = 3) -> Path:
    """``model`` as the file the target will time: exported with the one exporter, and for
    INT8 quantized with the build's own quantizer, calibrated on random inputs (latency
    depends on the graph and its types, not on the scales; accuracy is not measured
    from these files)."""
    from edgectl.pipeline.export import export

    if precision == "fp32":
        return export(model, fmt, path, size, channels=channels)
    import numpy as np

    from edgectl.pipeline.quantization import quantize

    fp32 = path.with_name(path.stem + ".fp32" + path.suffix)
    export(model, fmt, fp32, size, channels=channels)
    calib = np.random.default_rng(0).standard_normal((8, channels, size, size))
    quantize(fmt, fp32, path, calib.astype(np.float32))
    fp32.unlink()
    return path


def measure_model(model: nn.Module, img_size: int, runtime: str, runner: Runner,
                  threads: int, precision: str = "fp32") -> tuple[float, dict[str, Any]]:
    """p95 ms of ``model`` end to end on the target (the same folder bench), and the report."""
    times, report = measure_combos(model, img_size, [(runtime, precision)], runner, [threads])
    ms = times[(runtime, precision, threads)]
    if isinstance(ms, str):
        raise EdgeError(f"end-to-end measurement failed on the target: {ms}")
    return ms[0], report


Combo = tuple[str, str, int]    # runtime, precision, threads


def measure_combos(model: nn.Module, img_size: int, kinds: Sequence[tuple[str, str]],
                   runner: Runner, threads: Sequence[int], rounds: int = 1
                   ) -> tuple[dict[Combo, list[float] | str], dict[str, Any]]:
    """p95 ms of ``model`` end to end on the target in each (runtime, precision) × threads:
    exported once, timed in ``rounds`` trips (one folder, one bench each), a list of
    ``rounds`` figures per combination; one the target cannot run (a runtime not installed
    there) maps to the bench's error text instead. The last trip's report is returned."""
    threads = sorted({int(t) for t in threads})
    out: dict[Combo, list[float] | str] = {}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgectl-e2e-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        listing, names = [], {}
        for runtime, precision in kinds:
            fmt = "onnx" if runtime == "onnx" else "tflite"
            name = f"model-{precision}.{fmt}"
            export_as(copy.deepcopy(model).eval(), fmt, precision, folder / name, img_size)
            listing.append({"file": name, "shape": [1, 3, img_size, img_size]})
            names[name] = (runtime, precision)
        write_json_atomic(folder / PROFILE_LIST, {"models": listing})
        for _ in range(rounds):
            report = runner(folder, threads)
            for r in report.get("results", []):
                kind = names.get(Path(str(r.get("file", ""))).name)
                if kind is None or r.get("threads") not in threads:
                    continue
                combo = (*kind, int(r["threads"]))
                p95 = (r.get("latency_ms") or {}).get("p95") if "error" not in r else None
                if not isinstance(p95, (int, float)) or not math.isfinite(p95) or p95 <= 0:
                    out[combo] = str(r.get("error") or f"not a time: {p95}")
                else:
                    got = out.setdefault(combo, [])
                    if not isinstance(got, str):    # an error text stays
                        got.append(float(p95))
    for runtime, precision in kinds:
        for t in threads:
            c = (runtime, precision, t)
            if not isinstance(out.get(c), str) and len(out.get(c) or []) < rounds:
                out[c] = "no result from the target"
    return out, report
