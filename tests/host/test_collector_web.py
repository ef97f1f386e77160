"""The fleet pages and /metrics over real HTTP on 127.0.0.1, on both backends: who may see
them (session, admin token, never a device token), CSRF, what each page shows, the review
labels and their export read back as a training folder, and the Prometheus text."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from edgectl.collector.server import LocalCollector

API = "/api/v1"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def web(tmp_path: Path, collector_db: str):
    c = LocalCollector(tmp_path / "collector", db=collector_db).start()
    tokens = {name: c.add_device(name, group) for name, group in
              (("line1-a", "line1"), ("line1-b", "line1"), ("line2-a", "line2"))}
    metrics_token = (tmp_path / "collector" / "metrics.token").read_text().strip()
    yield SimpleNamespace(url=c.url, c=c, admin=c.admin_token, tokens=tokens,
                          metrics_token=metrics_token, data=tmp_path / "collector")
    c.close()


def png(rgb: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def heartbeat(w, device: str, **extra) -> None:
    body = {"device_id": device, "model_version": "v1", "fps": 2.0,
            "latency_ms": {"total": {"p50": 4.0, "p95": 9.5, "p99": 12.0}},
            "latency_hist_ms": {"le": [5.0, 10.0, 50.0], "counts": [40, 95, 100],
                                "count": 100, "sum": 520.0},
            "counts": {"total": 100, "ok": 70, "reject": 30, "review": 0,
                       "deadline_misses": 2, "unsent": 7},
            "deadline_misses": 2, "faults": {"camera": "no frames"}, **extra}
    r = requests.post(f"{w.url}{API}/devices/{device}/heartbeat", json=body,
                      headers=auth(w.tokens[device]), timeout=10)
    assert r.status_code == 200, r.text


def post_decisions(w, device: str, recs: list[dict]) -> None:
    r = requests.post(f"{w.url}{API}/devices/{device}/decisions",
                      json={"device_id": device, "records": recs},
                      headers=auth(w.tokens[device]), timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == len(recs), r.text


def decision(ts: float, label: str, score: float, latency: float, missed: bool = False) -> dict:
    kind = "ok" if label == "ok" else "reject"
    return {"id": str(uuid.uuid4()), "seq": int(ts * 1000), "ts": ts, "label": label,
            "score": score, "decision": kind, "model_version": "v1",
            "latency_ms": {"total": latency}, "deadline_missed": missed}


def login(w) -> requests.Session:
    s = requests.Session()
    form = s.get(f"{w.url}/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = s.post(f"{w.url}/login", data={"token": w.admin, "next": "/review", "csrf": csrf},
               allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/review"
    return s


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_pages_need_a_session_or_the_admin_token_and_refuse_device_tokens(web):
    for path in ("/", "/devices/line1-a", "/review", "/models", "/review/export.zip"):
        r = requests.get(web.url + path, allow_redirects=False, timeout=10)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=%2F"), r.headers["location"]
    r = requests.get(web.url + "/", headers=auth(web.admin), timeout=10)
    assert r.status_code == 200 and 'id="fleet"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    r = requests.get(web.url + "/", headers=auth(web.tokens["line1-a"]), timeout=10)
    assert r.status_code == 403 and "device tokens" in r.text
    assert requests.get(web.url + "/", headers=auth("x" * 43), timeout=10).status_code == 401
    # the API map is off by default (it is not behind a token)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert requests.get(web.url + path, headers=auth(web.admin),
                            timeout=10).status_code == 404, path


def test_login_gives_a_strict_httponly_session_and_forms_need_its_csrf_token(web):
    s = requests.Session()
    page = s.get(f"{web.url}/login?next=/models", timeout=10)
    csrf = csrf_of(page.text)
    bad = s.post(f"{web.url}/login", data={"token": "nope", "csrf": csrf}, timeout=10)
    assert bad.status_code == 401 and "Not the admin token" in bad.text
    dev = s.post(f"{web.url}/login", data={"token": web.tokens["line1-a"], "csrf": csrf},
                 timeout=10)
    assert dev.status_code == 403 and "device token" in dev.text
    forged = requests.post(f"{web.url}/login", data={"token": web.admin, "csrf": "forged"},
                           allow_redirects=False, timeout=10)  # no session, no CSRF: refused
    assert forged.status_code == 403
    ok = s.post(f"{web.url}/login", data={"token": web.admin, "next": "//evil.example/x",
                                          "csrf": csrf}, allow_redirects=False, timeout=10)
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
    cookie = ok.headers["set-cookie"].lower()
    assert "edgectl_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert web.admin not in ok.headers["set-cookie"]
    assert s.get(f"{web.url}/", timeout=10).status_code == 200
    # a form post without the session's CSRF token is refused, with it accepted
    refused = s.post(f"{web.url}/logout", data={"csrf": "x"}, allow_redirects=False, timeout=10)
    assert refused.status_code == 403
    out = s.post(f"{web.url}/logout", data={"csrf": csrf_of(s.get(f"{web.url}/").text)},
                 allow_redirects=False, timeout=10)
    assert out.status_code == 303
    assert s.get(f"{web.url}/", allow_redirects=False, timeout=10).status_code == 303


def test_fleet_page_rows_link_state_rates_and_faults(web):
    now = time.time()
    heartbeat(web, "line1-a")
    heartbeat(web, "line1-b", faults={})
    web.c.store.touch("line1-b", now=now - 400)  # stale: 120 s < 400 s < 600 s
    post_decisions(web, "line1-a", [decision(now - 60 + i, "ok" if i % 4 else "scratch", 0.9,
                                             5.0) for i in range(40)])
    page = requests.get(web.url + "/", headers=auth(web.admin), timeout=10).text
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<tr data-device="([^"]+)">(.*?)</tr>', page, re.S)}
    assert set(rows) == {"line1-a", "line1-b", "line2-a"}
    assert 'class="pill online"' in rows["line1-a"] and "camera" in rows["line1-a"]
    assert 'class="pill stale"' in rows["line1-b"]
    assert 'class="pill offline"' in rows["line2-a"] and "never" in rows["line2-a"]
    cells = re.findall(r'<td class="n">([^<]*)</td>', rows["line1-a"])
    # items/min over 10 min, reject rate, p95, misses, backlog
    assert cells == ["4.0", "25.0 %", "9.50", "2", "7"], cells


def test_device_page_charts_decisions_samples_and_updates(web):
    now = time.time()
    recs = [decision(now - 3 * 3600 + i * 60, "scratch" if i % 5 == 0 else "ok", 0.7,
                     3.0 + (i % 10), missed=(i == 7)) for i in range(150)]
    post_decisions(web, "line1-a", recs)
    requests.put(f"{web.url}{API}/devices/line1-a/samples/{recs[-1]['id']}",
                 data=png((200, 30, 30)), timeout=10,
                 headers={**auth(web.tokens["line1-a"]), "Content-Type": "image/png"})
    r = requests.post(f"{web.url}{API}/devices/line1-a/updates", headers=auth(
        web.tokens["line1-a"]), json={"id": "u1", "ts": now, "version": "v2",
                                      "outcome": "rolled_back", "reason": "test vectors differ"},
        timeout=10)
    assert r.status_code == 200, r.text
    page = requests.get(web.url + "/devices/line1-a?hours=6", headers=auth(web.admin),
                        timeout=10)
    assert page.status_code == 200
    series = json.loads(re.search(r'<script type="application/json" id="series">(.*?)</script>',
                                  page.text, re.S).group(1))
    assert sum(series["items"]) == 150 and sum(series["rejects"]) == 30
    assert sum(series["misses"]) == 1
    assert max(v for v in series["p95_ms"] if v is not None) <= 12.0
    assert "/static/vendor/uplot-1.6.32/uPlot.iife.min.js" in page.text
    assert f'/samples/line1-a/{recs[-1]["id"]}' in page.text
    assert "rolled_back" in page.text and "test vectors differ" in page.text
    img = requests.get(f'{web.url}/samples/line1-a/{recs[-1]["id"]}', headers=auth(web.admin),
                       timeout=10)
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    assert requests.get(web.url + "/devices/nope", headers=auth(web.admin),
                        timeout=10).status_code == 404
    assert requests.get(web.url + "/devices/..%2Fx", headers=auth(web.admin),
                        timeout=10).status_code in (400, 404)
    js = requests.get(web.url + "/static/vendor/uplot-1.6.32/uPlot.iife.min.js", timeout=10)
    assert js.status_code == 200 and "uPlot" in js.text


def test_review_labels_export_as_a_folder_the_build_reads(web, tmp_path):
    now = time.time()
    colours = {"ok": (30, 200, 30), "scratch": (200, 30, 30)}
    recs = [decision(now - 100 + i, "ok" if i % 2 else "scratch", 0.55, 4.0) for i in range(8)]
    post_decisions(web, "line1-b", recs)
    for r in recs:
        put = requests.put(f"{web.url}{API}/devices/line1-b/samples/{r['id']}",
                           data=png(colours[r["label"]]), timeout=10,
                           headers={**auth(web.tokens["line1-b"]), "Content-Type": "image/png"})
        assert put.status_code == 200, put.text
    s = login(web)
    queue = s.get(f"{web.url}/review", timeout=10)
    assert queue.text.count('action="/review/label"') == 8
    token = csrf_of(queue.text)
    truth = {}
    for r in recs[:5]:  # a person corrects the model on one of them
        label = "ok" if r["label"] == "ok" else ("crack" if r is recs[0] else "scratch")
        res = s.post(f"{web.url}/review/label", data={
            "csrf": token, "device": "line1-b", "sample_id": r["id"], "label": label},
            allow_redirects=False, timeout=10)
        assert res.status_code == 303, res.text
        truth[r["id"]] = label
    bad = s.post(f"{web.url}/review/label", data={"csrf": token, "device": "line1-b",
                                                  "sample_id": recs[5]["id"], "label": "../x"},
                 timeout=10)
    assert bad.status_code == 422
    gone = s.post(f"{web.url}/review/label", data={"csrf": token, "device": "line1-b",
                                                   "sample_id": "nope", "label": "ok"},
                  timeout=10)
    assert gone.status_code == 404
    todo = s.get(f"{web.url}/review", timeout=10).text
    assert todo.count('action="/review/label"') == 3
    assert s.get(f"{web.url}/review?show=done", timeout=10).text.count("labelled <b") == 5

    z = s.get(f"{web.url}/review/export.zip", timeout=10)
    assert z.status_code == 200 and z.headers["x-labels"] == "5"
    out = tmp_path / "labels"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        zf.extractall(out)
    from edgectl.pipeline.data import DataConfig, load_datasets

    ds = load_datasets(DataConfig.from_spec(f"folder:{out}", img_size=32))
    assert set(ds.labels) == {"ok", "scratch", "crack"}
    assert len(ds.train) + len(ds.test) == 5
    got = {p.stem.split("-", 2)[2]: p.parent.name for p in out.glob("*/*.png")}
    assert got == truth
    assert "model_label" in (out / "labels.csv").read_text()


def scrape(web, token: str) -> tuple[dict, dict]:
    r = requests.get(web.url + "/metrics", headers=auth(token), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    return fams, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in fams.values() for s in f.samples}


def test_metrics_parse_with_per_device_series(web):
    hb_route = (("method", "POST"), ("route", f"{API}/devices/{{device}}/heartbeat"),
                ("status", "200"))
    before = scrape(web, web.admin)[1].get(("edgectl_collector_requests_total", hb_route), 0)
    heartbeat(web, "line1-a")
    bad = requests.post(f"{web.url}{API}/devices/line1-b/heartbeat", json={
        "latency_hist_ms": {"le": [5.0], "counts": [9], "count": 3, "sum": 1.0}},
        headers=auth(web.tokens["line1-b"]), timeout=10)  # inconsistent: refused
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.latency_hist_ms"
    heartbeat(web, "line1-b", latency_hist_ms=None)
    requests.get(web.url + "/", headers=auth(web.admin), timeout=10)
    assert requests.get(web.url + "/metrics", timeout=10).status_code == 401
    assert requests.get(web.url + "/metrics", headers=auth(web.tokens["line1-a"]),
                        timeout=10).status_code == 401
    fams, samples = scrape(web, web.metrics_token)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("edgectl_device_up", device="line1-a", group="line1") == 1.0
    assert value("edgectl_device_up", device="line2-a", group="line2") == 0.0
    assert value("edgectl_device_decisions_total", device="line1-a", decision="reject") == 30
    assert value("edgectl_device_rejects_total", device="line1-a") == 30
    assert value("edgectl_device_deadline_misses_total", device="line1-a") == 2
    assert value("edgectl_device_journal_backlog", device="line1-a") == 7
    assert value("edgectl_device_fault", device="line1-a", fault="camera") == 1
    assert value("edgectl_device_latency_seconds_bucket", device="line1-a", le="0.01") == 95
    assert value("edgectl_device_latency_seconds_bucket", device="line1-a", le="+Inf") == 100
    assert value("edgectl_device_latency_seconds_sum", device="line1-a") == pytest.approx(0.52)
    assert ("edgectl_device_latency_seconds_count", (("device", "line1-b"),)) not in samples
    assert value("edgectl_device_last_seen_timestamp_seconds", device="line1-a") > 0
    assert fams["edgectl_device_latency_seconds"].type == "histogram"
    # the collector's own requests, by route template (counters of this process)
    assert samples[("edgectl_collector_requests_total", hb_route)] - before == 2
    assert value("edgectl_collector_requests_total", method="GET", route="/",
                 status="200") >= 1


def test_models_page_lists_bundles_with_metrics_and_who_runs_them(web):
    manifest = {"version": "v1", "name": "mnv2", "labels": ["ok", "scratch"],
                "reject_labels": ["scratch"], "deployable": True,
                "metrics": {"accuracy": 0.912, "sparsity": 0.5},
                "baseline": {"accuracy": 0.93},
                "provenance": {"config": {"prune": "structured"}},
                "artifacts": [{"path": "model.int8.onnx", "bytes": 400_000,
                               "metrics": {"accuracy": 0.905, "latency_ms": {"p95": 1.25}}}]}
    web.c.store.add_bundle("v1", "mnv2", "v1.tar", "ab" * 32, 1_234_567, manifest)
    heartbeat(web, "line1-a")
    web.c.store.set_desired("group", "line1", "v1")
    page = requests.get(web.url + "/models", headers=auth(web.admin), timeout=10).text
    row = re.search(r'<tr data-version="v1">(.*?)</tr>', page, re.S).group(1)
    for text in ("91.2 %", "93.0 %", "50 %", "structured", "1.2 MiB", "model.int8.onnx",
                 "90.5 %", "1.25 ms", "/devices/line1-a", "group line1"):
        assert text in row, text
    # the review buttons follow the newest bundle's classes and defects
    assert 'value="scratch" class="defect' in _review_buttons(web)


def _review_buttons(web) -> str:
    recs = [decision(time.time(), "scratch", 0.4, 3.0)]
    post_decisions(web, "line1-a", recs)
    requests.put(f"{web.url}{API}/devices/line1-a/samples/{recs[0]['id']}",
                 data=png((200, 30, 30)), timeout=10,
                 headers={**auth(web.tokens["line1-a"]), "Content-Type": "image/png"})
    return requests.get(web.url + "/review", headers=auth(web.admin), timeout=10).text


def test_fleet_export_labels_writes_a_training_folder_and_refuses_a_used_one(web, tmp_path,
                                                                            cli_runner):
    from edgectl.cli import main as cli

    recs = [decision(time.time() - 10 + i, "ok" if i % 2 else "scratch", 0.5, 4.0)
            for i in range(4)]
    post_decisions(web, "line1-a", recs)
    for r in recs:
        requests.put(f"{web.url}{API}/devices/line1-a/samples/{r['id']}",
                     data=png((30, 200, 30) if r["label"] == "ok" else (200, 30, 30)),
                     headers={**auth(web.tokens["line1-a"]), "Content-Type": "image/png"},
                     timeout=10).raise_for_status()
    args = ["fleet", "export-labels", "--server", web.url,
            "--token-file", str(web.data / "admin.token")]
    out = tmp_path / "labels"
    none = cli_runner.invoke(cli, [*args, str(out)])
    assert none.exit_code != 0 and "no labelled samples" in none.output and not out.exists()
    for r in recs:
        web.c.store.set_review_label("line1-a", r["id"], r["label"], "admin")
    res = cli_runner.invoke(cli, [*args, str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["classes"] == {"ok": 2, "scratch": 2}
    assert sorted(p.parent.name for p in out.glob("*/*.png")) == ["ok", "ok", "scratch", "scratch"]
    again = cli_runner.invoke(cli, [*args, str(out)])
    assert again.exit_code != 0 and "not empty" in again.output
    assert len(list(out.glob("*/*.png"))) == 4  # untouched


def test_unpack_labels_refuses_an_archive_that_would_leave_the_folder(tmp_path):
    from edgectl.collector.labels import LabelExportError, unpack_labels

    for member in ("../evil.png", "/abs.png", "ok/../../x.png", "ok/a/b.png", "ok/x.sh"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("ok/fine.png", png((1, 2, 3)))
            zf.writestr(member, b"x")
        with pytest.raises(LabelExportError):
            unpack_labels(buf.getvalue(), tmp_path / "out")
        assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp folder left either


def copied(w, s: requests.Session) -> requests.Session:
    """Another client holding only a copy of ``s``'s session cookie (a stolen cookie)."""
    thief = requests.Session()
    thief.cookies.set("edgectl_session", s.cookies.get("edgectl_session"))
    return thief


