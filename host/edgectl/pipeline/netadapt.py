"""NetAdapt-style search: the most accurate MobileNetV2 whose latency on the target meets a
budget, shrinking one unit per step against latency estimated from the target's own
per-block table and confirmed by measuring each step's winner there.

The loop is Algorithm 1 of NetAdapt (Yang et al., ECCV 2018, arXiv:1804.03230):

    while Res(Net_i) > Bud:
        for each unit k:  choose the number of filters of k so that the estimated
                          resource drops by at least ΔR_i (lookup tables); choose which
                          filters (magnitude); short-term fine-tune; measure accuracy
        Net_{i+1} = the most accurate proposal;  ΔR_{i+1} = ΔR_i · decay
    long-term fine-tune of the final network

Where this differs from the paper, and why:
- **Units are two per MobileNetV2 stage** (``search_units.unit_convs``), not single layers: a
  stage's hidden width (its blocks' expansion and depthwise convs; the stem in stage 0)
  and its output width (its blocks' projections, shared through the residual additions,
  so Torch-Pruning removes them together; the paper's per-layer proposals would leave
  them coupled anyway); and a fifteenth, the head (``features.18``'s 1280 channels).
  Two per stage, not one: with one ratio per stage a cut of the expansions also cut the
  residual stream and the stem, where this model keeps its accuracy (the stage-only
  search ended 13 points below one-shot uniform pruning at 0.3× latency). The head:
  one-shot uniform pruning at 0.17× keeps 280 of its 1280 channels at 85.5 %, while the
  fourteen-unit search, which could not cut it, spent its 0.3× budget on the stem and
  the early residual widths instead (72.9 %). Channel counts stay multiples of
  ``round_to`` (8 by default): the project's measurements show unrounded widths run
  slower than dense on ONNX Runtime, which a per-layer latency table would only show
  after the fact.
- **The reduction schedule is relative**: ΔR_0 = ``step_frac`` of the start model's
  estimated latency, times ``decay`` each step (the paper's MobileNet runs use a fixed
  starting reduction and a decay of 0.96 per iteration; ours is the same shape scaled to
  the model, so a 64×64 model and a 224×224 one take a similar number of steps); and it
  is corrected by what the loop measures (:func:`step_reduction`): never more than the
  budget still needs, and divided by the table's local gain (measured over estimated
  reduction of the last steps), since our table, unlike the paper's, is not exact.
- **Proposals are scored after adaptive batch norm** (the caller's ``tune``:
  ``deadline.search_stage`` re-estimates every BN layer's statistics on training batches
  after the short fine-tune, as EagleEye, Li et al., ECCV 2020): the paper scores right
  after the short fine-tune, which on a deep cut left BN statistics that no longer match
  the layer's activations, and a near-chance score.
- **Accuracy is measured on a held-out slice of the training set** (``score``), never the
  test set, as the paper's "holdout set": the test set stays an unbiased final report.
- **One more unit: the whole network** (``Plan.whole``). Besides the fifteen unit
  proposals, each step proposes every unit cut by one common fraction (the largest, on a
  grid of ``WHOLE_GRID``, whose estimate meets the step's target). Why: a stage alone can
  only move by ``round_to`` channels, so on a 64×64 MobileNetV2 one stage's proposal had
  to cut deep to make ΔR (24 → 8 channels, 160 → 8); after a short fine-tune such cuts
  score near chance and the step's choice was noise, and the search ended less accurate
  than one-shot uniform pruning at the same latency (benchmarks/results/
  deadline-per-stage.md and deadline-sum-only.md, runs before this unit). The
  whole-network proposal is a small cut everywhere, so the loop can always take a
  shallow step and takes a deep single-unit one only when it scores better.
- **Each step's winner is measured end to end on the target** (``measure``), and the
  loop stops on that measurement, not on the table: the table (a sum of blocks plus a
  calibrated overhead) misses what the runtime fuses across blocks; the measured and
  estimated figures of every step are kept so the table's error is reported.
- **Resumable**: each step's winner is a checkpoint in ``state_dir`` with the step log;
  a rerun with the same plan continues after the last finished step (Ctrl-C safe).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edge_common.errors import ConfigError
from edge_common.fileio import write_json_atomic
from edge_common.hashing import settings_key
from edgectl.pipeline import search_units

UNITS = search_units.UNITS   # two per stage (its hidden width, its output width), the head
WHOLE = UNITS           # the index of the whole-network proposal (every unit at once)
WHOLE_GRID = 0.02    # its common fraction moves in these steps
WHOLE_MIN = 0.5      # and is never below this in one step (a misled estimate cannot gut it)

Keep = tuple[float, ...]
Estimate = Callable[[Keep], float]            # keep vector -> estimated ms (the table)
Measure = Callable[[nn.Module], float]        # model -> measured p95 ms on the target
Tune = Callable[[nn.Module, int, int], None]  # short fine-tune in place: (model, step, unit)
Score = Callable[[nn.Module], float]          # accuracy on the selection slice, 0-1


@dataclass(frozen=True)
class Plan:
    """The search's settings; ``key()`` names its resumable state."""

    budget_ms: float
    step_frac: float = 0.08
    decay: float = 0.96
    max_steps: int = 40
    round_to: int = 8
    min_channels: int = 8
    whole: bool = True    # also propose the whole network cut by one fraction per step

    def validate(self) -> None:
        if not self.budget_ms > 0:
            raise ConfigError(f"--target-latency-ms must be positive, got {self.budget_ms}")
        if not 0.0 < self.step_frac < 1.0 or not 0.0 < self.decay <= 1.0:
            raise ConfigError("step fraction must be in (0, 1) and decay in (0, 1]")
        if self.max_steps < 1:
            raise ConfigError(f"max steps must be >= 1, got {self.max_steps}")

    def reduction(self, step: int, start_est_ms: float) -> float:
        """ΔR_step in estimated milliseconds."""
        return self.step_frac * start_est_ms * self.decay ** step

    def expected_steps(self, start_est_ms: float, budget_est_ms: float) -> int:
        """Steps until the scheduled reductions add up to ``start − budget`` (estimated);
        ``max_steps`` if they never do. What ``--dry-run`` prints."""
        need, done = start_est_ms - budget_est_ms, 0.0
        for i in range(self.max_steps):
            if done >= need:
                return i
            done += self.reduction(i, start_est_ms)
        return self.max_steps

    def key(self, extra: dict[str, Any]) -> str:
        """Names the search's trajectory: the budget and the step limit only decide where it
        stops (and how far its last step aims: :func:`step_reduction`), so a search for a
        tighter budget continues one for a looser one, and a looser one reuses the first
        step of a tighter one that meets it."""
        trajectory = {k: v for k, v in asdict(self).items() if k not in ("budget_ms", "max_steps")}
        return settings_key({"plan": trajectory, "units": UNITS, **extra})


