"""Model updates: a running agent pulls its desired bundle from a real collector on
127.0.0.1, refuses anything tampered with (keeps serving, reports why), switches to a
good one between two items, rolls back when the new model fails, and honours the lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from devicekit import make_bundle, write_config

from edge_agent.config import load_config
from edge_agent.hostclient import HostClient
from edge_agent.journal import Journal
from edge_agent.service import Agent
from edge_agent.update import UpdateWorker, health_verdict, lock_held, plan
from edge_common.bundle import generate_keypair, sha256_file, sign_manifest, write_manifest
from edgectl.collector.client import AdminClient
from edgectl.collector.server import LocalCollector

DEVICE = "test-device"


# -- pure --------------------------------------------------------------------------------


def test_plan():
    d = {"version": "v2", "sha256": "abc"}
    assert plan("v1", d, {}) == "update"
    assert plan("v2", d, {}) is None
    assert plan("v1", {"version": None}, {}) is None
    assert plan("v1", d, {"v2": "abc"}) is None          # refused before: not again
    assert plan("v1", d, {"v2": "other"}) == "update"   # a different bundle: try it


def test_health_verdict():
    assert health_verdict(0, 0) is None
    assert health_verdict(100, 2) is None
    assert health_verdict(100, 10) is None
    assert "failures" in health_verdict(10, 5)
    assert "failures" in health_verdict(0, 3)


def test_lock_held():
    assert lock_held(False, None) is False
    assert lock_held(True, None) is True
    assert lock_held(False, True) is True
    assert lock_held(False, False) is False


# -- with a running agent ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    v1 = make_bundle(root / "v1", version="test-1")
    v2 = make_bundle(root / "v2", version="test-2")
    return v1, v2


@pytest.fixture
def line(tmp_path, bundles):
    """A collector with this device registered, and the agent running bundle test-1."""
    c = LocalCollector(tmp_path / "host").start()
    token = c.add_device(DEVICE)
    (tmp_path / "token").write_text(token)
    cfg_path = write_config(tmp_path / "agent.yaml", bundles[0],
                            trigger={"type": "interval", "rate_hz": 200, "pin_factory": "mock"},
                            host={"url": c.url, "token_file": str(tmp_path / "token")},
                            update={"enabled": True, "health_window_s": 0.5, "poll_s": 1})
    agent = Agent(load_config(cfg_path))
    agent.open()
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(agent.run(duration=60)), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while agent.stats.items < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    admin = AdminClient(c.url, c.admin_token)
    yield agent, c, admin, tmp_path
    agent.stop()
    t.join(30)
    agent.close()
    c.close()


def worker(agent, c, **kw) -> UpdateWorker:
    client = HostClient(c.url, DEVICE, (Path(agent.config.journal.dir).parent / "token")
                        .read_text(), timeout_s=10)
    return UpdateWorker(agent, client, **{"poll_s": 1, "health_window_s": 0.5, **kw})


def journal_items(agent) -> list[dict]:
    j = Journal(agent.config.journal.dir)
    try:
        return [j.get(i) for i in j.ids()]
    finally:
        j.close()


def reports(c) -> list[dict]:
    return c.store.update_reports(DEVICE)


def test_good_bundle_is_switched_to_without_losing_an_item(line, bundles):
    agent, c, admin, _ = line
    assert admin.upload_bundle(bundles[1])["version"] == "test-2"
    admin.set_desired("device", DEVICE, "test-2")
    w = worker(agent, c)
    out = w.check_once()
    assert out.outcome == "applied", out
    assert agent.classifier.version == "test-2"
    after = agent.stats.items + 20
    deadline = time.monotonic() + 10
    while agent.stats.items < after and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.stop()
    time.sleep(0.5)
    recs = journal_items(agent)
    items = [r["item"] for r in recs]
    assert items == list(range(1, len(items) + 1))       # every item, in order, once
    versions = [r["model_version"] for r in recs]
    switch = versions.index("test-2")
    assert set(versions[:switch]) == {"test-1"} and set(versions[switch:]) == {"test-2"}
    assert (reports(c)[0]["outcome"], reports(c)[0]["version"]) == ("applied", "test-2")
    assert w.check_once() is None                            # already serving it


def test_tampered_bundle_on_the_host_is_refused_and_the_old_model_keeps_serving(line, bundles):
    agent, c, admin, _ = line
    up = admin.upload_bundle(bundles[1])
    stored = c.data_dir / "bundles" / f"{up['sha256']}.tar"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF                              # one flipped byte on disk
    stored.write_bytes(bytes(data))
    admin.set_desired("device", DEVICE, "test-2")
    w = worker(agent, c)
    items_before = agent.stats.items
    out = w.check_once()
    assert out.outcome == "refused" and "sha256" in out.reason
    assert agent.classifier.version == "test-1"
    deadline = time.monotonic() + 10
    while agent.stats.items < items_before + 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.stats.items >= items_before + 10            # still inspecting
    (rep,) = reports(c)
    assert (rep["outcome"], rep["version"], rep["previous_version"]) == (
        "refused", "test-2", "test-1")
    assert w.check_once() is None                             # not retried
    assert list(w.dir.glob("*.tar")) == []                    # nothing bad kept
    row = admin.status()[0]
    assert row["health"] in ("degraded", "stale")


def _retamper_manifest(root: Path, mutate) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    mutate(root, manifest)
    write_manifest(root, manifest)


def test_wrong_signature_and_bad_test_vectors_are_refused(line, bundles, tmp_path):
    agent, c, admin, _ = line
    priv, pub = generate_keypair()
    other_priv, _ = generate_keypair()
    (tmp_path / "pub.pem").write_bytes(pub)
    forged = make_bundle(tmp_path / "forged", version="test-3")
    sign_manifest(forged, other_priv)
    admin.upload_bundle(forged)
    admin.set_desired("device", DEVICE, "test-3")
    w = worker(agent, c, public_keys=[str(tmp_path / "pub.pem")])
    out = w.check_once()
    assert out.outcome == "refused" and "signature" in out.reason.lower()
    assert agent.classifier.version == "test-1"

    def wrong_vectors(root: Path, m: dict) -> None:
        tv = root / "test_vectors.npz"
        with np.load(tv) as z:
            data = {k: z[k] for k in z.files}
        data["expected/model.fp32.onnx"] = data["expected/model.fp32.onnx"][:, ::-1].copy()
        np.savez(tv, **data)
        m["test_vectors"].update(sha256=sha256_file(tv), bytes=tv.stat().st_size)

    bad = make_bundle(tmp_path / "bad", version="test-4")
    _retamper_manifest(bad, wrong_vectors)
    sign_manifest(bad, priv)                                  # signed, but does not compute
    admin.upload_bundle(bad)
    admin.set_desired("device", DEVICE, "test-4")
    out = w.check_once()
    assert out.outcome == "refused" and "test vectors" in out.reason
    assert agent.classifier.version == "test-1"
    assert [r["outcome"] for r in reports(c)] == ["refused", "refused"]


class _Failing:
    """A loaded classifier whose inference fails on the line (not in its self-test)."""

    def __init__(self, inner) -> None:
        self.inner, self.version, self.bundle = inner, inner.version, inner.bundle
        self.labels, self.reject_labels = inner.labels, inner.reject_labels

    def classify(self, image):
        raise RuntimeError("accelerator fault")

    def close(self) -> None:
        self.inner.close()


class _Slow(_Failing):
    """Fails every item, and a busy board's line brings them slowly."""

    def classify(self, image):
        time.sleep(0.05)
        raise RuntimeError("accelerator fault")


