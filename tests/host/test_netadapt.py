"""The NetAdapt loop (``pipeline.netadapt``) on a real (tiny) MobileNetV2 pruned through the
real ``stage_prune``; latency here is the pruned model's MAC count (``measure``) and a
per-stage linear table (``estimate``) so the loop's decisions can be checked exactly.
The table measured on a device is tested where it is built."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torchvision.models import mobilenet_v2

from edge_common.errors import ConfigError
from edgectl.pipeline import netadapt, search_units
from edgectl.pipeline.checkpoint import channel_plan
from edgectl.pipeline.metrics import count_macs

IMG = 32


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return mobilenet_v2(width_mult=0.5, num_classes=4).eval()


def _macs_ms(model) -> float:
    return count_macs(model, IMG) / 1e5


def _table(dense):
    """Estimated ms: each stage's share of the dense MACs scaled by its keep, plus the
    rest (the head): close to the MACs but not equal, as a real table is."""
    base = _macs_ms(dense)
    share = [0.03, 0.02, 0.05, 0.03, 0.07, 0.03, 0.14, 0.06, 0.14, 0.06, 0.12, 0.05,
                 0.07, 0.03, 0.04]
    return lambda keep: base * (0.1 + sum(s * k for s, k in zip(share, keep, strict=True)))


def _score(model) -> float:
    # prefers keeping the late stages (a stand-in for accuracy, deterministic)
    k = search_units.stage_keep(model, _score.dense)
    return sum((i + 1) * v for i, v in enumerate(k)) / 28


def _run(dense, budget, **kw):
    _score.dense = dense
    tuned: list[tuple[int, int]] = []
    res = netadapt.search(copy.deepcopy(dense), dense, IMG, netadapt.Plan(budget_ms=budget),
                          estimate=_table(dense), measure=_macs_ms,
                          tune=lambda m, i, s: tuned.append((i, s)), score=_score, **kw)
    return res, tuned


def test_proposal_is_the_largest_keep_that_meets_the_target(dense):
    est, widths, plan = _table(dense), netadapt.stage_widths(dense), netadapt.Plan(1.0)
    keep = (1.0,) * 15
    target = est(keep) * 0.97
    cand = netadapt.proposal(keep, 6, target, est, widths, plan)
    assert cand is not None and est(cand) <= target
    one_more = search_units.round_channels(cand[6] * widths[6], 8) + 8
    bigger = tuple(one_more / widths[6] if i == 6 else k for i, k in enumerate(keep))
    assert est(bigger) > target                      # one multiple more misses it
    assert cand[:6] == keep[:6] and cand[7:] == keep[7:]
    assert netadapt.proposal(keep, 0, est(keep) * 0.5, est, widths, plan) is None


def test_search_meets_the_budget_keeping_the_most_accurate_proposal_each_step(dense):
    budget = _macs_ms(dense) * 0.6
    res, tuned = _run(dense, budget)
    assert res.met and res.stop == "met"
    assert res.steps[-1].measured_ms <= budget < res.steps[-2].measured_ms
    assert _macs_ms(res.model) == pytest.approx(res.steps[-1].measured_ms)
    again = search_units.stage_prune(dense, res.keep, IMG, 8)   # the keep vector is the model
    assert channel_plan(again) == channel_plan(res.model)
    for s in res.steps:
        assert 1 <= len(s.proposals) <= netadapt.UNITS + 1   # the units + the whole
        assert s.accuracy == max(p["accuracy"] for p in s.proposals)
        assert s.est_ms == pytest.approx(_table(dense)(tuple(s.keep)))
    assert len(tuned) == sum(len(s.proposals) for s in res.steps)  # one tune per proposal
    est = [s.est_ms for s in res.steps]
    assert est == sorted(est, reverse=True)
    errs = netadapt.estimation_errors(res.steps)
    assert len(errs) == len(res.steps) and all(abs(e) < 1 for e in errs)


def test_an_impossible_budget_stops_without_a_proposal_or_at_max_steps(dense):
    res, _ = _run(dense, 1e-6)
    assert not res.met and res.stop in ("no_proposal", "max_steps")
    assert res.steps and res.steps[-1].measured_ms > 1e-6


def test_a_start_that_already_meets_the_budget_takes_no_step(dense):
    res, tuned = _run(dense, _macs_ms(dense) * 2)
    assert res.met and res.steps == [] and tuned == []


def test_an_interrupted_search_resumes_after_its_last_finished_step(dense, tmp_path):
    budget = _macs_ms(dense) * 0.6
    full, _ = _run(dense, budget)

    def stop_after_two(step):
        if step.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(dense, budget, state_dir=tmp_path, state_key="k", on_step=stop_after_two)
    assert (tmp_path / "step-002.pt").is_file()
    res, tuned = _run(dense, budget, state_dir=tmp_path, state_key="k")
    assert min(i for i, _ in tuned) == 2                  # steps 0 and 1 were not redone
    assert res.keep == pytest.approx(full.keep)
    assert [s.stage for s in res.steps] == [s.stage for s in full.steps]
    other, tuned = _run(dense, budget, state_dir=tmp_path, state_key="another plan")
    assert min(i for i, _ in tuned) == 0                  # another key starts over


def test_a_tighter_budget_continues_a_looser_search_and_a_looser_one_reuses_its_prefix(
        dense, tmp_path):
    base = _macs_ms(dense)
    p = netadapt.Plan(budget_ms=1.0)
    assert p.key({}) == netadapt.Plan(budget_ms=2.0, max_steps=3).key({})   # one trajectory
    assert p.key({}) != netadapt.Plan(budget_ms=1.0, step_frac=0.1).key({})
    loose, _ = _run(dense, base * 0.8, state_dir=tmp_path, state_key="k")
    tight_alone, _ = _run(dense, base * 0.5)
    tight, tuned = _run(dense, base * 0.5, state_dir=tmp_path, state_key="k")
    assert min(i for i, _ in tuned) == len(loose.steps)   # the loose steps were not redone
    # the same path up to the loose budget's last step, which aimed no further than that
    # budget needed (step_reduction), so from there the paths may part; both meet 0.5
    assert [s.keep for s in tight.steps[:len(loose.steps)]] == [s.keep for s in loose.steps]
    assert len(tight.steps) > len(loose.steps) and tight.met and tight_alone.met
    assert [s.keep for s in tight_alone.steps[:len(loose.steps) - 1]] == \
        [s.keep for s in loose.steps[:-1]]
    again, tuned = _run(dense, base * 0.8, state_dir=tmp_path, state_key="k")
    assert tuned == [] and again.keep == pytest.approx(loose.keep)   # cut at the first step
    assert len(again.steps) == len(loose.steps) and again.met       # that meets 0.8
    assert json.loads((tmp_path / "steps.json").read_text())["steps"].__len__() == len(tight.steps)


def test_plan_checks_and_dry_run_arithmetic():
    with pytest.raises(ConfigError, match="target-latency-ms"):
        netadapt.Plan(budget_ms=0).validate()
    plan = netadapt.Plan(budget_ms=5.0, step_frac=0.1, decay=1.0)
    assert plan.expected_steps(10.0, 5.0) == 5
    assert plan.expected_steps(10.0, 10.0) == 0
    assert netadapt.Plan(budget_ms=1, max_steps=3).expected_steps(10.0, 0.0) == 3
    assert plan.key({"a": 1}) != netadapt.Plan(budget_ms=4.0).key({"a": 1})


def test_candidates_are_what_proposal_asks_first_one_stage_at_a_time(dense):
    widths, plan = netadapt.stage_widths(dense), netadapt.Plan(1.0)
    keep = (1.0,) * netadapt.UNITS
    cands = netadapt.candidates(keep, widths, plan, depth=3)
    asked = []
    for stage in range(netadapt.UNITS):
        # a target nothing meets: proposal walks every channel count of the stage
        netadapt.proposal(keep, stage, -1.0, lambda k: asked.append(k) or 1.0, widths, plan)
    for c in cands:
        changed = [i for i, (a, b) in enumerate(zip(c, keep, strict=True)) if a != b]
        assert len(changed) == 1 and c[changed[0]] < 1.0
        assert c in asked                     # the batch is what the step will ask
    per_stage = [sum(1 for c in cands if c[s] != 1.0) for s in range(netadapt.UNITS)]
    # three below the current width, fewer only where min_channels stops it (stage 1: 16→8)
    assert per_stage == [min(3, (w - 8) // 8) for w in widths]


def test_a_reduction_no_stage_can_make_alone_is_halved_before_giving_up(dense):
    _score.dense = dense
    est = _table(dense)
    res = netadapt.search(copy.deepcopy(dense), dense, IMG,
                          netadapt.Plan(budget_ms=_macs_ms(dense) * 0.8, step_frac=0.9,
                                        max_steps=2),
                          estimate=est, measure=_macs_ms, tune=lambda *a: None, score=_score)
    # 0.9 of the start in one stage is impossible (the largest share is 0.14): it was halved
    assert res.steps and res.stop != "no_proposal"
    assert est(tuple(res.steps[0].keep)) > est((1.0,) * 15) * 0.1


def test_proposal_fetches_before_estimating_and_skips_a_unit_whose_deepest_cut_misses(dense):
    widths, plan, est = netadapt.stage_widths(dense), netadapt.Plan(1.0), _table(dense)
    fetched, asked = [], []

    def estimate(k):
        assert k in {c for b in fetched for c in b}      # never estimated before fetched
        asked.append(k)
        return est(k)

    keep = (1.0,) * 15
    cands = netadapt.unit_candidates(keep, 6, widths, plan)
    assert len(cands) == widths[6] // 8 - 1 > 8            # every count below the width
    # nothing meets: the first four and the deepest are asked, once, and no walk follows
    assert netadapt.proposal(keep, 6, -1.0, estimate, widths, plan, fetched.append) is None
    assert fetched == [cands[:4] + cands[-1:]] and asked == fetched[0]


def test_a_steps_proposals_are_the_walks_answers_in_a_few_trips(dense):
    """All fifteen lists in lock step: each a unit's (and the whole network's) first keep
    meeting the target, as a walk from the top finds it, with one prefetch per round
    (four rounds at most here, against one or more per unit)."""
    widths, plan, est = netadapt.stage_widths(dense), netadapt.Plan(1.0), _table(dense)
    keep = (1.0,) * 4 + (0.5, 0.5) + (1.0,) * 9
    for frac in (0.995, 0.97, 0.9, 0.8, 0.6):
        target = est(keep) * frac
        trips = []
        got = netadapt.step_proposals(keep, target, est, widths, plan, trips.append)
        lists = [netadapt.unit_candidates(keep, u, widths, plan) for u in range(15)]
        lists.append(netadapt.whole_candidates(keep, widths, plan))
        walk = [next((c for c in cands if est(c) <= target), None) for cands in lists]
        assert got == walk, frac
        assert 1 <= len(trips) <= 4, (frac, len(trips))
        asked = sum(len(t) for t in trips)
        assert asked < sum(len(c) for c in lists) / 2    # far fewer than a walk's worst
    # the whole network off: its list is empty and its proposal None
    on = netadapt.step_proposals(keep, est(keep) * 0.9, est, widths, plan)
    off = netadapt.step_proposals(keep, est(keep) * 0.9, est, widths,
                                  netadapt.Plan(1.0, whole=False))
    assert on[-1] is not None and off[-1] is None and off[:15] == on[:15]



def test_the_whole_network_proposal_cuts_every_stage_by_the_largest_common_fraction(dense):
    est, widths, plan = _table(dense), netadapt.stage_widths(dense), netadapt.Plan(1.0)
    keep = (1.0,) * 4 + (0.5, 0.5) + (1.0,) * 9
    target = est(keep) * 0.9
    cand = netadapt.whole_proposal(keep, target, est, widths, plan)
    assert cand is not None and est(cand) <= target
    chans = [search_units.round_channels(k * w, 8) for k, w in zip(cand, widths, strict=True)]
    now = [search_units.round_channels(k * w, 8) for k, w in zip(keep, widths, strict=True)]
    assert all(c <= n for c, n in zip(chans, now, strict=True)) and chans != now
    assert sum(c < n for c, n in zip(chans, now, strict=True)) >= 3   # a cut everywhere wide
    # a target nearer the current estimate takes a shallower cut (the largest that meets it)
    looser = netadapt.whole_proposal(keep, est(keep) * 0.999, est, widths, plan)
    assert looser is not None and est(looser) > est(cand)
    # nothing left to cut: every stage at min_channels
    floor = tuple(8 / w for w in widths)
    assert netadapt.whole_proposal(floor, 0.0, est, widths, plan) is None


def test_a_search_without_the_whole_unit_proposes_stages_only(dense):
    _score.dense = dense
    budget = _macs_ms(dense) * 0.6
    units = []
    for whole in (True, False):
        tuned: list[tuple[int, int]] = []
        netadapt.search(copy.deepcopy(dense), dense, IMG,
                        netadapt.Plan(budget_ms=budget, whole=whole, max_steps=2),
                        estimate=_table(dense), measure=_macs_ms,
                        tune=lambda m, i, s, t=tuned: t.append((i, s)), score=_score)
        units.append({s for _i, s in tuned})
    assert netadapt.WHOLE in units[0] and netadapt.WHOLE not in units[1]
    assert netadapt.Plan(1.0).key({}) != netadapt.Plan(1.0, whole=False).key({})


def test_the_step_reduction_follows_what_was_measured(dense):
    plan = netadapt.Plan(budget_ms=1.0, step_frac=0.1, decay=1.0)

    def step(from_est, est, measured):
        return netadapt.Step(0, 0, [1.0] * 15, est, measured, 0.5, from_est_ms=from_est)

    # no steps yet: the schedule's, as the paper's
    assert netadapt.step_reduction(plan, 0, 10.0, 5.0, [], 5.0) == pytest.approx(1.0)
    # the table saw half the reduction the board measured: aim half as far in its terms
    steps = [step(10.0, 9.0, 8.0), step(9.0, 8.0, 6.0)]        # est −1, −1; measured −2, −2
    assert netadapt.local_gain(steps, 10.0) == pytest.approx(2.0)
    assert netadapt.step_reduction(plan, 2, 10.0, 6.0, steps, 10.0) == pytest.approx(0.5)
    # bounded: a step that measured slower (noise) does not turn the gain negative
    assert netadapt.local_gain([step(10.0, 9.0, 10.5)], 10.0) == 1.0
    assert netadapt.local_gain([step(10.0, 9.9, 5.0)], 10.0) == netadapt.GAIN_BOUNDS[1]
    # a model just over the budget: no further than the margin past it (at least a quarter)
    assert netadapt.step_reduction(plan, 0, 10.0, 1.2, [], 1.2) == pytest.approx(0.25)
    assert netadapt.step_reduction(plan, 0, 10.0, 1.01, [], 1.01) == pytest.approx(0.25)
    assert netadapt.step_reduction(plan, 0, 10.0, 1.4, [], 1.4) == pytest.approx(0.5)
    # only the last GAIN_STEPS count, and a step logged before the field is skipped
    old = netadapt.Step(0, 0, [1.0] * 15, 9.0, 10.0, 0.5)
    assert netadapt.local_gain([old, *steps], 10.0) == pytest.approx(2.0)
