"""The journal writer: write-ahead between a decision and everything that acts on it.

Decisions queued by the main loop are committed in groups; only *then* is the reject pulse
scheduled, the verdict handed to the PLC handshake (``deliver``) and the decision reported
(``on_committed``: log, ``--events`` line, MQTT). A journal fault (disk full, read-only,
corrupt file) never stops the line: decisions wait in memory (``BACKLOG_MAX``) and are
retried every ``RETRY_S``; their rejects still fire (``actuated_before_journal``) and their
verdicts still reach the PLC; a corrupt file is moved aside and a fresh one started.
Pulse outcomes (done / missed) are confirmed in the journal from this thread.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.journal import Journal
from edge_agent.journal_schema import is_corrupt

log = logging.getLogger(__name__)

BACKLOG_MAX = 10_000  # decisions held in memory while the journal cannot be written
RETRY_S = 1.0  # how often a faulted journal is tried again
_STOP = object()
DROPPED_REASON = "the output was driven safe before the reject pulse fired (stop or fault)"

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
        self.backlog: list[Item] = []
        self.backlog_dropped = 0
        self._unbooked_drops = 0  # held decisions dropped, not yet in the journal's counter
        self._done: collections.deque[tuple[str, str]] = collections.deque()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=256)
        self._thread: threading.Thread | None = None

    def put(self, item: Item) -> None:
        """Queue one decision (blocks only if the disk is far behind: backpressure)."""
        self._queue.put(item)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Commit what is queued, then end the thread."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def on_pulse_done(self, outcomes: list[tuple[Any, str]]) -> None:
        """(journal id, done | late | dropped) from the actuator's thread: no I/O here."""
        self._done.extend((str(t), o) for t, o in outcomes)

    def _run(self) -> None:
        stop = False
        next_retry = 0.0
        while not stop:
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                batch = []
            while batch and len(batch) < 64:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stop = True
                batch = [b for b in batch if b is not _STOP]
            if batch or (self.backlog and time.monotonic() >= next_retry):
                if not self.commit(batch):
                    next_retry = time.monotonic() + RETRY_S
            self.flush_done()

    def commit(self, batch: list[Item]) -> bool:
        """Write the backlog and ``batch``; on success schedule their pulses. On a journal
        fault keep rejecting (fire the pulses now) and hold the records in memory."""
        backlog = self.backlog
        items = [(rec, img) for rec, img, _, _ in backlog + batch]
        actuation = {rec["id"]: "before_journal" for rec, _, _, rej in backlog if rej}
        actuation.update({rec["id"]: "pending" for rec, _, _, rej in batch if rej})
        for attempt in (1, 2):
            try:
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
                for rec, _, t_trig, rejects in batch:
                    if rejects and not self.actuator.schedule(t_trig):
                        self._on_miss()
                    if rejects:
                        log.warning("unjournaled reject %s (item %s)", rec["id"], rec["item"])
                    self._hand_over(rec)  # a late one is marked in rec: committed so later
                for rec, img, t, rej in batch:  # held in memory without their images
                    if img is not None:
                        rec["sample"], rec["sample_dropped"] = None, True  # counted at commit
                    backlog.append((rec, None, t, rej))
                if len(backlog) > BACKLOG_MAX:
                    drop = len(backlog) - BACKLOG_MAX
                    if not self.backlog_dropped or (self.backlog_dropped + drop) // 1000 \
                            > self.backlog_dropped // 1000:
                        log.error("journal: %d held decisions dropped so far (more than %d "
                                  "held in memory); counted in dropped_decisions",
                                  self.backlog_dropped + drop, BACKLOG_MAX)
                    self.backlog_dropped += drop
                    self._unbooked_drops += drop
                    del backlog[:drop]
                return False
        if backlog:
            log.warning("journal writable again: %d held decisions committed", len(backlog))
        self.backlog = []
        self._book_drops()
        self._clear_fault("journal")
        late = []
        for rec, _, t_trig, rejects in batch:
            if rejects and not self.actuator.schedule(t_trig, tag=rec["id"]):
                self._on_miss()
                self._done.append((rec["id"], "missed"))
            if self._hand_over(rec) is False and "plc" in rec:
                late.append(rec["id"])
        if late:
            try:  # what the PLC got is what the journal says (before anything reports it)
                self.journal.mark_plc_late(late)
            except Exception as err:  # noqa: BLE001
                self._fault("journal", f"cannot record late verdicts: {err}")
        for rec, _, _, _ in backlog + batch:
            try:
                self._on_committed(rec)
            except Exception:  # noqa: BLE001
                log.exception("reporting decision %s failed", rec["id"])
        return True

    def _book_drops(self) -> None:
        """Held decisions dropped while the journal was down go into ``dropped_decisions``
        once it can be written (the host sees the loss in heartbeats)."""
        if self._unbooked_drops:
            try:
                self.journal.bump("dropped_decisions", self._unbooked_drops)
                self._unbooked_drops = 0
            except Exception:  # noqa: BLE001 - tried again after the next commit
                pass

    def _hand_over(self, rec: dict[str, Any]) -> bool | None:
        """Give the verdict to the PLC handshake. False: it came after the part's deadline,
        so the PLC got a Fail (fault 1): the record is made to say so (``plc.late``,
        ``plc.result``, ``action: reject``, a deadline miss) before it is reported."""
        if self._deliver is None:
            return None
        try:
            ok = self._deliver(rec)
        except Exception:  # noqa: BLE001
            log.exception("plc: delivering decision %s failed", rec["id"])
            return None
        if ok is False and "plc" in rec:
            mark_late(rec)
        return ok if isinstance(ok, bool) else None

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
            where = save_held(self.backlog, self.journal.path.parent, self.device_id)
            if where is not None:
                log.warning("journal: %d decisions could not be journaled before the stop; "
                            "kept in %s, committed at the next start", n, where)
                self._fault("journal", f"{n} decisions held at the stop, kept in {where}")
                self.backlog = []
            else:
                log.error("journal: %d decisions could not be journaled before the stop and "
                          "no folder could keep them: lost", n)
                self._fault("journal", f"{n} decisions lost at the stop (nowhere to keep them)")


def mark_late(rec: dict[str, Any]) -> None:
    """The record of a part whose verdict reached the PLC after its deadline: the PLC
    rejected it (Fail, fault 1), so that is what the line did (``Journal.mark_plc_late``
    writes the same into a committed row)."""
    rec["plc"] = {**rec["plc"], "late": True, "result": "fail", "fault": 1}
    rec["action"] = "reject"
    rec["deadline_missed"] = True


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


def save_held(backlog: list[Item], journal_dir: Path, device: str) -> Path | None:
    """Write held decisions (JSON lines, fsynced) to the first folder that takes them."""
    lines = "".join(json.dumps({"rec": rec, "rejects": bool(rej)}, default=str) + "\n"
                    for rec, _, _, rej in backlog)
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