def test_a_window_that_saw_too_few_items_waits_for_them_before_applying(line, bundles):
    """A 0.05 s window on a line giving ~20 items/s sees one item or none; before this,
    the failing model was applied for want of evidence. Now the window waits for
    MIN_HEALTH_ITEMS items (up to IDLE_WINDOWS windows): the failures are seen."""
    from edge_agent import update

    agent, c, admin, _ = line
    admin.upload_bundle(bundles[1])
    admin.set_desired("device", DEVICE, "test-2")
    w = worker(agent, c, health_window_s=0.05)
    w.loader = lambda path, key: _Slow(w._load_classifier(path, key))
    assert update.MIN_HEALTH_ITEMS * 0.05 > 0.05      # more items than one window brings
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(update, "IDLE_WINDOWS", 400)       # 20 s: a loaded CI machine included
        out = w.check_once()
    assert out.outcome == "rolled_back" and "inference failures" in out.reason
    assert agent.classifier.version == "test-1"


def test_an_idle_line_gets_the_new_model_after_the_idle_bound(line, bundles, caplog):
    agent, c, admin, _ = line
    agent.stop()                                       # the line stops: no items at all
    time.sleep(0.2)
    admin.upload_bundle(bundles[1])
    admin.set_desired("device", DEVICE, "test-2")
    w = worker(agent, c, health_window_s=0.05)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="edge_agent.update"):
        out = w.check_once()
    assert out.outcome == "applied"
    assert time.monotonic() - t0 >= 0.05 * 10          # waited IDLE_WINDOWS windows
    assert "line idle" in caplog.text


def test_unhealthy_model_is_rolled_back(line, bundles):
    agent, c, admin, _ = line
    admin.upload_bundle(bundles[1])
    admin.set_desired("device", DEVICE, "test-2")
    w = worker(agent, c)
    w.loader = lambda path, key: _Failing(w._load_classifier(path, key))
    out = w.check_once()
    assert out.outcome == "rolled_back" and "inference failures" in out.reason
    assert agent.classifier.version == "test-1"
    errors = agent.counts["errors"]
    time.sleep(0.3)
    assert agent.counts["errors"] == errors                   # healthy again
    assert reports(c)[0]["outcome"] == "rolled_back"