@dataclass
class Step:
    """One finished step: the winner, and every proposal with its selection accuracy."""

    step: int
    stage: int          # the unit that won (:func:`unit_name`), or WHOLE (every unit at once)
    keep: list[float]
    est_ms: float
    measured_ms: float
    accuracy: float
    proposals: list[dict[str, Any]] = field(default_factory=list)
    params: int | None = None
    from_est_ms: float | None = None    # the step's start, estimated with the same table


@dataclass
class SearchResult:
    model: nn.Module
    keep: list[float]
    steps: list[Step]
    start_ms: float
    start_est_ms: float
    met: bool
    stop: str  # why the loop ended


def unit_name(unit: int) -> str:
    """``stage 3 hidden``, ``stage 3 output``, ``head`` or ``every unit`` (:data:`WHOLE`)."""
    if unit == WHOLE:
        return "every unit"
    if unit == UNITS - 1:
        return "head"
    return f"stage {unit // 2 + 1} {'output' if unit % 2 else 'hidden'}"


def stage_widths(original: nn.Module) -> list[int]:
    """Each unit's width in ``original`` (its last conv's channels): the width a
    keep ratio is a fraction of, and the unit proposals move by (``round_to``)."""
    convs = dict(original.named_modules())
    return [convs[names[-1]].out_channels for names in search_units.unit_convs(original)]


def unit_candidates(keep: Keep, stage: int, widths: Sequence[int], plan: Plan) -> list[Keep]:
    """Every keep :func:`proposal` may choose for ``stage``, largest first: its width less
    one ``round_to`` step at a time, down to ``min_channels``."""
    width = widths[stage]
    step = max(1, plan.round_to)
    channels = search_units.round_channels(keep[stage] * width, plan.round_to) - step
    cands: list[Keep] = []
    while channels >= max(plan.min_channels, step):
        cands.append(tuple(channels / width if i == stage else k for i, k in enumerate(keep)))
        channels -= step
    return cands


