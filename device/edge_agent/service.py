"""The agent's main loop: trigger → camera → classifier → decision → actuator → journal.

Threads: the main loop (capture, classify, decide; pings the systemd watchdog, so a hung
loop gets the service restarted), the actuator's scheduler, the journal writer
(``writer.py``: commits decisions, *then* schedules their reject pulses, hands verdicts to
the PLC and reports them: write-ahead, a decision is durable before its pulse fires or
anything — log, status, ``--events`` line, PLC result, MQTT — acknowledges it), a reporter
(status file, periodic log line, caps; bodies in ``report.py``), the PLC station's clock
and servers when configured (``plc/``) and any workers added with ``add_worker``.

Fail-safe order: the actuator is claimed and driven to its safe level first (in
``__init__``, before the journal, the model or the camera); rejects a dead agent left
unconfirmed are reconciled at start; PLC parts still undecided at a stop or a link fault
get a Fail (``plc/handshake.py``). Journal faults (disk full, read-only, corrupt file)
raise a fault (``faults`` in the status, an error log line) and never stop the line:
decisions wait in memory and are retried, their rejects still fire (counted as
``actuated_before_journal``); a corrupt file is moved aside and a fresh one started.

Hooks for sync/update (docs/architecture.md, "Agent hooks"): ``run``, ``stop``,
``swap_classifier``, ``snapshot``, ``add_worker``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edge_agent import report
from edge_agent.budget import BudgetWatch
from edge_agent.camera import CameraError, EndOfStream, Resilient, make_camera
from edge_agent.classifier import Classifier
from edge_agent.config import AgentConfig
from edge_agent.decision import Policy, Verdict, decide, decide_error, keep_sample
from edge_agent.guard import open_output
from edge_agent.notify import Notifier
from edge_agent.pins import PinFactories
from edge_agent.stats import Stats
from edge_agent.trigger import GpioTrigger, make_trigger
from edge_agent.writer import DecisionWriter, open_journal, recover_held

log = logging.getLogger(__name__)

RECONCILE_DEAD = "agent stopped before the reject pulse was confirmed (kill or crash)"
RECONCILE_STOP = "agent stopped before the reject pulse fired"
REPUBLISH_ROWS = 200  # completed records published again at start (MQTT, at-least-once)
RECONCILE_CRASH = "agent stopped (kill or crash) before the part's verdict was delivered"


class Worker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class Agent:
    """The on-board inspection line. Components may be injected (tests, benchmarks);
    otherwise they are built from ``config`` by :meth:`open`."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        classifier: Classifier | None = None,
        camera: Any = None,
        trigger: Any = None,
        actuator: Any = None,
        notifier: Notifier | None = None,
        on_decision: Callable[[dict[str, Any]], None] | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.config = config
        self.pins = PinFactories(pin_factory)
        # Safe state first: claim the reject output and drive it to its safe level before
        # anything that can be slow or fail (journal, model, camera).
        self.actuator = actuator if actuator is not None else open_output(config.actuator,
                                                                          self.pins)
        self.faults: dict[str, str] = {}
        self.budget = BudgetWatch(self._fault, self._clear_fault)  # the bundle's latency budget
        self.journal = open_journal(config, self._fault)
        self.station: Any = None  # plc.station.Station when a PLC trigger or sink is set
        self.writer = DecisionWriter(
            self.journal,
            self.actuator,
            self._fault,
            self._clear_fault,
            lambda: self.stats.add_miss(),
            self._committed,
            deliver=lambda rec: self.station.deliver(rec) if self.station else None,
            device_id=config.device_id,
        )
        self.actuator.on_done = self.writer.on_pulse_done
        self.actuator.on_fault = self._actuator_failed
        self.classifier = classifier
        self.camera = camera
        self.trigger = trigger
        self.notifier = notifier or Notifier()
        self.on_decision = on_decision
        self.policy = Policy(**vars(config.decision))
        self.stats = Stats()
        self.state = "created"
        self.started = time.monotonic()
        self.counts = {"errors": 0}  # unclassifiable items; the line's counts: run_counts()
        self._closed_at_start: list[dict[str, Any]] = []
        self.truth_seen = 0
        self.truth_correct = 0
        self.last_id: str | None = None
        self._workers: list[Worker] = []
        self._worker_threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._pending: tuple[Classifier, threading.Event] | None = None
        self._running = False
        self._fatal: BaseException | None = None
        self._rng = random.Random()
        self._lock = threading.Lock()

    # -- hooks -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current item and shut down (safe state)."""
        self._stop.set()

    def swap_classifier(self, new_classifier: Classifier) -> threading.Event:
        """Serve ``new_classifier`` from the next item on (never mid-item).

        Returns an event set once the swap happened. The old classifier is not closed:
        the caller (update) keeps it to roll back.
        """
        done = threading.Event()
        with self._swap_lock:
            if not self._running:
                self.classifier = new_classifier
                done.set()
            else:
                self._pending = (new_classifier, done)
        return done

    def add_worker(self, worker: Worker) -> None:
        """Run ``worker.start()`` in its own thread beside the loop; ``stop()`` at shutdown."""
        self._workers.append(worker)
        if self._running:
            self._start_worker(worker)

    def snapshot(self) -> dict[str, Any]:
        """The heartbeat body (and the status file's content)."""
        return report.snapshot(self)

    def status_line(self) -> str:
        return report.status_line(self)

    def summary(self) -> dict[str, Any]:
        """The end-of-run summary (``edge-agent run`` prints it)."""
        return report.summary(self)

    def run_counts(self) -> dict[str, int]:
        """This run's counts: the completed records' (``DecisionWriter.run_counts``), plus
        ``errors`` (items the classifier could not classify)."""
        c = self.writer.run_counts()
        out = {k: c.get(k, 0) for k in ("total", "ok", "reject", "review", "passed",
                                         "failed", "late", "deadline_misses")}
        out.update({k: v for k, v in c.items() if k.startswith("fault_")})
        with self._lock:
            out["errors"] = self.counts["errors"]
        return out

    # -- lifecycle ---------------------------------------------------------------------

    def _fault(self, name: str, message: str) -> None:
        """Raise a fault: kept in the status and heartbeats, logged once when it starts."""
        if self.faults.get(name) != message:
            log.error("FAULT %s: %s", name, message)
        self.faults[name] = message

    def _actuator_failed(self, reason: str) -> None:
        """The reject output can no longer fire: a fault, and the loop stops (non-zero exit;
        systemd restarts the agent and ``ExecStopPost=`` drives the output safe again).
        Parts decided meanwhile are rejects that could not fire (``_finish``)."""
        from edge_common.errors import HardwareError

        self._fault("actuator", reason)
        if self._fatal is None:
            self._fatal = HardwareError(reason)

    def _clear_fault(self, name: str) -> None:
        if self.faults.pop(name, None) is not None:
            log.warning("fault %s cleared", name)

    def open(self) -> None:
        """Load and verify the model, open the camera and the pins (fail fast, clearly)."""
        cfg = self.config
        self.state = "starting"
        try:
            recover_held(self.journal, cfg.device_id)
        except Exception as err:  # noqa: BLE001 - kept for the next start, never a stop
            self._fault("journal", f"cannot commit the decisions held at the last stop: {err}")
        n = self.journal.reconcile(RECONCILE_DEAD)
        if n:
            log.warning("journal: %d rejects left unconfirmed by the last run reconciled", n)
        self._closed_at_start = self.journal.close_open(RECONCILE_CRASH)
        if self._closed_at_start:
            log.warning("journal: %d parts the last run left without a delivered verdict "
                        "closed as Fail (fault crash, counted in fault_crash)",
                        len(self._closed_at_start))
        self.notifier.status("loading model")
        if self.classifier is None:
            self.classifier = Classifier.load(
                cfg.bundle.path,
                cfg.bundle.public_key,
                cfg.runtime.type,
                cfg.runtime.precision,
                cfg.runtime.threads,
            )
        if self.camera is None:
            cc = cfg.camera
            self.camera = Resilient(
                make_camera(cc, self.classifier.labels),
                cc.retry_backoff_s,
                cc.retry_backoff_max_s,
                cc.give_up_s,
            )
        self.notifier.status("opening camera")
        self.camera.open()
        try:
            if self.trigger is None:
                self.trigger = self._open_trigger()
        except BaseException:
            self.camera.close()
            raise
        if self.actuator.on_fire is None:
            self.actuator.on_fire = self._on_fire
        self._republish()
        for rec in self._closed_at_start:  # reported like any completed record (MQTT)
            self._committed(rec)
        self._closed_at_start = []
        self.state = "ready"

    def _open_trigger(self) -> Any:
        """The configured trigger; with a PLC trigger or result sink, the PLC station (which
        wraps a gpio/interval trigger and runs the handshake, edge_agent.plc)."""
        cfg = self.config
        from edge_agent.plc import TRIGGERS

        plc = cfg.trigger.type in TRIGGERS or bool(cfg.results)
        inner = None
        if cfg.trigger.type not in TRIGGERS:
            inner = make_trigger(cfg.trigger, self.pins.get(cfg.trigger.pin_factory))
            if not plc:
                return inner
        from edge_agent.plc.station import Station

        assert self.classifier is not None
        station = Station(cfg, self.classifier.labels, inner, self._fault, self._clear_fault)
        station.on_part = self.writer.open_part  # a record per part, at its trigger
        station.on_result = self.writer.on_result  # completed with what the PLC got
        station.on_write = self.writer.commit_now  # written before the PLC hears back
        try:
            station.open()
        except Exception as err:
            self._fault("plc", str(err))
            self._write_status()
            raise
        self.station = station
        return station

    def _republish(self) -> None:
        """MQTT is at-least-once across a kill too: a killed agent's last messages may
        never have left it, so a start publishes the last ``REPUBLISH_ROWS`` completed
        records again (same ids: a subscriber drops what it has by ``id``)."""
        if self.station is None or not any(b.name == "mqtt" for b in self.station.backends):
            return
        closed = {r["id"] for r in self._closed_at_start}
        for rec in self.journal.last_completed(REPUBLISH_ROWS):
            if rec["id"] not in closed:
                self.station.decision(rec)

    def _committed(self, rec: dict[str, Any]) -> None:
        """A decision is durable: report it (status, ``--events``, MQTT)."""
        self.last_id = rec["id"]
        if self.station is not None:
            self.station.decision(rec)
        if self.on_decision is not None:
            self.on_decision(rec)

    def _on_fire(self, t_trigger_ns: int, t_on_ns: int) -> None:
        self.stats.hist["actuation"].add((t_on_ns - t_trigger_ns) / 1e6)

    def run(self, max_items: int | None = None, duration: float | None = None) -> dict[str, Any]:
        """Run the line until ``max_items``, ``duration`` seconds, ``stop()`` or the end of a
        replay; return the summary. The actuator is left off whatever happens."""
        if self.state != "ready":
            self.open()
        assert self.classifier and self.camera and self.trigger and self.actuator
        self.started = time.monotonic()
        self.stats = Stats()
        self._running = True
        self.actuator.arm()
        # Python hands the GIL over every 5 ms by default: the actuator's thread would
        # wake up to 5 ms late while the loop computes. 0.5 ms keeps pulses on time.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        reporter = threading.Thread(target=self._reporter, name="reporter", daemon=True)
        self.writer.start()
        reporter.start()
        for w in self._workers:
            self._start_worker(w)
        self.state = "running"
        self.notifier.ready(f"serving {self.classifier.version}")
        log.info(
            "agent %s running: model %s, camera %s, trigger %s",
            self.config.device_id,
            self.classifier.version,
            getattr(self.camera, "name", "?"),
            self.config.trigger.type,
        )
        try:
            self._loop(max_items, duration)
        except BaseException:
            self.actuator.safe()
            self.state = "failed"
            raise
        finally:
            self._running = False
            self.notifier.stopping()
            self._close_inputs()
            self.writer.sync()  # commits what is queued: those verdicts still reach the PLC
            if self.station is not None:
                self.station.close()  # undecided parts fail (the safe verdict), links close
            self.writer.stop()  # the records of what the PLC got (stopped parts included)
            self.actuator.stop()  # safe level; pulses not yet fired are dropped
            self.writer.settle(RECONCILE_STOP)
            self._prune()
            self._stop.set()
            reporter.join(timeout=5)
            self._stop_workers()
            if self.state != "failed":
                self.state = "stopped"
            self._write_status()
        if self._fatal is not None:
            raise self._fatal
        return self.summary()

    def _close_inputs(self) -> None:
        for part in (self.trigger, self.camera):
            if part is self.station:
                continue  # closed after the writer has delivered the last verdicts
            try:
                part.close()
            except Exception:  # noqa: BLE001
                log.exception("closing %s failed", type(part).__name__)

    def _start_worker(self, worker: Worker) -> None:
        def target() -> None:
            try:
                worker.start()
            except Exception:  # noqa: BLE001 - a worker never takes the line down
                log.exception("worker %s failed", type(worker).__name__)

        t = threading.Thread(target=target, name=f"worker-{type(worker).__name__}", daemon=True)
        t.start()
        self._worker_threads.append(t)

    def _stop_workers(self) -> None:
        for w in self._workers:
            t = threading.Thread(target=w.stop, daemon=True)
            t.start()
            t.join(timeout=5)
        for t in self._worker_threads:
            t.join(timeout=5)
        self._worker_threads.clear()

    # -- the loop --------------------------------------------------------------------

    def _loop(self, max_items: int | None, duration: float | None) -> None:
        assert self.classifier and self.camera and self.trigger and self.actuator
        # A real part (beam-break, PLC) passed even when no frame came: it gets a verdict.
        gpio_items = isinstance(self.trigger, GpioTrigger) or self.station is not None
        end = None if duration is None else time.monotonic() + duration
        item = 0
        while not self._stop.is_set() and self._fatal is None:
            self.notifier.watchdog()
            self._apply_swap()
            if max_items is not None and item >= max_items:
                break
            timeout = 0.5
            if end is not None:
                timeout = min(timeout, end - time.monotonic())
                if timeout <= 0:
                    break
            t_trig = self.trigger.wait(timeout)
            if t_trig is None:
                continue
            try:
                frame = self.camera.read()
            except EndOfStream:
                log.info("camera: end of stream")
                break
            except CameraError as err:
                if gpio_items:  # a real item passed: it follows the error policy
                    item += 1
                    if self.station is None:
                        self.writer.open_part(t_trig)
                    self._finish(item, t_trig, decide_error(str(err), self.policy), None, None)
                time.sleep(min(0.1, getattr(self.camera, "retry_in", lambda: 0.0)()))
                continue
            t_cap = time.monotonic_ns()
            item += 1
            if self.station is None:  # (a PLC's parts are opened by the station, at trigger)
                self.writer.open_part(t_trig)
            try:
                scores = self.classifier.classify(frame.image)
            except Exception as err:  # noqa: BLE001 - unclassifiable: error policy
                log.warning("item %d: classification failed: %s", item, err)
                self._finish(
                    item,
                    t_trig,
                    decide_error(str(err), self.policy),
                    frame,
                    None,
                    capture_ms=(t_cap - t_trig) / 1e6,
                )
                continue
            t0 = time.perf_counter_ns()
            verdict = decide(
                scores.probs, self.classifier.labels, self.classifier.reject_labels, self.policy
            )
            decision_ms = (time.perf_counter_ns() - t0) / 1e6
            self._finish(
                item,
                t_trig,
                verdict,
                frame,
                scores.probs,
                capture_ms=(t_cap - t_trig) / 1e6,
                preprocess_ms=scores.preprocess_ms,
                inference_ms=scores.inference_ms,
                decision_ms=decision_ms,
            )

    def _finish(
        self,
        item: int,
        t_trig: int,
        verdict: Verdict,
        frame: Any,
        probs: np.ndarray | None,
        capture_ms: float | None = None,
        preprocess_ms: float | None = None,
        inference_ms: float | None = None,
        decision_ms: float | None = None,
    ) -> None:
        """Hand the record to the journal writer, which commits it and then schedules the
        reject pulse (write-ahead: no pulse without a durable decision)."""
        assert self.actuator and self.classifier
        failed = getattr(self.actuator, "failed", None)
        if failed is not None and verdict.error is None:
            # No pulse can fire: never record (or tell the PLC) an OK the line cannot check.
            verdict = decide_error(failed, dataclasses.replace(self.policy, error_policy="reject"))
        t_dec = time.monotonic_ns()
        missed = not self.actuator.deadline_ok(t_trig, t_dec)
        plc = self.station.check(t_trig) if self.station is not None else None
        if plc is not None and plc["late"]:
            missed = True  # the PLC got Fail (fault 1) at the result deadline
        if missed:
            self.stats.add_miss()
        latency = {
            "capture": capture_ms,
            "preprocess": preprocess_ms,
            "inference": inference_ms,
            "decision": decision_ms,
            "total": (t_dec - t_trig) / 1e6,
        }
        self.stats.add_item({k: v for k, v in latency.items() if v is not None})
        self.budget.add(self.classifier.version, self.classifier.bundle.manifest, inference_ms)
        labels = self.classifier.labels
        truth = getattr(frame, "truth", None)
        if probs is not None and not bool(np.all(np.isfinite(probs))):
            probs = None  # NaN/inf never reach the journal, the host or a JSON reader
        rec = {
            "id": self.writer.part_id(t_trig),
            "ts": time.time(),
            "t_trigger_ns": t_trig,  # CLOCK_MONOTONIC: pulse due at this + actuator.delay_ms
            "item": item,
            "label": verdict.label,
            "score": round(verdict.score, 6),
            "reject_score": None if verdict.error else round(verdict.reject_score, 6),
            "probs": None
            if probs is None
            else {name: round(float(p), 6) for name, p in zip(labels, probs, strict=False)},
            "decision": verdict.decision,
            "action": verdict.action,
            "error": verdict.error,
            "truth": truth,
            "model_version": self.classifier.version,
            "latency_ms": {k: None if v is None else round(v, 4) for k, v in latency.items()},
            "deadline_missed": missed,
        }
        if plc is not None:
            rec["plc"] = plc
        with self._lock:
            if verdict.error:
                self.counts["errors"] += 1
            if truth is not None and verdict.label is not None:
                self.truth_seen += 1
                self.truth_correct += int(truth == verdict.label)
        image = (frame.image if frame is not None
                 and keep_sample(self.config.samples, verdict.decision, self._rng) else None)
        self.writer.put((rec, image, t_trig, verdict.rejects and not missed))

    def _apply_swap(self) -> None:
        with self._swap_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            new, done = pending
            old = self.classifier
            self.classifier = new
            done.set()
            log.info("model swapped: %s → %s", old.version if old else None, new.version)

    # -- background ------------------------------------------------------------------

    def _reporter(self) -> None:
        report.run_reporter(self, self._stop)

    def _prune(self) -> None:
        report.prune(self)

    def _write_status(self) -> None:
        report.write_status(self)

    def close(self) -> None:
        if self.station is not None:
            self.station.close()  # opened but never run: its servers close here
        self.journal.close()
        if self.classifier is not None:
            self.classifier.close()
