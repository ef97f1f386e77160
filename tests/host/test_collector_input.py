"""Nothing a device or an admin sends can break the collector (issue 31): each request
that once took pages down is now a 4xx naming the field, and afterwards every page, the
status route, /metrics and `edgectl fleet status` still answer 200, on SQLite and on
PostgreSQL. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from PIL import Image

from edgectl.cli import main
from edgectl.collector.server import LocalCollector

API = "/api/v1"
DEEP = 100_000


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def bundle(version: str, metrics: dict) -> bytes:
    manifest = json.dumps({"schema_version": 1, "name": "tiny", "version": version,
                           "labels": ["ok", "scratch"], "metrics": metrics}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("manifest.json", manifest), ("model.onnx", b"weights")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fleet(tmp_path: Path, collector_db: str):
    """A collector with one healthy device that has sent a heartbeat, decisions, a sample,
    and one good bundle: every page has rows to show."""
    c = LocalCollector(tmp_path / "collector", db=collector_db).start()
    tok = c.add_device("pi-1", "line1")
    w = SimpleNamespace(url=c.url, c=c, admin=c.admin_token, tok=tok,
                        token_file=tmp_path / "collector" / "admin.token")
    dev = f"{c.url}{API}/devices/pi-1"
    r = requests.post(f"{dev}/heartbeat", headers=auth(tok), timeout=10, json={
        "model_version": "v1", "fps": 2.0, "counts": {"total": 3, "reject": 1, "unsent": 0},
        "latency_ms": {"total": {"p50": 4.0, "p95": 9.0, "p99": 12.0}}})
    assert r.status_code == 200, r.text
    recs = [{"id": f"d{i}", "seq": i, "ts": 1.7e9 + i, "decision": "reject", "label": "scratch",
             "score": 0.6, "latency_ms": {"total": 8.0}} for i in range(3)]
    r = requests.post(f"{dev}/decisions", json={"records": recs}, headers=auth(tok), timeout=10)
    assert r.json()["accepted"] == 3, r.text
    r = requests.put(f"{dev}/samples/d0", data=jpeg(), timeout=10,
                     headers={**auth(tok), "Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    r = requests.post(f"{c.url}{API}/bundles", data=bundle("v1", {"accuracy": 0.9}),
                      headers={**auth(w.admin), "Content-Type": "application/x-tar"}, timeout=10)
    assert r.status_code == 200, r.text
    yield w
    c.close()


def everything_answers(w, cli_runner) -> None:
    """Every page, the status route, /metrics and `edgectl fleet status`: 200 (exit 0)."""
    for path in ("/", "/models", "/review", "/review?show=all", "/devices/pi-1",
                 "/devices/pi-1?hours=72", f"{API}/fleet/status", f"{API}/devices",
                 f"{API}/devices/pi-1/decisions", f"{API}/devices/pi-1/updates",
                 f"{API}/bundles", "/metrics"):
        r = requests.get(w.url + path, headers=auth(w.admin), timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    res = cli_runner.invoke(main, ["fleet", "status", "--server", w.url,
                                   "--token-file", str(w.token_file)])
    assert res.exit_code == 0, res.output
    assert "pi-1" in res.output


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (name, method, path under /api/v1 (or None: the bundle upload), who, raw body,
#  status, the fields the 4xx must name)
CASES = [
    ("heartbeat counts.total is a string", "POST", "/devices/pi-1/heartbeat", "device",
     '{"counts": {"total": "many"}}', 422, {"body.counts.total"}),
    ("heartbeat latency p95 is a string", "POST", "/devices/pi-1/heartbeat", "device",
     '{"latency_ms": {"total": {"p95": "slow"}}}', 422, {"body.latency_ms.total.p95"}),
    ("heartbeat counts.unsent is a string", "POST", "/devices/pi-1/heartbeat", "device",
     '{"counts": {"unsent": "lots"}}', 422, {"body.counts.unsent"}),
    ("heartbeat fps is NaN", "POST", "/devices/pi-1/heartbeat", "device",
     '{"fps": NaN}', 422, {"body.fps"}),
    ("heartbeat nested 100,000 deep", "POST", "/devices/pi-1/heartbeat", "device",
     '{"plc": ' + _nested(DEEP) + '}', 422, {"body"}),
    ("decision score is NaN", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n1", "ts": 1.7e9, "score": NaN, "decision": "reject"}]}', 422,
     {"body.records.0.score"}),
    ("decision score is Infinity", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n1", "score": Infinity}]}', 422, {"body.records.0.score"}),
    ("decision ts is a word", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n2", "ts": "yesterday"}]}', 422, {"body.records.0.ts"}),
    ("decision latency_ms is a list", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n3", "latency_ms": [1, 2]}]}', 422, {"body.records.0.latency_ms"}),
    ("decision batch nested 100,000 deep", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n4", "plc": ' + _nested(DEEP) + '}]}', 422, {"body"}),
    ("decision with a NUL in a string", "POST", "/devices/pi-1/decisions", "device",
     '{"records": [{"id": "n5", "label": "a\\u0000b"}]}', 422, {"body.records.0.label"}),
    ("update report reason with a lone surrogate", "POST", "/devices/pi-1/updates", "device",
     '{"id": "u1", "outcome": "refused", "reason": "\\ud800"}', 422, {"body.reason"}),
    ("admin device name is NaN", "POST", "/devices", "admin",
     '{"name": NaN}', 422, {"body.name"}),
    ("admin desired version is a number", "PUT", "/desired/device/pi-1", "admin",
     '{"version": 1}', 422, {"body.version"}),
    ("bundle manifest accuracy is a word", "POST", None, "admin",
     None, 422, {"manifest.metrics.accuracy"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_naming_the_field_and_pages_stay_up(fleet, cli_runner, case):
    _, method, path, who, body, status, fields = case
    token = fleet.tok if who == "device" else fleet.admin
    if path is None:
        r = requests.post(f"{fleet.url}{API}/bundles", timeout=30,
                          data=bundle("v2", {"accuracy": "high"}),
                          headers={**auth(token), "Content-Type": "application/x-tar"})
    else:
        r = requests.request(method, f"{fleet.url}{API}{path}", data=body.encode(), timeout=30,
                             headers={**auth(token), "Content-Type": "application/json"})
    assert r.status_code == status, r.text[:500]
    assert {e["field"] for e in r.json()["detail"]} == fields, r.text[:500]
    assert "NaN" not in r.text and len(r.content) < 4096  # the input is not echoed back
    if path is not None and path.endswith("/decisions"):
        # the sample of a refused record may still come: it is kept, the pages show it
        r = requests.put(f"{fleet.url}{API}/devices/pi-1/samples/n1", data=jpeg(), timeout=10,
                         headers={**auth(fleet.tok), "Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
    everything_answers(fleet, cli_runner)
    # and nothing of the refused body was stored
    assert fleet.c.store.decision_count() == 3
    assert [b["version"] for b in fleet.c.store.bundles()] == ["v1"]
    hb = fleet.c.store.device("pi-1")["heartbeat"]
    assert hb["counts"] == {"total": 3, "reject": 1, "unsent": 0}


def test_a_good_device_body_with_fields_a_newer_agent_adds_is_kept(fleet, cli_runner):
    """Unknown keys a board sends are kept (as bounded JSON), not refused: a newer agent
    must not have every record quarantined."""
    rec = {"id": f"x{uuid.uuid4().hex[:8]}", "ts": 1.7e9, "decision": "ok", "score": 0.99,
           "new_field": {"a": [1, 2, {"b": None}]}, "plc": {"state": "idle"}}
    r = requests.post(f"{fleet.url}{API}/devices/pi-1/decisions", json={"records": [rec]},
                      headers=auth(fleet.tok), timeout=10)
    assert r.json()["accepted"] == 1, r.text
    got = requests.get(f"{fleet.url}{API}/devices/pi-1/decisions", headers=auth(fleet.admin),
                       timeout=10).json()
    assert rec in got
    everything_answers(fleet, cli_runner)
