"""The fleet pages in a real browser: Playwright drives Debian's chromium against a
collector started here, fed by simulated stations (the real ``edge-agent run`` syncing
over HTTP). Log in, read the fleet rows, open a device and its charts, label 5 samples
on the review page, export them and read the folder back as training data; the models
page lists the uploaded bundle. No console error (a CSP violation is one) on any page.

Screenshots of each page go to ``$EDGECTL_SCREENSHOTS`` when set (docs/img is made with
``EDGECTL_SCREENSHOTS=docs/img pytest tests/web``), else to the test's temp folder.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from devicekit import make_bundle
from stationkit import run_station
from syskit import program

from edge_common.bundle_tar import pack_tar
from edgectl.collector.server import LocalCollector

API = "/api/v1"
HISTORY_H = 6


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def replay_history(url: str, device: str, token: str, hours: float) -> int:
    """What a board that was offline for a shift sends when it comes back: its journal's
    backlog. The records are the station's own (same fields, same model), re-issued with
    new ids over the last ``hours``, posted through the device API in the agent's batches."""
    mine = requests.get(f"{url}{API}/devices/{device}/decisions?limit=10000",
                        headers=auth(ADMIN[0]), timeout=30).json()
    assert mine, "the station sent nothing"
    now = time.time()
    n = int(hours * 60)  # one a minute
    recs = []
    for i in range(n):
        r = dict(mine[i % len(mine)])
        r["id"] = str(uuid.uuid4())
        r["ts"] = now - hours * 3600 + i * 60.0
        r["seq"] = 10_000_000 + i
        if (i // 40) % 4 == 3:  # a slower stretch every ~2 h (another job on the board)
            r["latency_ms"] = {**r["latency_ms"], "total": r["latency_ms"]["total"] * 2.5}
        recs.append(r)
    for k in range(0, n, 100):
        res = requests.post(f"{url}{API}/devices/{device}/decisions",
                            json={"device_id": device, "records": recs[k:k + 100]},
                            headers=auth(token), timeout=30)
        assert res.status_code == 200, res.text
    return n


ADMIN: list[str] = []


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    program("chromium", "EDGECTL_CHROMIUM")    # before minutes of set-up, not after
    tmp = tmp_path_factory.mktemp("fleet")
    c = LocalCollector(tmp / "collector").start()
    ADMIN[:] = [c.admin_token]
    bundle = make_bundle(tmp / "bundle", version="tiny-1")
    tar = pack_tar(bundle, tmp / "tiny-1.tar")
    up = requests.post(f"{c.url}{API}/bundles", data=tar.read_bytes(), timeout=30,
                       headers={**auth(c.admin_token), "Content-Type": "application/x-tar"})
    assert up.status_code in (200, 201), up.text
    c.store.set_desired("group", "line1", "tiny-1")
    for name in ("line1-a", "line1-b"):
        token = c.add_device(name, "line1")
        run = run_station(c.url, token, tmp / name, bundle, name, items=120)
        assert run.returncode == 0, run.stderr[-2000:]
        if name == "line1-a":
            replay_history(c.url, name, token, HISTORY_H)
    c.add_device("line2-a", "line2")  # registered, never came online
    yield c, tmp
    c.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=program("chromium", "EDGECTL_CHROMIUM"),
                               args=["--no-sandbox"])
        yield b
        b.close()


def shots_dir(tmp: Path) -> Path:
    out = Path(os.environ.get("EDGECTL_SCREENSHOTS") or tmp / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_log_in_see_the_fleet_open_a_device_label_and_export(fleet, browser, tmp_path):
    c, tmp = fleet
    shots = shots_dir(tmp)
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(c.url + "/devices/line1-a")
    assert "/login?next=%2Fdevices%2Fline1-a" in page.url  # no session: the login form
    page.fill("#token", c.add_device("intruder"))
    page.click("button[type=submit]")
    assert "device token" in page.inner_text(".error")
    page.fill("#token", c.admin_token)
    page.screenshot(path=str(shots / "login.png"))
    page.click("button[type=submit]")
    page.wait_for_url(c.url + "/devices/line1-a")  # back where we were going
    errors.clear()  # the refused login answered 403, as it should; from here on, none

    page.goto(c.url + "/")
    rows = page.locator("#fleet tbody tr")
    assert rows.count() == 4
    a = page.locator('tr[data-device="line1-a"]')
    assert a.locator(".pill.online").count() == 1
    assert "tiny-1" in a.inner_text()
    assert page.locator('tr[data-device="line2-a"] .pill.offline').count() == 1
    page.screenshot(path=str(shots / "fleet.png"), full_page=True)

    page.click("text=line1-a")
    page.wait_for_selector("body[data-charts=drawn]")
    assert int(page.get_attribute("#chart-latency", "data-points")) >= HISTORY_H * 10
    assert int(page.get_attribute("#chart-rejects", "data-points")) >= HISTORY_H * 10
    assert page.locator("#chart-latency canvas").count() == 1
    assert page.locator("#decisions tbody tr").count() == 30
    page.set_viewport_size({"width": 1360, "height": 1150})
    page.screenshot(path=str(shots / "device.png"))  # charts and samples
    page.set_viewport_size({"width": 1360, "height": 860})

    page.goto(c.url + "/review")
    queue = page.locator("#queue figure")
    assert queue.count() >= 5
    chosen = []
    for _ in range(5):
        fig = page.locator("#queue figure").first
        sample = fig.get_attribute("data-sample")
        label = "ok" if len(chosen) % 2 else "scratch"
        with page.expect_navigation():
            fig.locator(f'button[value="{label}"]').click()
        chosen.append((sample, label))
        assert page.locator(f'#queue figure[data-sample="{sample}"]').count() == 0
    assert "5 labelled so far" in page.inner_text("main")
    page.screenshot(path=str(shots / "review.png"))

    with page.expect_download() as dl:
        page.click("text=Export labels")
    archive = tmp_path / "labels.zip"
    dl.value.save_as(archive)
    out = tmp_path / "labels"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out)
    with open(out / "labels.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert sorted((f"{r['device']}/{r['sample_id']}", r["label"]) for r in table) == \
        sorted(chosen)
    for r in table:  # each file sits in its class folder
        assert (out / r["file"]).is_file() and Path(r["file"]).parent.name == r["label"]
    from edgectl.pipeline.data import DataConfig, load_datasets

    ds = load_datasets(DataConfig.from_spec(f"folder:{out}", img_size=32))
    assert sorted(ds.labels) == ["ok", "scratch"]
    assert len(ds.train) + len(ds.test) == 5

    page.goto(c.url + "/models")
    row = page.locator('tr[data-version="tiny-1"]')
    assert "line1-a" in row.inner_text() and "group line1" in row.inner_text()
    page.screenshot(path=str(shots / "models.png"))
    assert errors == [], errors

    page.click("text=Log out")
    page.goto(c.url + "/")
    assert "/login" in page.url
    if os.environ.get("EDGECTL_SCREENSHOTS"):
        shutil.rmtree(tmp / "shots", ignore_errors=True)
