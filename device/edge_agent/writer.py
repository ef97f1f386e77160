"""The journal writer: one record per part, and write-ahead between it and everything that
acts on the part.

Every part the agent accepts is recorded ``open`` when it is triggered (``open_part``, any
thread: no I/O there). Its verdict, queued by the main loop, is committed before anything
acts on it: only *then* is the reject pulse scheduled and the verdict handed to the PLC
handshake (``deliver``). The row is completed (``done``: result, fault, late) when the
verdict is delivered: at that commit for a line without a PLC; for a PLC, when the station
reports the result it delivered (``on_result``: the PLC's ack, or the result handed to the
backends), overrun, duplicate, stopped and timed-out parts included. Only a completed
record is reported (``on_committed``: log, ``--events`` line, MQTT), so the journal, the
PLC's result and the MQTT message say the same. The run's counts are the completed
records' (``journal_schema.tally``), counted here as they complete.

Events are committed in groups, in the order they came (one transaction, one fsync), by
this thread or, for a PLC server answering a trigger or an ack, by that server's thread
(``commit_now``: the reply leaves right after the commit). A
journal fault (disk full, read-only, corrupt file) never stops the line: records wait in
memory (``BACKLOG_MAX``) and are retried every ``RETRY_S``; their rejects still fire
(``actuated_before_journal``) and their verdicts still reach the PLC; a corrupt file is
moved aside and a fresh one started. Pulse outcomes (done / missed) are confirmed in the
journal from this thread.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.journal import Journal
from edge_agent.journal_schema import DONE, OPEN, is_corrupt, tally
from edge_agent.plc.handshake import FAULT_NAMES, FAULT_REASONS, FAULT_TIMEOUT

log = logging.getLogger(__name__)

BACKLOG_MAX = 10_000  # records held in memory while the journal cannot be written
QUEUE_MAX = 1024  # events waiting for the next commit before producers wait
RETRY_S = 1.0  # how often a faulted journal is tried again
RECENT_MAX = 4096  # completed PLC parts kept in memory for a verdict that comes after them
_STOP = object()
DROPPED_REASON = "the output was driven safe before the reject pulse fired (stop or fault)"
# What a completed record's delivery decides; a verdict that comes later does not change it.
LINE_KEYS = ("state", "result", "fault", "late", "action", "reason")

# (record, image or None, t_trigger_ns, fires a reject pulse)
Item = tuple[dict[str, Any], Any, int, bool]


class DecisionWriter:
    """One thread: commit, then actuate, deliver and report (see the module docstring)."""

    def __init__(
        self,
        journal: Any,
        actuator: Any,
        fault: Callable[[str, str], None],
        clear_fault: Callable[[str], None],
        on_miss: Callable[[], None],
        on_committed: Callable[[dict[str, Any]], None],
        deliver: Callable[[dict[str, Any]], Any] | None = None,
        device_id: str = "agent",
    ) -> None:
        self.journal = journal
        self.device_id = device_id
        self.actuator = actuator
        self._fault = fault
        self._clear_fault = clear_fault
        self._on_miss = on_miss
        self._on_committed = on_committed
        self._deliver = deliver
        # Records not yet written, by id (the latest of each): held while the journal
        # cannot be written. Value: (record, its reject fired before it was journaled).
        self.backlog: dict[str, tuple[dict[str, Any], bool]] = {}
        self._held_reports: list[dict[str, Any]] = []
        self.backlog_dropped = 0
        self._unbooked_drops = 0  # held decisions dropped, not yet in the journal's counter
        self._done: collections.deque[tuple[str, str]] = collections.deque()
        # Events in order; popped only under _commit_lock, so whoever commits (this thread,
        # or a PLC server's thread in commit_now) takes them all in order.
        self._events: collections.deque[Any] = collections.deque()
        self._q_cv = threading.Condition()
        self._commit_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ids: dict[int, str] = {}  # t_trigger_ns -> record id, until the loop takes it
        self._parts: dict[str, dict[str, Any]] = {}  # open records (this thread's)
        self._open_at: dict[int, str] = {}  # t_trigger_ns -> id of an open record
        self._recent: dict[str, dict[str, Any]] = {}  # completed PLC records (late verdicts)
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()

    # -- producers (any thread; no I/O) ---------------------------------------------------

    def open_part(self, t_trigger_ns: int, seq: int | None = None) -> str:
        """A part was accepted: its record is written ``open`` (the next group commit, or
        ``commit_now``)."""
        rec_id = str(uuid.uuid4())
        self._ids[t_trigger_ns] = rec_id
        while len(self._ids) > BACKLOG_MAX:  # parts that never reach the loop (overrun)
            self._ids.pop(next(iter(self._ids)), None)
        rec: dict[str, Any] = {
            "id": rec_id, "ts": time.time(), "t_trigger_ns": t_trigger_ns, "item": None,
            "state": OPEN, "decision": "reject", "action": "reject", "deadline_missed": False,
            "sample": None,
        }
        if seq is not None:
            rec["plc"] = {"seq": seq}
        self._put(("open", rec))
        return rec_id

    def part_id(self, t_trigger_ns: int) -> str:
        """The record id of the part triggered at ``t_trigger_ns`` (one is made if it was
        never opened: a caller that records decisions directly)."""
        return self._ids.pop(t_trigger_ns, None) or str(uuid.uuid4())

    def put(self, item: Item) -> None:
        """Queue one verdict (blocks only if the disk is far behind: backpressure)."""
        self._put(item)

    def _put(self, ev: Any, wait: bool = True) -> None:
        with self._q_cv:
            while wait and len(self._events) >= QUEUE_MAX and ev is not _STOP:
                self._q_cv.wait(0.1)
            self._events.append(ev)
            self._q_cv.notify_all()

    def commit_now(self) -> bool:
        """Commit everything queued, in the calling thread, before returning (a PLC
        server answers a trigger or an ack only after this: no thread hop between the
        record being written and the reply). True unless the journal is faulted."""
        with self._commit_lock:
            batch = self._take()
            return self.commit(batch, defer=True) if batch else True

    def _take(self) -> list[Any]:
        with self._q_cv:
            batch = list(self._events)
            self._events.clear()
            self._q_cv.notify_all()
        return batch

    def on_result(self, result: Any, done: Any = None) -> Any:
        """The PLC result delivered for a part (``plc.handshake.Result``); ``done`` (made
        here when not given: anything with ``set()``) is set once the completed record is
        committed (or held: journal fault), and returned."""
        done = done if done is not None else threading.Event()
        self._put(("result", result, done))
        return done

    def sync(self, timeout: float = 30) -> bool:
        """Wait until everything queued so far is committed (or held)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._put(("sync", done))
        return done.wait(timeout)

    def run_counts(self) -> dict[str, int]:
        """This run's completed records, by ``journal_schema.tally`` (``total``, ``ok``,
        ``reject``, ``review``, ``passed``, ``failed``, ``late``, ``fault_<name>`` ...)."""
        with self._counts_lock:
            return dict(self._counts)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Commit what is queued, then end the thread."""
        self._put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def on_pulse_done(self, outcomes: list[tuple[Any, str]]) -> None:
        """(journal id, done | late | dropped) from the actuator's thread: no I/O here."""
        self._done.extend((str(t), o) for t, o in outcomes)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        next_retry = 0.0
        while not stop:
            with self._q_cv:
                if not self._events:
                    self._q_cv.wait(0.1)
            with self._commit_lock:
                batch = self._take()
                if _STOP in batch:
                    stop = True
                    batch = [b for b in batch if b is not _STOP]
                if batch or (self.backlog and time.monotonic() >= next_retry):
                    if not self.commit(batch):
                        next_retry = time.monotonic() + RETRY_S
                self.flush_done()

    def commit(self, batch: list[Any], defer: bool = False) -> bool:
        """Apply ``batch`` (opens, verdicts, results, in order) to the records and write the
        backlog and them in one transaction; on success schedule their pulses, hand the
        verdicts to the PLC and report what completed. On a journal fault keep rejecting
        (fire the pulses now), keep delivering, and hold the records in memory. With
        ``defer`` what follows the write is queued for this thread (``commit_now``: the
        caller's reply leaves first)."""
        posts: list[Callable[[], None]] = []
        dirty: dict[str, dict[str, Any]] = {}
        images: dict[str, Any] = {}
        schedule: list[tuple[dict[str, Any], int]] = []
        deliver: list[dict[str, Any]] = []
        report: list[dict[str, Any]] = []
        waiters: list[threading.Event] = []
        for ev in batch:
            if isinstance(ev[0], dict):  # a verdict from the main loop
                rec, img, t_trig, rejects = ev
                rec = self._verdict(rec, report)
                dirty[rec["id"]] = rec
                if img is not None:
                    images[rec["id"]] = img
                if rejects:
                    schedule.append((rec, t_trig))
                if "plc" in rec:
                    deliver.append(rec)
            elif ev[0] == "open":
                rec = ev[1]
                self._parts[rec["id"]] = rec
                self._open_at[rec["t_trigger_ns"]] = rec["id"]
                dirty[rec["id"]] = rec
            elif ev[0] == "result":
                rec = self._delivered(ev[1])
                dirty[rec["id"]] = rec
                report.append(rec)
                waiters.append(ev[2])
            elif ev[0] == "sync":
                waiters.append(ev[1])
            elif ev[0] == "post":
                posts.append(ev[1])
        written = self._write(dirty, images, {rec["id"] for rec, _ in schedule})
        for w in waiters:  # first: a PLC's reply waits on these
            w.set()

        def after() -> None:
            for post in posts:
                post()
            self._after(written, schedule, deliver, report)

        if defer:
            self._put(("post", after), wait=False)  # under the commit lock: never wait
        else:
            after()
        return written

    def _after(self, written: bool, schedule: list[tuple[dict[str, Any], int]],
               deliver: list[dict[str, Any]], report: list[dict[str, Any]]) -> None:
        """What follows a write: pulses, verdicts to the PLC, reports."""
        if not written:  # held: the line goes on (pulses now, verdicts to the PLC)
            for rec, t_trig in schedule:
                if not self.actuator.schedule(t_trig):
                    self._on_miss()
                log.warning("unjournaled reject %s (item %s)", rec["id"], rec.get("item"))
            self._held_reports.extend(report)
            report = []
        else:
            for rec, t_trig in schedule:
                if not self.actuator.schedule(t_trig, tag=rec["id"]):
                    self._on_miss()
                    self._done.append((rec["id"], "missed"))
                    if rec.get("state") == DONE and not rec.get("deadline_missed"):
                        with self._counts_lock:  # as the journal counts it (mark_actuated)
                            self._counts.update(["deadline_misses"] + (
                                [] if rec.get("late") else ["late"]))
                        rec["late"] = True
                    rec["deadline_missed"] = True
        for rec in deliver:
            self._hand_over(rec)
        if written:
            report, self._held_reports = self._held_reports + report, []
        for rec in report:
            try:
                self._on_committed(rec)
            except Exception:  # noqa: BLE001
                log.exception("reporting decision %s failed", rec["id"])

    def _write(self, dirty: dict[str, dict[str, Any]], images: dict[str, Any],
               rejects: set[str]) -> bool:
        """Write the backlog and ``dirty`` (one transaction); on a fault hold them."""
        backlog = self.backlog
        items = [(rec, None) for rid, (rec, _) in backlog.items() if rid not in dirty]
        items += [(rec, images.get(rid)) for rid, rec in dirty.items()]
        actuation = {rid: "pending" for rid in rejects}
        actuation.update({rid: "before_journal" for rid, (_, fired) in backlog.items()
                          if fired})
        for attempt in (1, 2):
            try:
                if items:
                    self.journal.record_many(items, actuation)
                break
            except Exception as err:  # noqa: BLE001 - a journal fault never stops the line
                if attempt == 1 and is_corrupt(err):
                    aside = self.journal.recover(str(err))
                    self._fault("journal_corrupt", f"corrupt journal moved to {aside}")
                    continue
                self._fault("journal", f"cannot write decisions: {err}")
                try:
                    self.journal.checkpoint()  # a WAL that cannot grow: fold it back in
                except Exception:  # noqa: BLE001
                    pass
                for rid, rec in dirty.items():  # held in memory without their images
                    if rid in images:
                        rec["sample"], rec["sample_dropped"] = None, True  # counted at commit
                    fired = rid in rejects or backlog.get(rid, (None, False))[1]
                    backlog.pop(rid, None)
                    backlog[rid] = (rec, fired)
                if len(backlog) > BACKLOG_MAX:
                    drop = len(backlog) - BACKLOG_MAX
                    if not self.backlog_dropped or (self.backlog_dropped + drop) // 1000 \
                            > self.backlog_dropped // 1000:
                        log.error("journal: %d held decisions dropped so far (more than %d "
                                  "held in memory); counted in dropped_decisions",
                                  self.backlog_dropped + drop, BACKLOG_MAX)
                    self.backlog_dropped += drop
                    self._unbooked_drops += drop
                    for rid in list(backlog)[:drop]:
                        del backlog[rid]
                return False
        if backlog:
            log.warning("journal writable again: %d held records committed", len(backlog))
        self.backlog = {}
        self._book_drops()
        self._clear_fault("journal")
        return True

    # -- the record of one part -----------------------------------------------------------

    def _verdict(self, rec: dict[str, Any], report: list[dict[str, Any]]) -> dict[str, Any]:
        """Merge a verdict into its part's record. Without a PLC the verdict is delivered
        by this commit (the pulse is scheduled after it): the record completes here."""
        rid = rec["id"]
        base = self._parts.get(rid) or self._recent.get(rid)
        if base is not None:
            merged = {**base, **rec, "ts": base["ts"]}
            if "plc" in base or "plc" in rec:
                merged["plc"] = {**base.get("plc", {}), **rec.get("plc", {})}
            if base.get("state") == DONE:  # delivered before its verdict (late): it stays
                merged.update({k: base.get(k) for k in LINE_KEYS if k in base})
                merged["plc"] = {**merged.get("plc", {}), **base.get("plc", {})}
                merged["deadline_missed"] = True
            rec = merged
        rec.setdefault("state", OPEN)
        if "plc" not in rec and rec["state"] == OPEN:
            rec.update(state=DONE, result="fail" if rec["action"] == "reject" else "pass",
                       fault="unclassifiable" if rec.get("error") else None,
                       late=bool(rec.get("deadline_missed")))
            self._completed(rec)
            report.append(rec)
        if rec["state"] == OPEN:
            self._parts[rid] = rec
        else:
            self._parts.pop(rid, None)
            self._open_at.pop(rec.get("t_trigger_ns", -1), None)
        if rid in self._recent:
            self._recent[rid] = rec
        return rec

    def _delivered(self, result: Any) -> dict[str, Any]:
        """Complete a PLC part's record with the result the PLC was given."""
        rid = self._open_at.pop(result.t_trigger_ns, None)
        rec = self._parts.pop(rid, None) if rid else None
        if rec is None:  # never opened (should not happen): a record of its own
            rec = {"id": str(uuid.uuid4()), "ts": time.time(),
                   "t_trigger_ns": result.t_trigger_ns, "item": None, "decision": "reject",
                   "deadline_missed": False, "sample": None, "plc": {"seq": result.seq}}
        fault = FAULT_NAMES.get(result.fault) if result.fault else None
        late = result.fault == FAULT_TIMEOUT
        passed = bool(result.passed)
        rec["plc"] = {
            **rec.get("plc", {}), "seq": result.seq, "result": "pass" if passed else "fail",
            "fault": result.fault, "fault_name": FAULT_NAMES.get(result.fault, "none"),
            "late": late, "class_id": result.class_id,
            "confidence": round(float(result.confidence), 6),
            "delivered": bool(getattr(result, "delivered", True)),
        }
        if result.t_result_ns and result.t_trigger_ns:  # trigger → verdict (or its Fail)
            rec["plc"]["verdict_ms"] = round((result.t_result_ns - result.t_trigger_ns) / 1e6, 3)
        rec.update(state=DONE, result="pass" if passed else "fail", fault=fault, late=late,
                   action="pass" if passed else "reject")
        if late:
            rec["deadline_missed"] = True
        if fault in FAULT_REASONS and rec.get("label") is None:
            rec["reason"] = FAULT_REASONS[fault]
        self._completed(rec)
        self._recent[rec["id"]] = rec
        while len(self._recent) > RECENT_MAX:
            self._recent.pop(next(iter(self._recent)))
        return rec

    def _completed(self, rec: dict[str, Any]) -> None:
        with self._counts_lock:
            self._counts.update(tally(rec))

    def _book_drops(self) -> None:
        """Held decisions dropped while the journal was down go into ``dropped_decisions``
        once it can be written (the host sees the loss in heartbeats)."""
        if self._unbooked_drops:
            try:
                self.journal.bump("dropped_decisions", self._unbooked_drops)
                self._unbooked_drops = 0
            except Exception:  # noqa: BLE001 - tried again after the next commit
                pass

    def _hand_over(self, rec: dict[str, Any]) -> None:
        """Give the verdict to the PLC handshake (a verdict after the part's deadline: the
        handshake has failed the part, and its result completes the record)."""
        if self._deliver is None:
            return
        try:
            self._deliver(rec)
        except Exception:  # noqa: BLE001
            log.exception("plc: delivering decision %s failed", rec["id"])

    def flush_done(self) -> None:
        outcomes: dict[str, str] = {}
        while self._done:
            tag, outcome = self._done.popleft()
            outcomes[tag] = outcome
        if not outcomes:
            return
        try:
            self.journal.mark_actuated(outcomes, DROPPED_REASON)
        except Exception as err:  # noqa: BLE001 - retried; a restart reconciles them
            self._fault("journal", f"cannot confirm actuations: {err}")
            self._done.extend(outcomes.items())

    def settle(self, reason: str) -> None:
        """After the actuator stopped: confirm what fired, reconcile what never will."""
        self.flush_done()
        try:
            n = self.journal.reconcile(reason)
        except Exception as err:  # noqa: BLE001
            self._fault("journal", f"cannot reconcile actuations: {err}")
            return
        if n:
            log.info("journal: %d rejects whose pulse had not fired at stop reconciled", n)
        if self.backlog:
            n = len(self.backlog)
            where = save_held(list(self.backlog.values()), self.journal.path.parent,
                              self.device_id)
            if where is not None:
                log.warning("journal: %d decisions could not be journaled before the stop; "
                            "kept in %s, committed at the next start", n, where)
                self._fault("journal", f"{n} decisions held at the stop, kept in {where}")
                self.backlog = {}
            else:
                log.error("journal: %d decisions could not be journaled before the stop and "
                          "no folder could keep them: lost", n)
                self._fault("journal", f"{n} decisions lost at the stop (nowhere to keep them)")