def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_opens_nothing(web):
    s = login(web)
    thief = copied(web, s)
    assert thief.get(f"{web.url}/", allow_redirects=False, timeout=10).status_code == 200
    out = s.post(f"{web.url}/logout", data={"csrf": csrf_of(s.get(f"{web.url}/").text)},
                 allow_redirects=False, timeout=10)
    assert out.status_code == 303
    r = thief.get(f"{web.url}/", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # a second login is a new session, unaffected
    assert login(web).get(f"{web.url}/", allow_redirects=False, timeout=10).status_code == 200


def test_rotate_admin_token_ends_every_session_and_the_old_token(web, cli_runner):
    from edgectl.cli import main

    sessions = [login(web), login(web)]
    thieves = [copied(web, s) for s in sessions]
    assert all(t.get(f"{web.url}/", allow_redirects=False, timeout=10).status_code == 200
               for t in thieves)
    old = web.admin
    res = cli_runner.invoke(main, ["serve", "--data-dir", str(web.data), "--db",
                                   str(web.c.store.url.render_as_string(hide_password=False)),
                                   "rotate-admin-token"])
    assert res.exit_code == 0, res.output
    assert "2 page session(s) ended" in res.output
    new = (web.data / "admin.token").read_text().strip()
    assert new != old and (web.data / "admin.token").stat().st_mode & 0o777 == 0o600
    for client in (*sessions, *thieves):
        r = client.get(f"{web.url}/", allow_redirects=False, timeout=10)
        assert r.status_code == 303, r.status_code
    # the running collector takes the new token at once and refuses the old one
    assert requests.get(f"{web.url}{API}/devices", headers=auth(old),
                        timeout=10).status_code == 401
    assert requests.get(f"{web.url}{API}/devices", headers=auth(new),
                        timeout=10).status_code == 200
    assert requests.get(f"{web.url}/metrics", headers=auth(old), timeout=10).status_code == 401
    web.admin = new
    assert login(web).get(f"{web.url}/", allow_redirects=False, timeout=10).status_code == 200


def test_session_lifetime_is_configurable_and_enforced_by_the_server(tmp_path, collector_db):
    c = LocalCollector(tmp_path / "c", db=collector_db, session_max_age_s=1800).start()
    try:
        s = requests.Session()
        csrf = csrf_of(s.get(f"{c.url}/login", timeout=10).text)
        r = s.post(f"{c.url}/login", data={"token": c.admin_token, "csrf": csrf},
                   allow_redirects=False, timeout=10)
        assert r.status_code == 303 and "max-age=1800" in r.headers["set-cookie"].lower()
        with c.store.engine.connect() as db:
            id_hash, created, expires = db.exec_driver_sql(
                "SELECT id_hash, created, expires FROM sessions").one()
        assert expires - created == 1800
        assert c.store.session_who(id_hash, now=created + 1799) == "admin"
        assert c.store.session_who(id_hash, now=created + 1801) is None
    finally:
        c.close()


def test_metrics_labels_stay_bounded_under_random_methods_and_paths(tmp_path):
    """10,000 requests with random methods (the standard ones, WebDAV's, made-up tokens)
    and random paths: the collector's request series use only route templates, the
    standard methods and known statuses (else "other"), and stay under the documented
    maximum (docs/collector.md). The requests go to the app in process (Starlette's
    TestClient): every method reaches it, even those an HTTP parser would refuse."""
    import random

    from starlette.testclient import TestClient

    from edgectl.collector import metrics as M
    from edgectl.collector.app import create_app, route_templates

    templates = route_templates()
    bound = M.max_request_series(templates)
    assert bound == 15390  # the number docs/collector.md states
    rng = random.Random(31)
    c = LocalCollector(tmp_path / "c")
    try:
        tok = c.add_device("pi-1")
        methods = [*M.METHODS, "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
                   "SEARCH", "PURGE", "REPORT", "LINK", "BREW", "QUERY"]
        paths = ["/", "/api/v1/health", "/api/v1/devices/pi-1/heartbeat", "/models",
                 "/api/v1/devices/pi-2/decisions", "/static/app.css", "/metrics"]
        with TestClient(create_app(c.store, c.settings)) as client:
            for i in range(10_000):
                method = rng.choice(methods) if i % 3 else "".join(
                    rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randrange(1, 12)))
                path = rng.choice(paths) if i % 2 else "/" + "/".join(
                    f"{rng.getrandbits(40):x}" for _ in range(rng.randrange(1, 4)))
                client.request(method, path, headers=auth(tok) if i % 5 == 0 else {},
                               follow_redirects=False)
            text = client.get("/metrics", headers=auth(c.admin_token)).text
    finally:
        c.close()
    series = [fam_sample for f in text_string_to_metric_families(text)
              if f.name.startswith("edgectl_collector_") for fam_sample in f.samples]
    assert len(series) <= bound
    labels = {k: {s.labels[k] for s in series if k in s.labels}
              for k in ("method", "route", "status")}
    assert labels["method"] <= {*M.METHODS, "other"} and "other" in labels["method"]
    assert labels["route"] <= templates | {"other"} and "other" in labels["route"]
    assert labels["status"] <= {*map(str, M.STATUSES), "other"}
