"""The accuracy gates of a build: the default ``--min-accuracy`` (the baseline less
``DEFAULT_MAX_DROP`` points, never below answering the majority class every time plus
``CHANCE_MARGIN``), ``--max-accuracy-drop`` for an INT8 artifact against its FP32 twin, and
the one line a build below its gate ends with (``BelowMinAccuracy``). ``build`` applies
them at its stages (``gate_for``, ``accuracy_gate``)."""

from __future__ import annotations

from pathlib import Path

from edge_common.errors import EdgeError
from edgectl.pipeline.build_results import ArtifactResult

# Every accuracy drop is in points (1 point = 0.01 accuracy), as --max-accuracy-drop and
# --accuracy-drop read; accuracies themselves are fractions.
DEFAULT_MAX_DROP = 2.0  # points: the default gate is the baseline accuracy minus 2 points...
CHANCE_MARGIN = 0.05  # ...and never less than always-the-majority-class plus 5 points
DEFAULT_INT8_MAX_DROP = 1.0  # points an INT8 artifact may lose against its FP32 twin


class BelowMinAccuracy(EdgeError, ValueError):
    """The built model misses its accuracy gate; no deployable bundle is written."""


def chance_floor(counts: dict[str, int], margin: float = CHANCE_MARGIN) -> tuple[float, str]:
    """``(majority share + margin, majority label)`` from the test set's class counts:
    a model must beat answering the most common class every time by a clear margin."""
    total = sum(counts.values())
    if total <= 0:
        return margin, "-"
    label = max(counts, key=lambda k: counts[k])
    return min(1.0, counts[label] / total + margin), label


def default_gate(baseline_accuracy: float, counts: dict[str, int]) -> float:
    """The accuracy gate when ``--min-accuracy`` is not given: the larger of the baseline
    minus ``DEFAULT_MAX_DROP`` and :func:`chance_floor`, so a model that scores at chance
    (or whose baseline does) is never deployable by default."""
    return round(max(baseline_accuracy - DEFAULT_MAX_DROP / 100, chance_floor(counts)[0]), 4)


def int8_drop_gate(arts: list[ArtifactResult], max_drop: float) -> list[str]:
    """Mark every INT8 artifact that loses more than ``max_drop`` points of accuracy
    against its FP32 twin not deployable; one line per such artifact, saying by how much."""
    lines = []
    for a in arts:
        drop = -(a.accuracy_vs_fp32 or 0.0)           # a fraction of accuracy
        if a.precision == "int8" and 100 * drop > max_drop + 1e-7:
            a.deployable = False
            lines.append(f"{a.name} is NOT deployable: it drops {100 * drop:.2f} points against "
                         f"model.fp32.{a.format} (limit --max-accuracy-drop "
                         f"{max_drop:g}); the bundle serves FP32 for {a.format}")
    return lines


def gate_message(what: str, acc: float, min_acc: float, explicit: bool, old_bundle: Path,
                 floor: tuple[float, str] | None = None) -> str:
    """The one line a build below its gate ends with: the gate (``--min-accuracy`` when
    ``explicit``, else the default and why), whether ``old_bundle`` is left as it was, and
    what to do."""
    chance = (f", at least majority class {floor[1]!r} {floor[0] - CHANCE_MARGIN:.2%} + "
              f"{100 * CHANCE_MARGIN:.0f} points" if floor else "")
    gate = (f"--min-accuracy {min_acc:.2%}" if explicit
            else f"the default gate {min_acc:.2%} (baseline − {DEFAULT_MAX_DROP:g} "
                 f"points{chance})")
    note = (f"; the earlier bundle in {old_bundle} is left as it was"
            if old_bundle.exists() else "")
    return (f"{what} reaches {acc:.2%} accuracy, below {gate}: no bundle written{note} "
            f"(fine-tune longer or prune less; --allow-below-min writes a non-deployable "
            f"bundle for experiments)")