def test_update_waits_for_the_lock(line, bundles, tmp_path):
    agent, c, admin, _ = line
    admin.upload_bundle(bundles[1])
    admin.set_desired("device", DEVICE, "test-2")
    lock = tmp_path / "line-running"
    lock.touch()
    w = worker(agent, c, lock_file=str(lock))
    result: list = []
    t = threading.Thread(target=lambda: result.append(w.check_once()), daemon=True)
    t.start()
    time.sleep(1.0)
    assert agent.classifier.version == "test-1" and not result   # deferred
    lock.unlink()
    t.join(20)
    assert result[0].outcome == "applied" and agent.classifier.version == "test-2"


# -- fail closed: key store and anti-rollback --------------------------------------------


def test_plan_refuses_older_versions_unless_allowed():
    assert plan("test-2", {"version": "test-1", "sha256": "a"}, {}) == "older"
    assert plan("test-2", {"version": "test-10", "sha256": "a"}, {}) == "update"
    assert plan("test-2", {"version": "test-1", "sha256": "a", "allow_downgrade": True},
                {}) == "update"
    assert plan(None, {"version": "test-1", "sha256": "a"}, {}) == "update"


def test_configured_key_store_without_a_usable_key_refuses_every_bundle(line, tmp_path):
    """Empty keys folder, a folder of non-keys, a missing folder: all refuse, even a
    correctly signed bundle; once a real key (any file name) is there, it applies."""
    agent, c, admin, _ = line
    priv, pub = generate_keypair()
    signed = make_bundle(tmp_path / "signed", version="test-5")
    sign_manifest(signed, priv)
    admin.upload_bundle(signed)
    admin.set_desired("device", DEVICE, "test-5")
    keys = tmp_path / "keys"
    w = worker(agent, c, keys_dir=str(keys))
    out = w.check_once()                                     # missing folder
    assert out.outcome == "refused" and "no usable public key" in out.reason
    keys.mkdir()
    out = w.check_once()                                     # empty folder
    assert out.outcome == "refused" and "no usable public key" in out.reason
    (keys / "junk.pem").write_text("not a key\n")
    (keys / "private.pem").write_bytes(priv)                 # a private key is no public key
    out = w.check_once()
    assert out.outcome == "refused" and "no usable public key" in out.reason
    assert agent.classifier.version == "test-1"
    assert [r["outcome"] for r in reports(c)] == ["refused"]  # reported once, not per poll
    (keys / "edge-signing.pub").write_bytes(pub)              # what `edgectl keys` writes
    out = w.check_once()
    assert out.outcome == "applied", out
    assert agent.classifier.version == "test-5"


def test_unsigned_bundle_refused_with_a_key_configured(line, bundles, tmp_path):
    agent, c, admin, _ = line
    _, pub = generate_keypair()
    (tmp_path / "k.pub").write_bytes(pub)
    admin.upload_bundle(bundles[1])                           # test-2, unsigned
    admin.set_desired("device", DEVICE, "test-2")
    out = worker(agent, c, public_keys=[str(tmp_path / "k.pub")]).check_once()
    assert out.outcome == "refused" and "not signed" in out.reason
    assert agent.classifier.version == "test-1"


def test_default_config_requires_signatures(line, bundles):
    """The shipped default (update.keys_dir) is a key store: no keys there, no update."""
    agent, c, admin, _ = line
    assert agent.config.update.keys_dir == "/etc/edge-agent/keys"
    client = worker(agent, c).client
    w = UpdateWorker.from_config(agent, client)
    assert w.signing_configured
    admin.upload_bundle(bundles[1])
    admin.set_desired("device", DEVICE, "test-2")
    if not Path("/etc/edge-agent/keys").exists():
        out = w.check_once()
        assert out.outcome == "refused" and "no usable public key" in out.reason
        assert agent.classifier.version == "test-1"


def test_older_bundle_is_refused_unless_the_operator_allows_a_downgrade(line, tmp_path):
    agent, c, admin, _ = line
    old = make_bundle(tmp_path / "old", version="test-0")
    admin.upload_bundle(old)
    admin.set_desired("device", DEVICE, "test-0")
    w = worker(agent, c)
    out = w.check_once()
    assert out.outcome == "refused" and "older than the installed test-1" in out.reason
    assert agent.classifier.version == "test-1"
    assert (w.dir / "state.json").stat().st_mode & 0o777 == 0o640
    assert w.check_once().outcome == "refused"               # still refused, not re-reported
    assert [r["outcome"] for r in reports(c)] == ["refused"]
    assert not list(w.dir.glob("*.tar"))                     # never even downloaded
    admin.set_desired("device", DEVICE, "test-0", allow_downgrade=True)
    out = w.check_once()
    assert out.outcome == "applied", out
    assert agent.classifier.version == "test-0"
