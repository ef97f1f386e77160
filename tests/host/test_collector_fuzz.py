"""Schemathesis against a running collector (uvicorn on 127.0.0.1), on SQLite and on
PostgreSQL: every operation of the API's OpenAPI document with a device token, the admin
token and none; every page route with a session and without. No answer is a 5xx, every
answer matches the documented schema, every 4xx says what is wrong, and every page and
status route still answers 200 afterwards (tests/host/apifuzzkit.py; issue 31).

``EDGECTL_FUZZ_EXAMPLES`` (default 25) is the number of generated cases per operation,
caller and mode (positive, negative): raise it for a longer run.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import requests
from apifuzzkit import Caller, Report, fuzz
from PIL import Image

from edgectl.collector.app import create_app
from edgectl.collector.server import LocalCollector
from edgectl.collector.web import create_web_app

API = "/api/v1"


def _bundle(version: str) -> bytes:
    manifest = json.dumps({"schema_version": 1, "name": "tiny", "version": version,
                           "labels": ["ok", "scratch"],
                           "metrics": {"accuracy": 0.9}}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("manifest.json", manifest), ("model.onnx", b"weights")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def live(tmp_path: Path, collector_db: str):
    """A collector with a device that has reported, a bundle it should run, a kept sample,
    and a logged-in page session."""
    c = LocalCollector(tmp_path / "collector", db=collector_db).start()
    tok = c.add_device("pi-1", "line1")
    admin = {"Authorization": f"Bearer {c.admin_token}"}
    dev = {"Authorization": f"Bearer {tok}"}
    base = f"{c.url}{API}/devices/pi-1"
    assert requests.post(f"{base}/heartbeat", json={"fps": 1.0, "counts": {"total": 1}},
                         headers=dev, timeout=10).status_code == 200
    assert requests.post(f"{base}/decisions", headers=dev, timeout=10, json={"records": [
        {"id": "d1", "ts": 1.7e9, "decision": "reject", "score": 0.5}]}).status_code == 200
    assert requests.put(f"{base}/samples/d1", data=_jpeg(), timeout=10,
                        headers={**dev, "Content-Type": "image/jpeg"}).status_code == 200
    assert requests.post(f"{c.url}{API}/bundles", data=_bundle("v1"), timeout=10,
                         headers={**admin, "Content-Type": "application/x-tar"}).ok
    assert requests.put(f"{c.url}{API}/desired/device/pi-1", json={"version": "v1"},
                        headers=admin, timeout=10).ok
    s = requests.Session()
    csrf = re.search(r'name="csrf" value="([^"]+)"', s.get(f"{c.url}/login").text).group(1)
    assert s.post(f"{c.url}/login", data={"token": c.admin_token, "csrf": csrf},
                  allow_redirects=False, timeout=10).status_code == 303
    yield c, tok, {"edgectl_session": s.cookies["edgectl_session"]}
    c.close()


def _reads(admin: Caller, session: Caller) -> list[tuple[str, Caller]]:
    paths = [f"{API}/fleet/status", f"{API}/devices", f"{API}/bundles", f"{API}/desired",
             f"{API}/devices/pi-1/decisions", f"{API}/devices/pi-1/updates", "/metrics"]
    pages = ["/", "/models", "/review?show=all", "/devices/pi-1"]
    return [(p, admin) for p in paths] + [(p, session) for p in pages]


def test_schemathesis_finds_no_failure_in_the_api_or_the_pages(live, collector_db):
    c, tok, cookies = live
    admin = Caller("admin", {"Authorization": f"Bearer {c.admin_token}"})
    device = Caller("device", {"Authorization": f"Bearer {tok}"}, device="pi-1")
    nobody = Caller("none")
    session = Caller("session", cookies=cookies)
    reads = _reads(admin, session)
    api = Report()
    fuzz(c.url, create_app(c.store, c.settings).openapi(), [device, admin, nobody], reads, api)
    pages = Report()
    fuzz(c.url, create_web_app(c.store, c.settings).openapi(), [session, nobody], reads,
         pages)
    backend = c.store.backend
    print(f"\nschemathesis on {backend}: API {api.cases} cases "
          f"{dict(sorted(api.by_status.items()))}, pages {pages.cases} cases "
          f"{dict(sorted(pages.by_status.items()))}; by caller "
          f"{dict(sorted((api.by_caller + pages.by_caller).items()))}")
    assert api.cases > 0 and pages.cases > 0
    assert api.failures + pages.failures == [], "\n".join(api.failures + pages.failures)
    # the session survived every page case (random CSRF tokens never matched)
    r = requests.get(c.url + "/", cookies=cookies, allow_redirects=False, timeout=10)
    assert r.status_code == 200
