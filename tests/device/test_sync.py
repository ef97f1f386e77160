"""Journal → collector sync: the pure rules alone, then against a real collector on
127.0.0.1 that is down, comes up, refuses, or is reached over TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.hostclient import HostClient, HostUnavailable
from edge_agent.journal import Journal
from edge_agent.sync import (
    SyncWorker,
    next_batch_size,
    sample_content_type,
)
from edgectl.collector.server import LocalCollector

DEVICE = "pi-test"


# -- pure --------------------------------------------------------------------------------


def test_batch_size_halves_on_413_and_recovers():
    assert next_batch_size(200, 200, 413) == 100
    assert next_batch_size(1, 200, 413) == 1
    assert next_batch_size(25, 200, 200) == 200
    assert next_batch_size(25, 200, 503) == 25
    assert next_batch_size(25, 200, None) == 25


def test_sample_content_types():
    assert sample_content_type("a/b.jpg") == "image/jpeg"
    assert sample_content_type("b.PNG") == "image/png"
    assert sample_content_type("b.gif") is None


# -- against a real collector ------------------------------------------------------------


@pytest.fixture
def collector(tmp_path):
    c = LocalCollector(tmp_path / "host", max_batch_records=50)
    c.token = c.add_device(DEVICE)
    yield c
    c.close()


def fill(journal: Journal, n: int, every_sample: int = 0) -> list[str]:
    img = np.full((16, 16, 3), 128, np.uint8)
    ids = []
    for i in range(n):
        image = img if every_sample and i % every_sample == 0 else None
        ids.append(journal.record({"item": i, "label": "ok", "decision": "ok",
                                   "model_version": "v1"}, image=image))
    return ids


def worker(journal, c, **kw) -> SyncWorker:
    client = HostClient(c.url, DEVICE, c.token, timeout_s=5)
    kw.setdefault("batch_size", 7)
    return SyncWorker(journal, client, interval_s=0.05, heartbeat_s=0.2, backoff_max_s=0.2, **kw)


def host_ids(c) -> list[str]:
    return [r["id"] for r in c.store.decisions(DEVICE, limit=100000)]


def test_collector_down_then_up_delivers_everything_once(tmp_path, collector):
    j = Journal(tmp_path / "j")
    ids = fill(j, 40, every_sample=5)
    w = worker(j, collector)
    with pytest.raises(HostUnavailable):
        w.sync_once()                               # the collector is down
    assert j.counts()["unsent"] == 40 and len(j.unsent_samples(100)) == 8
    collector.start()
    assert w.flush(timeout_s=30)
    assert sorted(host_ids(collector)) == sorted(ids)
    assert collector.store.sample_count(DEVICE) == 8
    assert j.counts()["unsent"] == 0 and j.unsent_samples(100) == []
    sample_dir = collector.data_dir / "samples" / DEVICE
    assert sorted(p.stem for p in sample_dir.iterdir()) == sorted(ids[::5])
    hb = collector.store.device(DEVICE)["heartbeat"]
    assert hb["counts"]["total"] == 40


def test_resend_after_a_crash_between_post_and_mark_is_not_stored_twice(tmp_path, collector):
    collector.start()
    j = Journal(tmp_path / "j")
    ids = fill(j, 20)
    w = worker(j, collector)
    w.client.post_decisions(j.unsent(7))            # posted, then "killed" before mark_sent
    assert w.flush(timeout_s=30)
    assert sorted(host_ids(collector)) == sorted(ids)
    assert w.duplicates == 7


def test_a_refused_batch_is_kept_and_oversize_batches_shrink(tmp_path, collector):
    collector.start()
    j = Journal(tmp_path / "j")
    ids = fill(j, 120)
    bad = HostClient(collector.url, DEVICE, "not-the-token", timeout_s=5)
    with pytest.raises(HostUnavailable) as err:
        SyncWorker(j, bad, batch_size=10).send_decisions()
    assert err.value.status == 401 and j.counts()["unsent"] == 120
    w = worker(j, collector, batch_size=120)          # the host takes at most 50 per batch
    for _ in range(50):
        try:
            if not w.sync_once():
                break
        except HostUnavailable as e:
            assert e.status == 413
    assert sorted(host_ids(collector)) == sorted(ids)
    assert j.counts()["unsent"] == 0


def test_background_worker_rides_out_an_outage(tmp_path, collector):
    j = Journal(tmp_path / "j")
    w = worker(j, collector)
    w.start()
    try:
        ids = fill(j, 15)
        time.sleep(0.3)
        assert w.failures >= 1 and w.sent == 0         # host down: retrying, nothing lost
        collector.start()
        ids += fill(j, 15)
        deadline = time.monotonic() + 30
        while len(host_ids(collector)) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        collector.stop()                                  # away again
        ids += fill(j, 5)
        time.sleep(0.3)
        collector.start()
        deadline = time.monotonic() + 30
        while len(host_ids(collector)) < 35 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        w.stop()
    assert sorted(host_ids(collector)) == sorted(ids)
    assert j.counts()["unsent"] == 0


SENDER = textwrap.dedent("""
    import sys, time
    from edge_agent.journal import Journal
    from edge_agent.hostclient import HostClient
    from edge_agent.sync import SyncWorker
    url, token, jdir = sys.argv[1:4]
    j = Journal(jdir, synchronous="normal")
    w = SyncWorker(j, HostClient(url, "pi-test", token, timeout_s=5), batch_size=3,
                   interval_s=0.05, heartbeat_s=60, backoff_max_s=0.2)
    w.start()
    while True:
        time.sleep(1)
""")


def test_sigkill_mid_sync_then_restart_delivers_exactly_once(tmp_path, collector):
    jdir = tmp_path / "j"
    j = Journal(jdir)
    ids = fill(j, 300)
    j.close()
    collector.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-c", SENDER, collector.url, collector.token, str(jdir)]
    proc = subprocess.Popen(args, env=env)
    try:
        deadline = time.monotonic() + 60
        while len(host_ids(collector)) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)               # somewhere in the middle of a batch
        proc.wait(10)
        partial = len(host_ids(collector))
        assert 0 < partial < 300
        proc = subprocess.Popen(args, env=env)
        j = Journal(jdir)
        deadline = time.monotonic() + 60
        while j.counts()["unsent"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
    assert j.counts()["unsent"] == 0
    assert sorted(host_ids(collector)) == sorted(ids)
    assert collector.store.decision_count(DEVICE) == 300


# -- TLS ---------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgectl-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_the_ca_certificate_and_only_with_it(tmp_path):
    cert, key = _self_signed(tmp_path)
    c = LocalCollector(tmp_path / "host", tls_cert=cert, tls_key=key).start()
    try:
        token = c.add_device(DEVICE)
        assert c.url.startswith("https://")
        j = Journal(tmp_path / "j")
        ids = fill(j, 5)
        untrusted = SyncWorker(j, HostClient(c.url, DEVICE, token, timeout_s=5))
        with pytest.raises(HostUnavailable, match="SSL"):
            untrusted.sync_once()
        trusted = SyncWorker(j, HostClient(c.url, DEVICE, token, ca_cert=str(cert), timeout_s=5))
        assert trusted.flush(timeout_s=30)
        assert sorted(r["id"] for r in c.store.decisions(DEVICE)) == sorted(ids)
    finally:
        c.close()
