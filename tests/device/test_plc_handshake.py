"""The PLC handshake state machine (pure): deadlines, faults, FIFO order, sequence numbers."""

from __future__ import annotations

from edge_agent.plc.handshake import (
    FAULT_DUPLICATE,
    FAULT_LINK,
    FAULT_NONE,
    FAULT_OVERRUN,
    FAULT_STOPPED,
    FAULT_TIMEOUT,
    SEQ_MAX,
    Handshake,
)

MS = 1_000_000


def test_verdict_in_time_passes_through_with_its_sequence_number():
    hs = Handshake(deadline_ms=100)
    part = hs.trigger(0, seq=42)
    assert part.seq == 42 and hs.busy and hs.ready
    assert hs.decide(42, True, 50 * MS, class_id=3, confidence=0.9)
    (r,) = hs.poll(60 * MS)
    assert (r.seq, r.passed, r.class_id, r.fault) == (42, True, 3, FAULT_NONE)
    assert not hs.busy and hs.in_flight == 0


def test_no_verdict_by_the_deadline_is_a_fail_with_the_timeout_code():
    hs = Handshake(deadline_ms=100)
    hs.trigger(0, seq=1)
    assert hs.poll(100 * MS) == []  # at the deadline: still in time
    (r,) = hs.poll(100 * MS + 1)
    assert (r.seq, r.passed, r.fault, r.fault_name) == (1, False, FAULT_TIMEOUT, "timeout")
    # the late verdict is dropped and counted, never a second result
    assert not hs.decide(1, True, 150 * MS)
    assert hs.poll(200 * MS) == []
    assert hs.counts["timeouts"] == 1 and hs.counts["results"] == 1


def test_a_verdict_after_the_deadline_but_before_the_poll_is_still_a_fail():
    hs = Handshake(deadline_ms=100)
    hs.trigger(0, seq=7)
    assert hs.expired(7, 101 * MS)
    assert not hs.decide(7, True, 101 * MS)
    (r,) = hs.poll(101 * MS)
    assert not r.passed and r.fault == FAULT_TIMEOUT


def test_out_of_order_verdicts_leave_in_trigger_order():
    hs = Handshake(deadline_ms=100)
    for seq in (1, 2, 3):
        hs.trigger(seq * MS, seq=seq)
    assert hs.decide(3, True, 10 * MS)
    assert hs.decide(2, False, 11 * MS)
    assert hs.poll(12 * MS) == []  # part 1 is the FIFO head and has no verdict yet
    assert hs.decide(1, True, 13 * MS)
    assert [(r.seq, r.passed) for r in hs.poll(14 * MS)] == [(1, True), (2, False), (3, True)]


def test_a_timed_out_head_releases_the_parts_behind_it():
    hs = Handshake(deadline_ms=100)
    hs.trigger(0, seq=1)
    hs.trigger(50 * MS, seq=2)
    assert hs.decide(2, True, 60 * MS)
    out = hs.poll(101 * MS)
    assert [(r.seq, r.passed, r.fault) for r in out] == [
        (1, False, FAULT_TIMEOUT), (2, True, FAULT_NONE)
    ]


def test_a_fault_fails_every_undecided_part_and_new_triggers_until_cleared():
    hs = Handshake(deadline_ms=100)
    hs.trigger(0, seq=1)
    hs.trigger(0, seq=2)
    assert hs.decide(1, True, 1 * MS)
    hs.fault(FAULT_LINK, "link down", 2 * MS)
    assert not hs.ready
    late = hs.trigger(3 * MS, seq=3)
    assert late.result is not None and late.result.fault == FAULT_LINK
    out = hs.poll(4 * MS)
    assert [(r.seq, r.passed, r.fault) for r in out] == [
        (1, True, FAULT_NONE), (2, False, FAULT_LINK), (3, False, FAULT_LINK)
    ]
    assert not hs.decide(2, True, 5 * MS)  # the verdict after the fault changes nothing
    hs.clear_fault()
    assert hs.ready and hs.trigger(6 * MS, seq=4).result is None


def test_stopping_fails_the_parts_in_flight():
    hs = Handshake(deadline_ms=1000)
    hs.trigger(0)
    hs.fault(FAULT_STOPPED, "agent stopping", 1 * MS)
    (r,) = hs.poll(1 * MS)
    assert not r.passed and r.fault == FAULT_STOPPED


def test_overrun_and_duplicate_numbers_fail_at_once_but_keep_their_place():
    hs = Handshake(deadline_ms=100, max_in_flight=2)
    hs.trigger(0, seq=1)
    dup = hs.trigger(0, seq=1)
    assert dup.result is not None and dup.result.fault == FAULT_DUPLICATE
    over = hs.trigger(0, seq=9)
    assert over.result is not None and over.result.fault == FAULT_OVERRUN
    assert hs.decide(1, True, 1 * MS)  # the first part 1 still gets its verdict
    out = hs.poll(2 * MS)
    assert [(r.seq, r.fault) for r in out] == [
        (1, FAULT_NONE), (1, FAULT_DUPLICATE), (9, FAULT_OVERRUN)
    ]


def test_own_numbers_count_up_skip_zero_and_wrap():
    hs = Handshake(deadline_ms=100, max_in_flight=100)
    assert [hs.trigger(0).seq for _ in range(3)] == [1, 2, 3]
    hs.trigger(0, seq=SEQ_MAX)
    assert hs.trigger(0).seq == 1
    assert not hs.decide(999, True, 0) and hs.counts["unknown"] == 1


def test_next_deadline_is_the_earliest_undecided_part():
    hs = Handshake(deadline_ms=100)
    assert hs.next_deadline_ns() is None
    hs.trigger(10 * MS, seq=1)
    hs.trigger(20 * MS, seq=2)
    hs.decide(1, True, 30 * MS)
    assert hs.next_deadline_ns() == 120 * MS