def whole_candidates(keep: Keep, widths: Sequence[int], plan: Plan) -> list[Keep]:
    """Every keep :func:`whole_proposal` may choose, largest first: every unit's channels
    times ``f = 1 − j·WHOLE_GRID`` down to :data:`WHOLE_MIN` (rounded to ``round_to``,
    never below ``min_channels`` nor above the unit's current width), repeats dropped."""
    step = max(1, plan.round_to)
    floor = max(plan.min_channels, step)
    now = [search_units.round_channels(k * w, plan.round_to) for k, w in zip(keep, widths,
                                                                          strict=True)]
    cands: list[Keep] = []
    seen = {tuple(now)}
    for j in range(1, int(round((1 - WHOLE_MIN) / WHOLE_GRID)) + 1):
        f = 1.0 - j * WHOLE_GRID
        chans = tuple(min(c, max(floor, search_units.round_channels(c * f, plan.round_to)))
                      for c in now)
        if chans not in seen:
            seen.add(chans)
            cands.append(tuple(c / w if c != n else k for c, n, w, k in zip(
                chans, now, widths, keep, strict=True)))
    return cands


def proposal(keep: Keep, stage: int, target_ms: float, estimate: Estimate,
             widths: Sequence[int], plan: Plan,
             prefetch: Callable[[list[Keep]], Any] | None = None) -> Keep | None:
    """NetAdapt's "choose # of filters": the largest keep of ``stage`` below its current
    one, in steps of ``round_to`` channels of its width, whose estimate is at most
    ``target_ms``; None if even ``min_channels`` is not enough (:func:`first_meeting`)."""
    return first_meeting([unit_candidates(keep, stage, widths, plan)], target_ms, estimate,
                         prefetch)[0]


def whole_proposal(keep: Keep, target_ms: float, estimate: Estimate, widths: Sequence[int],
                   plan: Plan, prefetch: Callable[[list[Keep]], Any] | None = None) -> Keep | None:
    """The whole-network unit: the largest of :func:`whole_candidates` whose estimate is at
    most ``target_ms``; None if none is enough."""
    return first_meeting([whole_candidates(keep, widths, plan)], target_ms, estimate,
                         prefetch)[0]


def step_proposals(keep: Keep, target_ms: float, estimate: Estimate, widths: Sequence[int],
                   plan: Plan, prefetch: Callable[[list[Keep]], Any] | None = None
                   ) -> list[Keep | None]:
    """One step's proposals: every unit's (:func:`proposal`), then the whole network's
    (None where ``plan.whole`` is off), found together so the table's missing entries
    are fetched for all of them at once (:func:`first_meeting`)."""
    lists = [unit_candidates(keep, u, widths, plan) for u in range(UNITS)]
    lists.append(whole_candidates(keep, widths, plan) if plan.whole else [])
    return first_meeting(lists, target_ms, estimate, prefetch)


FIRST = 4     # the first candidates of every list asked in the first round
PROBES = 8    # then at most this many per list per round, spread over its open bracket


