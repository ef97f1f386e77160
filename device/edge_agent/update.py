"""Safe model updates pulled from the host collector.

The worker polls the version this device should run; when it differs from the one
serving, it downloads the bundle to a temp file, checks its sha256 against the host's
header, loads it with the configured public key (``load_bundle`` checks every file and
the signature), replays its test vectors (``Classifier.load``), waits while the update
lock is held (a file exists, or a GPIO input says "line running"), then switches between
two items (``Agent.swap_classifier``). During ``health_window_s`` it watches the line;
if inference starts failing it switches back to the previous model. Every outcome —
applied, refused (why), rolled back (why) — is reported to the host; a report that
cannot be sent yet waits in ``updates/state.json`` and goes with the next poll.

The previous model stays loaded until the new one has passed its health window. A
refused or rolled-back bundle is not tried again unless the host names another one.
After a restart the agent serves its configured bundle and re-applies the desired one
from the local cache (no new download) on the first poll.

Pure decisions (``plan``, ``health_verdict``, ``lock_held``) are tested alone.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.hostclient import HostClient, HostUnavailable
from edge_common.bundle import is_older, load_public_key, sha256_file, version_key
from edge_common.errors import BundleError, EdgeError
from edge_common.fileio import write_json_atomic

log = logging.getLogger(__name__)

UPDATES_DIR = "updates"
MAX_ERROR_RATE = 0.2
MIN_ERRORS = 3
# The health window also waits for this many items classified by the new model (a window
# that saw none proves nothing), up to IDLE_WINDOWS windows; a line idle that long gets
# the new model (its test vectors passed at load) and the log says so.
MIN_HEALTH_ITEMS = 20
IDLE_WINDOWS = 10


# -- pure decisions ----------------------------------------------------------------------


def plan(current: str | None, desired: dict[str, Any], refused: dict[str, str]) -> str | None:
    """What to do with the host's answer: ``"update"``, ``"older"`` or None (nothing).

    Nothing when no model is set, when the desired version is already serving (an equal
    version is a no-op, whatever its bytes), or when this exact bundle (version and
    sha256) was refused or rolled back before. Equal means equal by ``version_key``: a
    version spelled differently but sorting equal is a no-op. ``"older"`` (to be refused) when the
    desired version is older than the one serving (``edge_common.bundle.version_key``)
    and the host did not say ``allow_downgrade`` (``edgectl fleet set-model
    --allow-downgrade``).
    """
    version = desired.get("version")
    if not version or same_version(str(version), current):
        return None
    if refused.get(version) == desired.get("sha256"):
        return None
    if current and is_older(str(version), current) and not desired.get("allow_downgrade"):
        return "older"
    return "update"


def same_version(version: str, current: str | None) -> bool:
    """Equal as bundle versions (``version_key``), whatever the spelling."""
    return current is not None and (version == current
                                    or version_key(version) == version_key(current))


def check_manifest_version(manifest_version: str, claimed: str, current: str | None,
                           allow_downgrade: bool) -> str | None:
    """Anti-rollback on the *signed* manifest's version (checked after its signature).

    The host's claim only selects what to fetch: a bundle whose manifest says another
    version is refused, and so is one not newer than the serving version (equal: nothing
    to do; older: only the operator's explicit ``allow_downgrade``). Returns why it is
    refused, or None."""
    if not same_version(manifest_version, claimed):
        return (f"the host named version {claimed} but the signed manifest says "
                f"{manifest_version}")
    if current is not None and same_version(manifest_version, current):
        return f"version {manifest_version} is already serving"
    if current is not None and is_older(manifest_version, current) and not allow_downgrade:
        return (f"version {manifest_version} (signed manifest) is older than the installed "
                f"{current} (set it with --allow-downgrade)")
    return None


def health_verdict(items: int, errors: int, max_error_rate: float = MAX_ERROR_RATE,
                   min_errors: int = MIN_ERRORS) -> str | None:
    """None if healthy so far; else why not. ``items``/``errors`` count since the switch."""
    if errors >= min_errors and errors > max_error_rate * max(items, 1):
        return f"{errors} inference failures in {items} items after the switch"
    return None


def lock_held(file_exists: bool, pin_active: bool | None) -> bool:
    """The update lock: a lock file exists, or the lock input is active (line running)."""
    return file_exists or bool(pin_active)


# -- I/O ---------------------------------------------------------------------------------


class UpdateRefused(EdgeError):
    """A bundle was refused before it served an item."""


@dataclass
class Outcome:
    version: str
    outcome: str  # applied | refused | rolled_back
    reason: str | None
    previous_version: str | None

    def report(self) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "ts": time.time(), "version": self.version,
                "outcome": self.outcome, "reason": self.reason,
                "previous_version": self.previous_version}


class UpdateWorker:
    """Polls the desired model and switches to it safely (see the module docstring)."""

    def __init__(self, agent: Any, client: HostClient, *, poll_s: float = 60.0,
                 health_window_s: float = 120.0, lock_file: str | None = None,
                 lock_input: Any = None, public_keys: list[str] | None = None,
                 keys_dir: str | Path | None = None, state_dir: str | Path | None = None,
                 loader: Callable[[str, bytes | None], Any] | None = None,
                 rng: random.Random | None = None) -> None:
        self.agent = agent
        self.client = client
        self.poll_s = poll_s
        self.health_window_s = health_window_s
        self.lock_file = Path(lock_file) if lock_file else None
        self.lock_input = lock_input
        self.public_keys = [str(k) for k in public_keys or []]
        self.keys_dir = Path(keys_dir) if keys_dir is not None else None
        self.dir = Path(state_dir) if state_dir else Path(agent.config.journal.dir) / UPDATES_DIR
        self.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        for stale in self.dir.glob(".download-*.part"):  # a download cut by a crash
            stale.unlink(missing_ok=True)
        self.loader = loader or self._load_classifier
        self.rng = rng or random.Random()
        self.outcomes: list[Outcome] = []
        self._last_refusal: tuple[str, str] | None = None
        self.state = self._read_state()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, agent: Any, client: HostClient | None = None) -> UpdateWorker:
        cfg = agent.config
        u = cfg.update
        keys = [u.public_key] if u.public_key else []
        if cfg.bundle.public_key and cfg.bundle.public_key not in keys:
            keys.append(cfg.bundle.public_key)
        lock_input = None
        if u.lock_pin is not None:
            from edge_agent.pins import gpiozero, make_pin_factory

            lock_input = gpiozero().DigitalInputDevice(
                u.lock_pin, pin_factory=make_pin_factory(cfg.trigger.pin_factory))
        return cls(agent, client or HostClient.from_config(cfg), poll_s=u.poll_s,
                   health_window_s=u.health_window_s, lock_file=u.lock_file,
                   lock_input=lock_input, public_keys=keys, keys_dir=u.keys_dir)

    # -- state (refused bundles, reports not yet sent) ---------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("refused", {})
        state.setdefault("pending_reports", [])
        return state

    def _save_state(self) -> None:
        write_json_atomic(self.dir / "state.json", self.state, mode=0o640)

    def _record(self, outcome: Outcome, sha: str | None = None) -> None:
        self.outcomes.append(outcome)
        if outcome.outcome != "applied" and sha:
            self.state["refused"][outcome.version] = sha
        self.state["pending_reports"].append(outcome.report())
        self._save_state()
        level = logging.INFO if outcome.outcome == "applied" else logging.WARNING
        log.log(level, "update %s: %s%s", outcome.version, outcome.outcome,
                f" ({outcome.reason})" if outcome.reason else "")
        self._send_reports()

    def _send_reports(self) -> None:
        pending = self.state["pending_reports"]
        while pending:
            try:
                self.client.report_update(pending[0])
            except HostUnavailable as err:
                log.info("update report waits for the host: %s", err)
                return
            pending.pop(0)
            self._save_state()

    # -- one poll ----------------------------------------------------------------------

    def lock_held(self) -> bool:
        pin = None if self.lock_input is None else bool(self.lock_input.is_active)
        return lock_held(self.lock_file is not None and self.lock_file.exists(), pin)

    def check_once(self) -> Outcome | None:
        """Poll, and update if needed; return the outcome (None: nothing to do or deferred)."""
        self._send_reports()
        desired = self.client.desired()
        current = self.agent.classifier.version if self.agent.classifier else None
        todo = plan(current, desired, self.state["refused"])
        if todo is None:
            return None
        version, sha = str(desired["version"]), str(desired.get("sha256") or "")
        if todo == "older":
            return self._refuse_for_now(version, current, f"version {version} is older than "
                                        f"the installed {current} (set it with --allow-downgrade)")
        if self.signing_configured:
            try:
                self.trusted_keys()
            except UpdateRefused as err:
                return self._refuse_for_now(version, current, str(err))
        self._last_refusal = None
        try:
            tar = self._fetch(version, sha)
            new = self._verify(tar)
            self._check_signed_version(new, tar, version, current,
                                       bool(desired.get("allow_downgrade")))
        except UpdateRefused as err:
            outcome = Outcome(version, "refused", str(err), current)
            self._record(outcome, sha)
            return outcome
        if self.lock_held():
            log.info("update %s verified; waiting for the update lock", version)
            while self.lock_held():
                if self._stop.wait(0.2):
                    new.close()
                    return None
        return self._switch(new, version, sha, current)

    def _check_signed_version(self, new: Any, tar: Path, claimed: str, current: str | None,
                              allow_downgrade: bool) -> None:
        """Refuse (and forget the tar) unless the signed manifest's version is the one
        claimed and newer than the serving one (``check_manifest_version``)."""
        signed_version = getattr(new, "version", None)
        reason = (check_manifest_version(str(signed_version), claimed, current, allow_downgrade)
                  if signed_version is not None else "the bundle's manifest has no version")
        if reason is not None:
            close = getattr(new, "close", None)
            if close is not None:
                close()
            tar.unlink(missing_ok=True)
            raise UpdateRefused(reason)

    def _refuse_for_now(self, version: str, current: str | None, reason: str) -> Outcome:
        """Refuse without remembering the bundle as bad (no download, no sha recorded):
        once the operator allows a downgrade or installs a key, the same bundle is tried
        again. Reported once per reason, not at every poll."""
        outcome = Outcome(version, "refused", reason, current)
        if self._last_refusal != (version, reason):
            self._last_refusal = (version, reason)
            self._record(outcome)
        return outcome

    def _fetch(self, version: str, sha: str) -> Path:
        """The bundle tar in the local cache (downloaded if needed), sha256-checked."""
        cached = self.dir / f"{sha}.tar"
        if sha and cached.is_file() and sha256_file(cached) == sha:
            return cached
        part = self.dir / f".download-{uuid.uuid4().hex}.part"
        try:
            try:
                got_version, header_sha = self.client.download_bundle(part)
            except BundleError as err:
                raise UpdateRefused(str(err)) from err
            actual = sha256_file(part)
            if not header_sha or actual != header_sha or (sha and actual != sha):
                raise UpdateRefused(f"sha256 mismatch: the download is {actual[:12]}, its "
                                    f"header says {(header_sha or 'nothing')[:12]}, the "
                                    f"desired answer {(sha or 'nothing')[:12]}")
            if got_version and got_version != version:
                raise UpdateRefused(f"host sent version {got_version}, expected {version}")
            final = self.dir / f"{actual}.tar"
            part.replace(final)
            return final
        finally:
            part.unlink(missing_ok=True)

    @property
    def signing_configured(self) -> bool:
        """A public key or a keys folder is configured: every bundle must then be signed."""
        return bool(self.public_keys) or self.keys_dir is not None

    def trusted_keys(self) -> list[bytes]:
        """The usable Ed25519 public keys (PEM), read afresh for every bundle.

        ``public_keys`` files, and every file in ``keys_dir`` (any name; dot files
        skipped). A file that cannot be read or is not an Ed25519 public key is skipped
        with a warning. Fails closed: with signing configured and no usable key, raise
        UpdateRefused, so no bundle (signed or not) is applied.
        """
        candidates = [Path(k) for k in self.public_keys]
        where = ", ".join(self.public_keys)
        if self.keys_dir is not None:
            where = ", ".join(filter(None, [where, f"{self.keys_dir}/"]))
            try:
                candidates += sorted(p for p in self.keys_dir.iterdir()
                                     if not p.name.startswith(".") and p.is_file())
            except OSError as err:
                log.warning("update: cannot read keys folder %s: %s", self.keys_dir,
                            err.strerror or err)
        usable: list[bytes] = []
        for path in candidates:
            try:
                pem = path.read_bytes()
                load_public_key(pem)
            except (OSError, EdgeError) as err:
                log.warning("update: %s is not a usable public key (%s)", path,
                            getattr(err, "strerror", None) or err)
                continue
            usable.append(pem)
        if not usable:
            raise UpdateRefused(f"signing is configured but no usable public key in {where}: "
                                "every bundle is refused")
        return usable

    def _verify(self, tar: Path) -> Any:
        """Load with each trusted key in turn (checksums, signature, test vectors).

        With no key and no keys folder configured, bundles are checked unsigned (the
        agent's config default configures a keys folder; see ``docs/bundle-format.md``).
        """
        errors = []
        keys: list[bytes | None] = list(self.trusted_keys()) if self.signing_configured else [None]
        for key in keys:
            try:
                return self.loader(str(tar), key)
            except EdgeError as err:
                errors.append(str(err))
            except Exception as err:  # noqa: BLE001 - anything unforeseen refuses (fail closed)
                errors.append(f"{type(err).__name__}: {err}".splitlines()[0][:300])
        tar.unlink(missing_ok=True)  # never keep a bundle that failed verification
        raise UpdateRefused("; ".join(dict.fromkeys(errors)))

    def _load_classifier(self, path: str, public_key: bytes | None) -> Any:
        from edge_agent.classifier import Classifier

        rt = self.agent.config.runtime
        # load_bundle takes PEM bytes as well as a path (Classifier.load's hint says str).
        key: Any = public_key
        return Classifier.load(path, key, rt.type, rt.precision, rt.threads)

    def _counts(self) -> tuple[int, int]:
        c = self.agent.run_counts()
        return c.get("ok", 0) + c.get("reject", 0) + c.get("review", 0), c.get("errors", 0)

    def _switch(self, new: Any, version: str, sha: str, current: str | None) -> Outcome:
        old = self.agent.classifier
        items0, errors0 = self._counts()
        done = self.agent.swap_classifier(new)
        while not done.wait(0.2):
            if self._stop.is_set():
                break
        reason, seen = None, 0
        start = time.monotonic()
        deadline = start + self.health_window_s
        give_up = start + IDLE_WINDOWS * self.health_window_s
        while reason is None and not self._stop.is_set():
            now = time.monotonic()
            if now >= give_up or (now >= deadline and seen >= MIN_HEALTH_ITEMS):
                break
            self._stop.wait(min(0.1, max(0.0, deadline - now)) or 0.1)
            items, errors = self._counts()
            seen = items - items0
            reason = health_verdict(seen, errors - errors0)
        if reason is None and seen < MIN_HEALTH_ITEMS and self.health_window_s > 0:
            log.warning("update %s: only %d items in %.0f s after the switch (line idle?); "
                        "keeping it", version, seen, time.monotonic() - start)
        if reason is not None and old is not None:
            back = self.agent.swap_classifier(old)
            back.wait(5.0)
            new.close()
            outcome = Outcome(version, "rolled_back", reason, current)
            self._record(outcome, sha)
            return outcome
        if old is not None and old is not new:
            old.close()
        outcome = Outcome(version, "applied", None, current)
        self._record(outcome)
        return outcome

    # -- the worker ----------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.check_once()
                failures = 0
                wait = self.poll_s
            except HostUnavailable as err:
                failures += 1
                wait = min(self.poll_s, 2.0 ** min(failures, 8)) * (0.5 + 0.5 * self.rng.random())
                log.info("update: host unavailable (%s); next poll in %.1fs", err, wait)
            except Exception:  # a failed update must never take the line down
                log.exception("update: unexpected error")
                wait = self.poll_s
            self._stop.wait(wait)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edge-update", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.client.timeout + 2.0)
            self._thread = None
        if self.lock_input is not None:
            self.lock_input.close()
