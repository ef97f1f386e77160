"""Sync the journal to the host collector: decisions, samples and heartbeats.

A background worker (``start()``/``stop()``, plugged into the agent with
``Agent.add_worker``) reads unsent journal rows in bounded batches, posts them, and marks
them sent only after a 2xx; while the host is away it retries with exponential backoff
and jitter. Its only state is the journal, so a restart (even after SIGKILL) resumes
where it stopped: a batch posted but not yet marked is posted again and the collector
counts it as a duplicate (records are keyed by their id). Nothing is lost, nothing is
stored twice, and the inspection loop never waits on the network (it only shares the
journal's short lock).

Poison records: when the collector refuses a batch as invalid (400/422, ``is_poison``),
the batch is split in halves until the refused record is alone; that record is
quarantined in the journal (kept, counted in ``quarantined``, never sent again) and sync
goes on with the others.

The decisions are pure functions (``backoff.backoff_delay``, ``next_batch_size``,
``sample_content_type``, ``is_success``, ``is_poison``); ``SyncWorker`` does the I/O.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.backoff import backoff_delay
from edge_agent.hostclient import HostClient, HostUnavailable, is_success
from edge_agent.journal import Journal
from edge_common.errors import ConfigError

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
SAMPLES_PER_ROUND = 50
MAX_BATCHES_PER_ROUND = 20


# -- pure decisions ----------------------------------------------------------------------


def next_batch_size(current: int, configured: int, status: int | None) -> int:
    """The batch size after a response: halve on 413 (too large), back to the configured
    size after a success, unchanged otherwise."""
    if status == 413:
        return max(1, current // 2)
    if status is not None and is_success(status):
        return configured
    return current


POISON_STATUSES = (400, 422)


def is_poison(status: int | None) -> bool:
    """Whether the collector refused the content itself (not auth, size, rate or outage):
    retrying the same records would fail forever."""
    return status in POISON_STATUSES


def sample_content_type(path: str | Path) -> str | None:
    """The MIME type the collector expects for a sample file, from its extension."""
    suffix = Path(path).suffix.lower()
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}.get(suffix)


# -- I/O ---------------------------------------------------------------------------------


class SyncWorker:
    """Background sender of journal rows, samples and heartbeats to the collector."""

    def __init__(
        self,
        journal: Journal,
        client: HostClient,
        *,
        batch_size: int = 200,
        interval_s: float = 10.0,
        heartbeat_s: float = 30.0,
        backoff_max_s: float = 300.0,
        snapshot: Callable[[], dict[str, Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.journal = journal
        self.client = client
        self.batch_size = self._batch = max(1, batch_size)
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.backoff_max_s = backoff_max_s
        self.snapshot = snapshot
        self.rng = rng or random.Random()
        self.failures = 0
        self.sent = 0
        self.samples_sent = 0
        self.duplicates = 0
        self.quarantined = 0
        self.desired_version: str | None = None
        self.last_error: str | None = None
        self._last_heartbeat = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls, config: Any, journal: Journal, snapshot: Callable[[], dict[str, Any]] | None = None
    ) -> SyncWorker:
        h = config.host
        return cls(
            journal,
            HostClient.from_config(config),
            batch_size=h.batch_size,
            interval_s=h.interval_s,
            heartbeat_s=h.heartbeat_s,
            backoff_max_s=h.backoff_max_s,
            snapshot=snapshot,
        )

    # -- one round -----------------------------------------------------------------------

    def send_decisions(self) -> int:
        """Send one batch of unsent decisions; return how many were sent (0: none left)."""
        rows = self.journal.unsent(self._batch)
        if not rows:
            return 0
        return self._send(rows)

    def _send(self, rows: list[dict[str, Any]]) -> int:
        """Post ``rows``; a poison refusal is bisected down to the record(s) at fault,
        which are quarantined. Returns how many rows left the unsent queue."""
        try:
            result = self.client.post_decisions(rows)
        except HostUnavailable as err:
            if not is_poison(err.status):
                self._batch = next_batch_size(self._batch, self.batch_size, err.status)
                raise
            if len(rows) == 1:
                reason = f"refused by the collector: {err}"
                if self.journal.quarantine(rows[0]["id"], reason):
                    self.quarantined += 1
                    log.error("sync: record %s quarantined (%s)", rows[0]["id"], err)
                return 1
            half = len(rows) // 2
            return self._send(rows[:half]) + self._send(rows[half:])
        self._batch = next_batch_size(self._batch, self.batch_size, 200)
        self.journal.mark_sent([r["id"] for r in rows])
        self.sent += len(rows)
        self.duplicates += int(result.get("duplicates", 0))
        return len(rows)

    def send_samples(self, limit: int = SAMPLES_PER_ROUND) -> int:
        """Upload up to ``limit`` unsent samples, one at a time; return how many."""
        n = 0
        for s in self.journal.unsent_samples(limit):
            ctype = sample_content_type(s["path"])
            try:
                data = Path(s["path"]).read_bytes() if ctype else None
            except FileNotFoundError:
                data = None
            if data is None:
                # Pruned by the disk budget or an unknown format: nothing left to send.
                log.warning(
                    "sync: sample %s (%s) is gone or unsupported; skipping", s["id"], s["path"]
                )
                self.journal.mark_samples_sent([s["id"]])
                continue
            assert ctype is not None
            self.client.put_sample(s["decision_id"], data, ctype)
            self.journal.mark_samples_sent([s["id"]])
            self.samples_sent += 1
            n += 1
        return n

    def send_heartbeat(self, now: float | None = None) -> bool:
        """Send a heartbeat if one is due; True if sent."""
        now = time.monotonic() if now is None else now
        if now - self._last_heartbeat < self.heartbeat_s:
            return False
        body = self.snapshot() if self.snapshot else self._journal_snapshot()
        answer = self.client.heartbeat(body)
        self.desired_version = answer.get("desired_version")
        self._last_heartbeat = now
        return True

    def _journal_snapshot(self) -> dict[str, Any]:
        counts = self.journal.counts()
        return {
            "device_id": self.client.device_id,
            "counts": counts,
            "deadline_misses": counts.get("deadline_misses"),
            "disk_bytes": self.journal.disk_bytes(),
        }

    def sync_once(self) -> bool:
        """One round: heartbeat if due, decisions (a bounded number of batches), samples.

        Returns True when more is waiting (call again soon). ``HostUnavailable`` on failure.
        """
        self.send_heartbeat()
        batches = 0
        while batches < MAX_BATCHES_PER_ROUND and self.send_decisions():
            batches += 1
        more = batches == MAX_BATCHES_PER_ROUND
        sent = self.send_samples()
        return more or sent == SAMPLES_PER_ROUND

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send everything now (tests, shutdown); True if nothing is left unsent."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not self.sync_once():
                    return True
            except HostUnavailable as err:
                self.last_error = str(err)
                return False
        return False

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                more = self.sync_once()
            except HostUnavailable as err:
                self.failures += 1
                self.last_error = str(err)
                wait = backoff_delay(
                    self.failures,
                    min(BACKOFF_BASE_S, self.interval_s),
                    self.backoff_max_s,
                    self.rng.random(),
                )
                log.warning("sync: %s; retrying in %.1fs", err, wait)
            except Exception:  # never let the worker die silently; keep the journal
                self.failures += 1
                wait = backoff_delay(
                    self.failures, BACKOFF_BASE_S, self.backoff_max_s, self.rng.random()
                )
                log.exception("sync: unexpected error; retrying in %.1fs", wait)
            else:
                if self.failures:
                    log.info("sync: collector reachable again")
                self.failures = 0
                self.last_error = None
                wait = 0.0 if more else min(self.interval_s, self.heartbeat_s)
            self._stop.wait(wait)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edge-sync", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 3.0) -> None:
        """Stop the worker; if the host was reachable, send what is left (``drain_s`` at
        most, so a shutdown never hangs on the network; the rest waits in the journal)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.client.timeout + 1.0)
            self._thread = None
        if drain_s > 0 and self.failures == 0:
            self.flush(timeout_s=drain_s)


def attach(agent: Any) -> list[Any]:
    """Add to ``agent`` the workers its config asks for: sync (``host.url`` set) and
    model updates (``update.enabled``). Returns them."""
    cfg = agent.config
    workers: list[Any] = []
    if cfg.host.url:
        client = HostClient.from_config(cfg)
        workers.append(SyncWorker.from_config(cfg, agent.journal, snapshot=agent.snapshot))
        if cfg.update.enabled:
            from edge_agent.update import UpdateWorker

            workers.append(UpdateWorker.from_config(agent, client))
    elif cfg.update.enabled:
        raise ConfigError("config: update.enabled: needs host.url")
    for w in workers:
        agent.add_worker(w)
    return workers