def first_meeting(lists: Sequence[Sequence[Keep]], target_ms: float, estimate: Estimate,
                  prefetch: Callable[[list[Keep]], Any] | None = None) -> list[Keep | None]:
    """For each list (largest keep first), its first candidate whose estimate meets
    ``target_ms``, or None; all lists in lock step, so that ``prefetch`` is handed each
    round's candidates of every list at once (one trip to the board per round, not one per
    unit: with fourteen units the per-unit trips made a step on the test host take
    minutes of Ansible round trips).

    Round one asks each list's first :data:`FIRST` candidates (a step's target is usually
    met there) and its last (the deepest cut: if that misses, the list has no proposal).
    Then each round asks up to :data:`PROBES` candidates spread over the bracket between
    the deepest known miss and the shallowest known hit, until they are adjacent: three
    or four rounds for the widest unit (120 channel counts) instead of a walk. This
    assumes an estimate that does not grow as a unit shrinks (a sum of block latencies,
    each timed on the device; the walk it replaces assumed nothing, and on a table whose
    noise breaks that order the two may pick keeps one or two steps apart)."""
    out: list[Keep | None] = [None] * len(lists)
    hit: dict[int, int] = {}        # list -> shallowest index known to meet
    miss: dict[int, int] = {}       # list -> deepest index known not to meet (above hit)
    ask: dict[int, list[int]] = {}
    for u, cands in enumerate(lists):
        if cands:
            ask[u] = sorted(set(range(min(FIRST, len(cands)))) | {len(cands) - 1})
    while ask:
        if prefetch is not None:
            prefetch([lists[u][j] for u in sorted(ask) for j in ask[u]])
        nxt: dict[int, list[int]] = {}
        for u, idx in ask.items():
            for j in idx:
                if estimate(lists[u][j]) <= target_ms:
                    hit[u] = min(hit.get(u, j), j)
                    break
                miss[u] = max(miss.get(u, -1), j)
            if u not in hit:            # the deepest cut (asked in round one) misses
                continue
            lo, hi = miss.get(u, -1), hit[u]
            if hi - lo <= 1:
                out[u] = lists[u][hi]
                continue
            gap = hi - lo - 1
            n = min(PROBES, gap)
            nxt[u] = sorted({lo + 1 + (gap * p) // n for p in range(n)})
        ask = nxt
    return out


def candidates(keep: Keep, widths: Sequence[int], plan: Plan, depth: int) -> list[Keep]:
    """The first ``depth`` keeps :func:`proposal` would try for every unit (what
    ``profile-layers`` measures ahead of a search)."""
    return [c for u in range(len(widths)) for c in unit_candidates(keep, u, widths, plan)[:depth]]


def search(model: nn.Module, original: nn.Module, img_size: int, plan: Plan, *,
           estimate: Estimate, measure: Measure, tune: Tune, score: Score,
           state_dir: Path | None = None, state_key: str = "",
           echo: Callable[[str], None] = lambda _m: None,
           on_step: Callable[[Step], None] | None = None,
           prefetch: Callable[[list[Keep]], Any] | None = None,
           observe: Callable[[Keep, float], None] | None = None) -> SearchResult:
    """Shrink ``model`` (a copy of ``original`` or a pruned descendant) stage by stage until
    its measured latency meets ``plan.budget_ms``; returns the last winner (before the
    long fine-tune, which is the caller's) and the log. See the module docstring.
    ``observe(keep, measured_ms)``: every end-to-end measurement, for the estimator to
    learn from (after the step's estimate is recorded)."""
    plan.validate()
    seen = observe or (lambda _k, _ms: None)
    widths = stage_widths(original)
    keep: Keep = tuple(round(k, 6) for k in search_units.stage_keep(model, original))
    start_est = estimate(keep)
    start_ms = measure(model)
    seen(keep, start_ms)
    steps: list[Step] = []
    if state_dir is not None:
        model, keep, steps = _resume(state_dir, state_key, model, keep, echo, plan)
        for done in steps:
            seen(tuple(done.keep), done.measured_ms)
    current_ms = steps[-1].measured_ms if steps else start_ms
    stop = "met" if current_ms <= plan.budget_ms else "max_steps"
    while current_ms > plan.budget_ms and len(steps) < plan.max_steps:
        i = len(steps)
        base_est = estimate(keep)
        reduction = step_reduction(plan, i, start_est, current_ms, steps, start_ms)
        proposals: list[tuple[float, int, Keep, nn.Module, float]] = []
        for _ in range(4):
            # no unit can cut ΔR alone (late in a search, or a small model): halve it, a
            # few times, before giving up (the paper's schedule has no such case)
            target = base_est - reduction
            chosen = step_proposals(keep, target, estimate, widths, plan, prefetch)
            for stage, cand_keep in enumerate(chosen):     # UNITS, then WHOLE
                if cand_keep is None:
                    continue
                cand = search_units.stage_prune(model, list(cand_keep), img_size, plan.round_to,
                                           original)
                tune(cand, i, stage)
                proposals.append((score(cand), stage, cand_keep, cand, estimate(cand_keep)))
            if proposals:
                break
            reduction /= 2
        if not proposals:
            stop = "no_proposal"
            echo(f"  step {i + 1}: no unit can shrink by {2 * reduction:.3f} ms "
                 "(estimated); stopping")
            break
        acc, stage, keep, model, est = max(proposals, key=lambda p: (p[0], -p[4]))
        current_ms = measure(model)
        seen(keep, current_ms)
        rec = Step(i, stage, list(keep), est, current_ms, acc,
                   [{"stage": s, "keep": list(k), "est_ms": e, "accuracy": a}
                    for a, s, k, _m, e in proposals],
                   params=sum(p.numel() for p in model.parameters()), from_est_ms=base_est)
        steps.append(rec)
        if state_dir is not None:
            _save_step(state_dir, state_key, model, steps)
        unit = unit_name(stage)
        echo(f"  step {i + 1}: {unit} → keep {[round(k, 3) for k in keep]}, "
             f"accuracy {acc:.2%}, {current_ms:.3f} ms measured ({est:.3f} estimated)")
        if on_step is not None:
            on_step(rec)
        stop = "met" if current_ms <= plan.budget_ms else "max_steps"
    return SearchResult(model, list(keep), steps, start_ms, start_est,
                        current_ms <= plan.budget_ms, stop)


GAIN_STEPS = 3          # the last steps the table's local gain is pooled over
GAIN_BOUNDS = (0.5, 2.0)
NEED_MARGIN = 1.25      # a step aims this much past the budget, no further


def local_gain(steps: Sequence[Step], start_ms: float) -> float:
    """Measured reduction per estimated reduction over the last :data:`GAIN_STEPS` steps
    (their sums, each step's estimates from one table state), bounded to
    :data:`GAIN_BOUNDS`; 1 before any step or when the sums are not both positive."""
    meas, est = 0.0, 0.0
    for j in range(max(0, len(steps) - GAIN_STEPS), len(steps)):
        s = steps[j]
        if s.from_est_ms is None:
            continue
        before = steps[j - 1].measured_ms if j else start_ms
        meas += before - s.measured_ms
        est += s.from_est_ms - s.est_ms
    if meas <= 0 or est <= 0:
        return 1.0
    return min(GAIN_BOUNDS[1], max(GAIN_BOUNDS[0], meas / est))


def step_reduction(plan: Plan, step: int, start_est: float, current_ms: float,
                   steps: Sequence[Step], start_ms: float) -> float:
    """ΔR of ``step`` in the table's milliseconds: the schedule's, never more than
    :data:`NEED_MARGIN` × what the budget still needs (measured; at least a quarter of the
    schedule's, so a step just over the budget is not a crawl), divided by the table's
    :func:`local_gain`. Why: on small models the table's sum shrank by half what the
    end-to-end time did (blocks timed alone keep a per-call cost the whole graph does
    not), so a step aimed at ΔR removed twice it, and the search ended 12 % under its
    budget with accuracy spent the budget did not ask for (benchmarks/results/
    deadline.md, run 3, step 8: 0.287 ms estimated, 0.197 measured). The paper's
    tables are exact by construction; ours are not, and the loop corrects by what it
    measures."""
    scheduled = plan.reduction(step, start_est)
    need = max(current_ms - plan.budget_ms, 0.0) * NEED_MARGIN
    return min(scheduled, max(need, scheduled / 4)) / local_gain(steps, start_ms)


def estimation_errors(steps: Sequence[Step]) -> list[float]:
    """(estimated − measured) / measured of every step's winner."""
    return [(s.est_ms - s.measured_ms) / s.measured_ms for s in steps
            if s.measured_ms > 0 and math.isfinite(s.est_ms)]


# ------------------------------------------------------------------------ resumable state


def _save_step(state_dir: Path, key: str, model: nn.Module, steps: list[Step]) -> None:
    from edgectl.pipeline.checkpoint import save_checkpoint

    state_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, {"netadapt": {"key": key, "step": len(steps)}},
                    state_dir / f"step-{len(steps):03d}.pt")
    # the log last: a crash between the two leaves a checkpoint the log does not name yet
    write_json_atomic(state_dir / "steps.json", {"key": key, "steps": [asdict(s) for s in steps]})


def _resume(state_dir: Path, key: str, model: nn.Module, keep: Keep,
            echo: Callable[[str], None], plan: Plan) -> tuple[nn.Module, Keep, list[Step]]:
    """The last finished step of a run with the same key (cut at the first step that meets
    ``plan``'s budget, and at its step limit), or the start unchanged."""
    from edgectl.pipeline.checkpoint import load_checkpoint

    log = state_dir / "steps.json"
    if not log.is_file():
        return model, keep, []
    try:
        doc = json.loads(log.read_text())
        if doc.get("key") != key or not doc.get("steps"):
            return model, keep, []
        steps = [Step(**s) for s in doc["steps"]][:plan.max_steps]
        met = [i for i, s in enumerate(steps) if s.measured_ms <= plan.budget_ms]
        if met:
            steps = steps[:met[0] + 1]
        ckpt = state_dir / f"step-{len(steps):03d}.pt"
        resumed, meta = load_checkpoint(ckpt)
        if (meta.get("netadapt") or {}).get("key") != key:
            return model, keep, []
    except (OSError, ValueError, TypeError, KeyError) as err:
        echo(f"  search state in {state_dir} unreadable ({err}); starting over")
        return model, keep, []
    echo(f"  resuming after step {len(steps)} ({os.fspath(ckpt)})")
    return resumed, tuple(steps[-1].keep), steps
