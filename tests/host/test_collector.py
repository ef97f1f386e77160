"""The collector over real HTTP on 127.0.0.1: auth, idempotent batches, samples, bundles,
desired models, update reports, and every name that could become a path."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from PIL import Image

from edgectl.collector import status as S
from edgectl.collector.server import ServerThread, reserve_port
from edgectl.collector.settings import Settings
from edgectl.collector.store import Store

API = "/api/v1"


@pytest.fixture
def collector(tmp_path: Path, collector_db: str):
    """A live collector on 127.0.0.1 over each backend (SQLite, PostgreSQL)."""
    data = tmp_path / "collector"
    settings = Settings.for_data_dir(data, max_sample_bytes=64 * 1024, max_json_bytes=256 * 1024,
                                     max_batch_records=100, max_bundle_bytes=1024 * 1024)
    store = Store(collector_db)
    srv = ServerThread(store, settings, reserve_port()).start()
    admin = (data / "admin.token").read_text().strip()
    yield SimpleNamespace(url=srv.url + API, store=store, settings=settings, admin=admin,
                          data=data)
    srv.stop()
    store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_device(c, name: str, group: str | None = None) -> str:
    r = requests.post(f"{c.url}/devices", json={"name": name, "group": group},
                      headers=auth(c.admin), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def records(n: int, start: int = 0) -> list[dict]:
    return [{"id": str(uuid.UUID(int=i + 1)), "seq": i + 1, "ts": 1.0 + i, "decision": "ok",
             "label": "ok", "model_version": "v1"} for i in range(start, start + n)]


def jpeg(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def bundle_tar(tmp: Path, version: str, member_prefix: str = "", extra: bytes = b"") -> Path:
    manifest = json.dumps({"schema_version": 1, "name": "tiny", "version": version}).encode()
    path = tmp / f"b-{uuid.uuid4().hex}.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{member_prefix}manifest.json", manifest),
                           (f"{member_prefix}model.onnx", b"weights" + extra)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def upload(c, path: Path) -> requests.Response:
    return requests.post(f"{c.url}/bundles", data=path.read_bytes(), headers={
        **auth(c.admin), "Content-Type": "application/x-tar"}, timeout=10)


# -- basics ------------------------------------------------------------------------------


def test_api_docs_are_off_by_default(collector):
    for page in ("/openapi.json", "/docs", "/redoc"):
        r = requests.get(collector.url.replace(API, page), timeout=10)
        assert r.status_code == 404, page
    assert requests.get(f"{collector.url}/health", timeout=10).json()["ok"] is True


def test_api_docs_when_asked_for(tmp_path, collector_db):
    data = tmp_path / "collector"
    store = Store(collector_db)
    srv = ServerThread(store, Settings.for_data_dir(data, api_docs=True), reserve_port()).start()
    try:
        spec = requests.get(srv.url + "/openapi.json", timeout=10).json()
        assert f"{API}/devices/{{device}}/decisions" in spec["paths"]
        assert requests.get(srv.url + "/docs", timeout=10).status_code == 200
    finally:
        srv.stop()
        store.close()


def test_collector_files_are_not_world_readable(collector):
    tok = add_device(collector, "pi-1")
    assert put_sample(collector, tok, "pi-1", "s1", jpeg()).status_code == 200
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    if collector.store.path is not None:                # SQLite: the database file too
        assert mode(collector.store.path) == 0o640
    assert mode(collector.data / "samples" / "pi-1" / "s1.jpg") == 0o640
    assert mode(collector.data / "samples") == 0o750
    assert mode(collector.data / "admin.token") == 0o600


def test_admin_token_file_is_private(collector):
    assert (collector.data / "admin.token").stat().st_mode & 0o777 == 0o600


def test_heartbeat_shows_in_fleet_status(collector):
    tok = add_device(collector, "pi-1", "line-1")
    hb = {"device_id": "pi-1", "model_version": "v1", "uptime_s": 5, "fps": 9.5,
          "latency_ms": {"total": {"p50": 10, "p95": 20, "p99": 30}}, "deadline_misses": 0,
          "counts": {"total": 100, "ok": 90, "reject": 8, "review": 2, "unsent": 3},
          "disk_bytes": 1000, "temperature_c": 50.0}
    r = requests.post(f"{collector.url}/devices/pi-1/heartbeat", json=hb, headers=auth(tok),
                      timeout=10)
    assert r.status_code == 200 and r.json()["desired_version"] is None
    rows = requests.get(f"{collector.url}/fleet/status", headers=auth(collector.admin),
                        timeout=10).json()
    (row,) = rows
    assert (row["device"], row["health"], row["model_version"]) == ("pi-1", "ok", "v1")
    assert (row["p95_ms"], row["rejects"], row["reviews"], row["unsent"]) == (20, 8, 2, 3)


def test_decision_batches_are_idempotent(collector):
    tok = add_device(collector, "pi-1")
    url = f"{collector.url}/devices/pi-1/decisions"
    r1 = requests.post(url, json={"records": records(5)}, headers=auth(tok), timeout=10)
    assert r1.json() == {"received": 5, "accepted": 5, "duplicates": 0}
    r2 = requests.post(url, json={"records": records(6, start=2)}, headers=auth(tok), timeout=10)
    assert r2.json() == {"received": 6, "accepted": 3, "duplicates": 3}
    assert collector.store.decision_count("pi-1") == 8
    got = requests.get(f"{collector.url}/devices/pi-1/decisions", headers=auth(collector.admin),
                       timeout=10).json()
    assert [g["seq"] for g in got] == list(range(1, 9))


def test_decision_bodies_are_kept_as_sent_and_odd_bodies_behave_as_before(collector):
    """The store keeps each record's JSON text as the board sent it (sliced out of the
    request, not serialised again); what reads back is the record. Bodies the fast parser
    leaves to json.loads (a BOM, a repeated "records") behave as before; a NaN is refused
    (422 naming the field) and bad bodies are refused."""
    tok = add_device(collector, "pi-1")
    url = f"{collector.url}/devices/pi-1/decisions"
    post = lambda body: requests.post(url, data=body, headers={  # noqa: E731
        **auth(tok), "Content-Type": "application/json"}, timeout=10)
    recs = [{"id": "a1", "seq": 1, "x": {"é": [1, 2.5, None, True]}, "s": "q\"\\\u2028"},
            {"id": "a2", "seq": 2, "big": 2**70, "neg": -0.0, "e": 1e-7}]
    body = '{ "device_id" : "pi-1",\n "records" : [\n  ' + ',\n  '.join(
        json.dumps(r, indent=1, ensure_ascii=False) for r in recs) + '\n] }\n'
    r = post(body.encode())
    assert r.json() == {"received": 2, "accepted": 2, "duplicates": 0}, r.text
    assert requests.get(url, headers=auth(collector.admin), timeout=10).json() == recs
    with collector.store.engine.connect() as db:
        stored = [b for (b,) in db.exec_driver_sql("SELECT body FROM decisions ORDER BY id")]
    assert stored == [json.dumps(r, indent=1, ensure_ascii=False) for r in recs]
    r = post(b'{"records": [{"id": "n1", "seq": 3, "score": NaN}]}')
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["detail"]] == ["body.records.0.score"]
    r = post(b'{"records": [{"id": "n1", "seq": 3, "score": 0.5}]}')
    assert r.json()["accepted"] == 1
    r = post(b'\xef\xbb\xbf{"records": [{"id": "b1", "seq": 4}]}')
    assert r.json()["accepted"] == 1
    r = post(b'{"records": [{"id": "lost"}], "records": [{"id": "d1", "seq": 5}]}')
    assert r.json() == {"received": 1, "accepted": 1, "duplicates": 0}
    got = requests.get(url, headers=auth(collector.admin), timeout=10).json()
    assert [g["id"] for g in got] == ["a1", "a2", "n1", "b1", "d1"]
    for bad, code in [(b'{"records": [{"id": "x1"}', 422), (b'{"records": {"id": "x"}}', 422),
                      (b'{"records": [1]}', 422), (b'[]', 422), (b'{"device_id": 5, '
                      b'"records": []}', 422), (b'{"records": [{"id": "x2"}]} x', 422),
                      (b'\xff\xfe{', 422)]:
        assert post(bad).status_code == code, bad
    assert collector.store.decision_count() == 5


def test_batch_parser_agrees_with_json_loads():
    """``batch_body.split`` is json.loads plus each record's source text, or None (then
    json.loads decides), on shapes a board or a fuzzer could send."""
    import random

    from edgectl.collector.api.batch_body import split

    rng = random.Random(7)

    def value(depth: int = 0):
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(3))]
        if kind == 6:
            return {f"k{i}": value(depth + 1) for i in range(rng.randrange(3))}
        return [None, True, rng.random() * 10 ** rng.randrange(-5, 30),
                rng.randrange(-2**70, 2**70),
                "".join(rng.choice('ab"\\\u00e9\u2028 ') for _ in range(rng.randrange(6)))][kind]

    for _ in range(300):
        recs = [{"id": f"r{i}", **{f"f{j}": value() for j in range(3)}} for i in range(3)]
        ws = rng.choice(["", " ", "\n  ", "\t"])
        parts = [json.dumps(r, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < .5)
                 for r in recs]
        text = ("{" + ws + '"device_id":' + ws + '"d",' + ws + '"records"' + ws + ":" + ws + "["
                + ws + ("," + ws).join(parts) + ws + "]" + ws + "}" + ws)
        obj, texts = split(text)
        assert obj == json.loads(text) and texts == parts
    for text in ['{"records": []}', '{}', '{"records": [], "records": [{"id": "a"}]}',
                 '{"records": [{"id": "a"}], "records": 5}']:
        obj, texts = split(text)
        assert obj == json.loads(text)
        assert texts == (None if obj.get("records") == 5 else
                         [json.dumps(r) for r in obj.get("records", [])] if "records" in obj
                         else None)
    for text in ['', '[]', '{"records": [1,]}', '{"records": [1] ', '{"a": 1} 2', "{'a': 1}",
                 '{"records": [1] "x": 2}', '\ufeff{}']:
        assert split(text) is None


def test_oversize_batches_are_refused(collector):
    tok = add_device(collector, "pi-1")
    url = f"{collector.url}/devices/pi-1/decisions"
    r = requests.post(url, json={"records": records(101)}, headers=auth(tok), timeout=10)
    assert r.status_code == 413
    big = [{**rec, "pad": "x" * 4000} for rec in records(90)]
    r = requests.post(url, json={"records": big}, headers=auth(tok), timeout=10)
    assert r.status_code == 413
    assert collector.store.decision_count() == 0


# -- authentication and authorisation ----------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_token_is_401(collector, headers):
    add_device(collector, "pi-1")
    for method, path, kw in [
        ("post", "/devices/pi-1/heartbeat", {"json": {}}),
        ("post", "/devices/pi-1/decisions", {"json": {"records": records(1)}}),
        ("put", f"/devices/pi-1/samples/{uuid.uuid4()}", {"data": jpeg()}),
        ("get", "/devices/pi-1/desired", {}),
        ("get", "/fleet/status", {}),
        ("post", "/devices", {"json": {"name": "x"}}),
    ]:
        r = requests.request(method, collector.url + path, headers=headers, timeout=10, **kw)
        assert r.status_code == 401, (path, r.status_code)
    assert collector.store.decision_count() == 0


def test_a_device_cannot_write_as_another(collector):
    tok_a = add_device(collector, "dev-a")
    add_device(collector, "dev-b")
    h = auth(tok_a)
    cases = [
        ("post", "/devices/dev-b/heartbeat", {"json": {}}),
        ("post", "/devices/dev-b/decisions", {"json": {"records": records(2)}}),
        ("put", f"/devices/dev-b/samples/{uuid.uuid4()}",
         {"data": jpeg(), "headers": {**h, "Content-Type": "image/jpeg"}}),
        ("post", "/devices/dev-b/updates", {"json": {"id": "r1", "outcome": "applied"}}),
        ("get", "/devices/dev-b/bundle", {}),
        # its own URL, but the body claims to be another device
        ("post", "/devices/dev-a/heartbeat", {"json": {"device_id": "dev-b"}}),
        ("post", "/devices/dev-a/decisions", {"json": {"device_id": "dev-b",
                                                       "records": records(1)}}),
        ("post", "/devices/dev-a/decisions", {"json": {"records": [
            {**records(1)[0], "device_id": "dev-b"}]}}),
        # admin endpoints
        ("get", "/fleet/status", {}),
        ("post", "/devices", {"json": {"name": "dev-c"}}),
    ]
    for method, path, kw in cases:
        kw.setdefault("headers", h)
        r = requests.request(method, collector.url + path, timeout=10, **kw)
        assert r.status_code == 403, (path, r.status_code, r.text)
    assert collector.store.decision_count() == 0
    assert collector.store.sample_count() == 0
    assert collector.store.device("dev-b")["last_seen"] is None


def test_rotated_token_replaces_the_old_one(collector):
    old = add_device(collector, "pi-1")
    new = requests.post(f"{collector.url}/devices/pi-1/token", headers=auth(collector.admin),
                        timeout=10).json()["token"]
    url = f"{collector.url}/devices/pi-1/heartbeat"
    assert requests.post(url, json={}, headers=auth(old), timeout=10).status_code == 401
    assert requests.post(url, json={}, headers=auth(new), timeout=10).status_code == 200


def test_device_names_are_unique(collector):
    add_device(collector, "pi-1")
    r = requests.post(f"{collector.url}/devices", json={"name": "pi-1"},
                      headers=auth(collector.admin), timeout=10)
    assert r.status_code == 409


# -- samples -----------------------------------------------------------------------------


def put_sample(c, tok, device, sample_id, data, ctype="image/jpeg"):
    return requests.put(f"{c.url}/devices/{device}/samples/{sample_id}", data=data,
                        headers={**auth(tok), "Content-Type": ctype}, timeout=10)


def test_samples_are_stored_once_under_safe_names(collector):
    tok = add_device(collector, "pi-1")
    sid = str(uuid.uuid4())
    r = put_sample(collector, tok, "pi-1", sid, jpeg())
    assert r.status_code == 200 and r.json() == {"stored": True, "duplicate": False}
    assert put_sample(collector, tok, "pi-1", sid, jpeg()).json()["duplicate"] is True
    files = list((collector.data / "samples").rglob("*.*"))
    assert files == [collector.data / "samples" / "pi-1" / f"{sid}.jpg"]
    assert Image.open(files[0]).size == (16, 16)
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    assert put_sample(collector, tok, "pi-1", "s2", buf.getvalue(), "image/png").status_code == 200
    assert (collector.data / "samples" / "pi-1" / "s2.png").is_file()
    assert collector.store.sample_count("pi-1") == 2


@pytest.mark.parametrize("data,ctype,code", [
    (b"\xff\xd8" + b"\0" * (70 * 1024), "image/jpeg", 413),   # over the 64 KiB limit
    (b"hello, not an image", "image/jpeg", 422),
    (jpeg()[:40], "image/jpeg", 422),                          # truncated
    (b"GIF89a....", "image/gif", 415),
    (jpeg(), "text/plain", 415),
    (jpeg(), "image/png", 415),                                # says PNG, is JPEG
    (b"", "image/jpeg", 400),
])
def test_bad_samples_are_refused_and_nothing_is_stored(collector, data, ctype, code):
    tok = add_device(collector, "pi-1")
    r = put_sample(collector, tok, "pi-1", "s1", data, ctype)
    assert r.status_code == code, r.text
    assert collector.store.sample_count() == 0
    assert not any(p.is_file() for p in (collector.data / "samples").rglob("*"))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` (a decompression bomb's header) and holds
    one tiny IDAT: Pillow reads the size before decoding anything."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [
    (6000, 6000),         # 36 Mpx: over the collector's 25 Mpx limit, under Pillow's guard
    (100_000, 100_000),   # 10 Gpx: Pillow's DecompressionBombError (was a 500)
    (20_000, 5),          # in limits, but its pixel data is missing: undecodable
])
def test_png_bombs_and_broken_pngs_are_422_never_500(collector, width, height):
    tok = add_device(collector, "pi-1")
    r = put_sample(collector, tok, "pi-1", "s1", _png_header(width, height), "image/png")
    assert r.status_code == 422, r.text
    assert collector.store.sample_count() == 0


def test_chunked_oversize_sample_is_refused(collector):
    tok = add_device(collector, "pi-1")

    def body():
        for _ in range(20):
            yield b"\0" * 8192   # 160 KiB, no Content-Length

    r = requests.put(f"{collector.url}/devices/pi-1/samples/s1", data=body(),
                     headers={**auth(tok), "Content-Type": "image/jpeg"}, timeout=10)
    assert r.status_code == 413
    assert collector.store.sample_count() == 0


# -- path traversal ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "..", ".hidden", "a/b", "a\\b", "", "x" * 200,
                                  "-rf", "a..b/../c"])
def test_unsafe_device_names_are_refused(collector, name):
    r = requests.post(f"{collector.url}/devices", json={"name": name},
                      headers=auth(collector.admin), timeout=10)
    assert 400 <= r.status_code < 500
    assert collector.store.devices() == []


@pytest.mark.parametrize("sid", ["..", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", ".bashrc",
                                 "a%5C..%5Cb", "..%00", "x%2Fy"])
def test_unsafe_sample_ids_are_refused(collector, sid):
    tok = add_device(collector, "pi-1")
    r = put_sample(collector, tok, "pi-1", sid, jpeg())
    assert 400 <= r.status_code < 500, r.status_code
    assert collector.store.sample_count() == 0
    assert [p.name for p in collector.data.rglob("*")
            if p.suffix in (".jpg", ".png")] == []


@pytest.mark.parametrize("path", ["/devices/..%2Fpi-1/heartbeat", "/devices/%2E%2E/heartbeat",
                                  "/devices/pi-1%2F..%2Fpi-2/heartbeat"])
def test_unsafe_device_in_url_is_refused(collector, path):
    tok = add_device(collector, "pi-1")
    r = requests.post(collector.url + path, json={}, headers=auth(tok), timeout=10)
    assert 400 <= r.status_code < 500


def test_unsafe_record_ids_are_refused(collector):
    tok = add_device(collector, "pi-1")
    bad = [{**records(1)[0], "id": "../../etc/passwd"}]
    r = requests.post(f"{collector.url}/devices/pi-1/decisions", json={"records": bad},
                      headers=auth(tok), timeout=10)
    assert r.status_code == 422
    assert collector.store.decision_count() == 0


@pytest.mark.parametrize("version,prefix", [("../../evil", ""), ("ok-1", "../"),
                                            ("ok-2", "/abs/"), (".hidden", "")])
def test_unsafe_bundles_are_refused(collector, tmp_path, version, prefix):
    r = upload(collector, bundle_tar(tmp_path, version, prefix))
    assert r.status_code == 422, r.text
    assert collector.store.bundles() == []
    assert list((collector.data / "bundles").iterdir()) == []


def test_unsafe_desired_targets_are_refused(collector, tmp_path):
    assert upload(collector, bundle_tar(tmp_path, "v1")).status_code == 200
    for target in ["..%2Fx", ".x", "%2E%2E"]:
        r = requests.put(f"{collector.url}/desired/group/{target}", json={"version": "v1"},
                         headers=auth(collector.admin), timeout=10)
        assert 400 <= r.status_code < 500
    r = requests.put(f"{collector.url}/desired/group/g", json={"version": "../v1"},
                     headers=auth(collector.admin), timeout=10)
    assert r.status_code == 422
    assert collector.store.desired() == []


# -- bundles, desired models, updates ----------------------------------------------------


def test_desired_model_and_bundle_download(collector, tmp_path):
    tok = add_device(collector, "pi-1", "line-1")
    add_device(collector, "pi-2", "line-1")
    h = auth(tok)
    assert requests.get(f"{collector.url}/devices/pi-1/desired", headers=h,
                        timeout=10).json()["version"] is None
    assert requests.get(f"{collector.url}/devices/pi-1/bundle", headers=h,
                        timeout=10).status_code == 404
    t1, t2 = bundle_tar(tmp_path, "v1"), bundle_tar(tmp_path, "v2", "b/")
    up = upload(collector, t1).json()
    assert up["sha256"] == hashlib.sha256(t1.read_bytes()).hexdigest() and up["created"]
    assert upload(collector, t1).json()["created"] is False           # same bytes: fine
    assert upload(collector, bundle_tar(tmp_path, "v1", extra=b"!")).status_code == 409
    assert upload(collector, t2).status_code == 200
    admin = auth(collector.admin)
    assert requests.put(f"{collector.url}/desired/group/line-1", json={"version": "v1"},
                        headers=admin, timeout=10).status_code == 200
    d = requests.get(f"{collector.url}/devices/pi-1/desired", headers=h, timeout=10).json()
    assert (d["version"], d["source"]) == ("v1", "group")
    r = requests.get(f"{collector.url}/devices/pi-1/bundle", headers=h, timeout=10)
    assert r.content == t1.read_bytes()
    assert r.headers["X-Bundle-SHA256"] == hashlib.sha256(r.content).hexdigest()
    assert r.headers["X-Bundle-Version"] == "v1"
    # a device setting wins over its group's
    assert requests.put(f"{collector.url}/desired/device/pi-1", json={"version": "v2"},
                        headers=admin, timeout=10).status_code == 200
    r = requests.get(f"{collector.url}/devices/pi-1/bundle", headers=h, timeout=10)
    assert r.content == t2.read_bytes() and r.headers["X-Bundle-Version"] == "v2"
    assert collector.store.desired_for("pi-2")["version"] == "v1"
    for bad in [("device", "nobody", "v1"), ("group", "g", "v9")]:
        r = requests.put(f"{collector.url}/desired/{bad[0]}/{bad[1]}", json={"version": bad[2]},
                         headers=admin, timeout=10)
        assert r.status_code == 404


def test_not_a_tar_is_refused(collector, tmp_path):
    p = tmp_path / "x.tar"
    p.write_bytes(b"nope" * 100)
    assert upload(collector, p).status_code == 422
    assert list((collector.data / "bundles").iterdir()) == []


def test_refused_update_shows_as_degraded(collector, tmp_path):
    tok = add_device(collector, "pi-1")
    upload(collector, bundle_tar(tmp_path, "v2"))
    requests.put(f"{collector.url}/desired/device/pi-1", json={"version": "v2"},
                 headers=auth(collector.admin), timeout=10)
    h = auth(tok)
    requests.post(f"{collector.url}/devices/pi-1/heartbeat", json={"model_version": "v1"},
                  headers=h, timeout=10)
    rep = {"id": "u1", "version": "v2", "outcome": "refused", "reason": "sha256 mismatch",
           "previous_version": "v1"}
    assert requests.post(f"{collector.url}/devices/pi-1/updates", json=rep, headers=h,
                         timeout=10).json()["stored"] is True
    assert requests.post(f"{collector.url}/devices/pi-1/updates", json=rep, headers=h,
                         timeout=10).json()["duplicate"] is True
    bad = {**rep, "id": "u2", "outcome": "exploded"}
    assert requests.post(f"{collector.url}/devices/pi-1/updates", json=bad, headers=h,
                         timeout=10).status_code == 422
    (row,) = requests.get(f"{collector.url}/fleet/status", headers=auth(collector.admin),
                          timeout=10).json()
    assert row["health"] == "degraded" and "sha256 mismatch" in row["reasons"][0]


# -- pure status rules -------------------------------------------------------------------


def test_health_rules():
    now = 1000.0
    base = {"last_seen": 990.0, "model_version": "v1", "desired_version": "v1", "total": 1000,
            "deadline_misses": 0, "unsent": 0, "temperature_c": 50.0}
    assert S.health(base, now, 60) == ("ok", [])
    assert S.health({**base, "last_seen": None}, now, 60)[0] == "stale"
    assert S.health({**base, "last_seen": 900.0}, now, 60)[0] == "stale"
    assert S.health({**base, "deadline_misses": 20}, now, 60)[0] == "degraded"
    assert S.health({**base, "deadline_misses": 5}, now, 60)[0] == "ok"
    assert S.health({**base, "unsent": 10**6}, now, 60)[0] == "degraded"
    assert S.health({**base, "temperature_c": 85}, now, 60)[0] == "degraded"
    pending = {**base, "desired_version": "v2"}
    assert S.health(pending, now, 60) == ("ok", ["update to v2 pending"])
    failed = {**pending, "last_update": {"version": "v2", "outcome": "rolled_back",
                                         "reason": "health"}}
    assert S.health(failed, now, 60)[0] == "degraded"
    # an old failure for another version does not taint the current one
    assert S.health({**failed, "desired_version": "v3"}, now, 60)[0] == "ok"


def test_store_survives_reopen(collector_db):
    s = Store(collector_db)
    s.add_device("a", None, "h1")
    assert s.add_decisions("a", records(3)) == (3, 0)
    s.close()
    s2 = Store(collector_db, migrate=False)
    assert s2.add_decisions("a", records(4)) == (1, 3)
    assert s2.device_for_token_hash("h1") == "a"
    s2.close()