HELD_FILE = "edge-agent-held-{device}.jsonl"


def held_dirs(journal_dir: Path) -> list[Path]:
    """Where decisions held at a stop are kept, best first: the journal's folder, the
    unit's runtime folder (``RuntimeDirectoryPreserve=yes``: survives a restart, not a
    power loss), the temp folder. A read-only journal disk falls through to the next."""
    dirs = [journal_dir]
    if os.environ.get("RUNTIME_DIRECTORY"):
        dirs.append(Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]))
    dirs.append(Path(tempfile.gettempdir()))
    return dirs


def save_held(backlog: list[tuple[dict[str, Any], bool]], journal_dir: Path,
              device: str) -> Path | None:
    """Write held records (JSON lines, fsynced) to the first folder that takes them."""
    lines = "".join(json.dumps({"rec": rec, "rejects": bool(fired)}, default=str) + "\n"
                    for rec, fired in backlog)
    for folder in held_dirs(journal_dir):
        path = folder / HELD_FILE.format(device=device)
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
            return path
        except OSError:
            continue
    return None


def recover_held(journal: Journal, device: str) -> int:
    """Commit what a stop with a faulted journal kept (``save_held``), count it
    (``held_recovered``) and remove the file; returns how many decisions."""
    total = 0
    for folder in held_dirs(journal.path.parent):
        path = folder / HELD_FILE.format(device=device)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        items: list[tuple[dict[str, Any], Any]] = []
        actuation: dict[str, str] = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                rec = dict(entry["rec"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a power cut
            items.append((rec, None))
            if entry.get("rejects"):
                actuation[str(rec["id"])] = "before_journal"
        if items:
            journal.record_many(items, actuation)
            journal.bump("held_recovered", len(items))
            log.warning("journal: %d decisions held at the last stop committed from %s",
                        len(items), path)
        path.unlink(missing_ok=True)
        total += len(items)
    return total


def open_journal(config: Any, fault: Callable[[str, str], None]) -> Journal:
    """The journal; a corrupt file is moved aside (fault raised); an unusable folder
    (read-only, full) falls back to a journal in the runtime folder (RAM), fault raised."""
    jc = config.journal
    kw = {"synchronous": jc.synchronous, "sample_format": config.samples.format}
    try:
        journal = Journal(jc.dir, **kw)
    except (OSError, sqlite3.Error) as err:
        fallback = Path(
            os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir()
        ) / f"edge-agent-journal-{config.device_id}"
        fault(
            "journal_open",
            f"cannot open the journal in {jc.dir} ({err}); journaling to {fallback} "
            "(lost on power loss) until it is fixed",
        )
        return Journal(fallback, **kw)
    if journal.recovered:
        fault("journal_corrupt", f"corrupt journal moved to {journal.recovered}")
    return journal
