"""What a board sends, broken one leaf at a time: a real ``edge-agent run`` syncs to a real
collector (SQLite and PostgreSQL), then the heartbeat and a decision record it sent are
replayed with one value swapped for what a broken board or an attacker sends: a string,
NaN, ±Infinity, a number past float range, a list, an object, null, a huge integer, a
nesting bomb. Raw JSON text, so NaN and 1e400 reach the server as a board's json.dumps
would write them.

Why beside schemathesis (test_collector_fuzz.py): schemathesis generates from the OpenAPI
document, and valid JSON cannot carry NaN; a string in ``counts.total`` needs the key the
board uses. These bodies start from the board's own records, so every leaf is one a board
really sends. The property: no 5xx, a 4xx names the field, and every page, status route
and ``/metrics`` still answers 200 afterwards (issue 31)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from devicekit import make_bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stationkit import run_station

from edgectl.collector.server import LocalCollector

API = "/api/v1"
EXAMPLES = int(os.environ.get("EDGECTL_FUZZ_EXAMPLES", "25")) * 4
# (JSON text, what it is): spliced in as raw text where the board had a value
BAD = [('"many"', "string"), ("NaN", "NaN"), ("Infinity", "Infinity"),
       ("-Infinity", "-Infinity"), ("1e400", "past float range"), ("[1, 2]", "list"),
       ('{"p95": "slow"}', "object"), ("null", "null"), ("true", "bool"),
       (str(10**40), "huge integer"), ("[" * 5000 + "]" * 5000, "nesting bomb"),
       ('"' + "x" * 100_000 + '"', "long string")]
MARK = "__edgectl_fuzz_leaf__"


def _leaves(obj: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(obj, list) and obj:
        return [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


def _splice(body: Any, path: tuple, raw: str) -> str:
    """``body`` as JSON text with the value at ``path`` replaced by the raw text ``raw``."""
    doc = json.loads(json.dumps(body))
    node = doc
    for k in path[:-1]:
        node = node[k]
    if path:
        node[path[-1]] = MARK
    else:
        doc = MARK
    return json.dumps(doc).replace(json.dumps(MARK), raw, 1)


@pytest.fixture
def sent(tmp_path: Path, collector_db: str):
    """A collector that a real board synced to, the heartbeat and a decision record that
    board sent (read back as stored), and the admin's and the board's headers."""
    c = LocalCollector(tmp_path / "collector", db=collector_db).start()
    try:
        token = c.add_device("pi-1", "line1")
        run = run_station(c.url, token, tmp_path / "pi-1", make_bundle(tmp_path / "bundle"),
                          "pi-1", items=30)
        assert run.returncode == 0, run.stderr[-2000:]
        heartbeat = c.store.device("pi-1")["heartbeat"]
        [record] = c.store.decisions("pi-1", limit=1)
        assert heartbeat and heartbeat.get("counts"), heartbeat
        yield (c, heartbeat, record, {"Authorization": f"Bearer {c.admin_token}"},
               {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    finally:
        c.close()


def _pages_ok(c, admin: dict) -> list[str]:
    bad = []
    for path in (f"{API}/fleet/status", f"{API}/devices", f"{API}/devices/pi-1/decisions",
                 "/metrics"):
        try:
            r = requests.get(c.url + path, headers=admin, timeout=30)
        except requests.RequestException as err:
            return [*bad, f"{path}: {type(err).__name__}"]
        if r.status_code != 200:
            bad.append(f"{path}: {r.status_code}")
    s = requests.Session()
    try:
        csrf = re.search(r'name="csrf" value="([^"]+)"',
                         s.get(f"{c.url}/login", timeout=30).text).group(1)
        s.post(f"{c.url}/login", data={"token": c.admin_token, "csrf": csrf}, timeout=30)
    except (requests.RequestException, AttributeError) as err:
        return [*bad, f"/login: {type(err).__name__}"]
    for path in ("/", "/models", "/review?show=all", "/devices/pi-1"):
        try:
            r = s.get(c.url + path, allow_redirects=False, timeout=30)
        except requests.RequestException as err:
            return [*bad, f"{path}: {type(err).__name__}"]
        if r.status_code != 200:
            bad.append(f"{path}: {r.status_code}")
    return bad


def test_a_boards_own_records_broken_leaf_by_leaf_never_break_the_collector(sent):
    c, heartbeat, record, admin, dev = sent
    record = {k: v for k, v in record.items() if k not in ("device", "received")}
    targets = ([("heartbeat", p) for p in _leaves(heartbeat)]
               + [("decision", p) for p in _leaves(record)])
    seen: dict[str, int] = {}
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(targets), st.sampled_from(BAD), st.integers(0, 10**9))
    def case(target, bad, n):
        kind, path = target
        raw, what = bad
        if kind == "heartbeat":
            text, url = _splice(heartbeat, path, raw), f"{API}/devices/pi-1/heartbeat"
        else:
            rec = {**record, "id": f"fuzz-{n}"}
            text = _splice({"records": [rec]}, ("records", 0, *path), raw)
            url = f"{API}/devices/pi-1/decisions"
        try:
            r = requests.post(c.url + url, data=text.encode(), headers=dev, timeout=30)
        except requests.RequestException as err:    # the server dropped the connection
            failures.append(f"{kind} {'.'.join(map(str, path))} = {what}: "
                            f"{type(err).__name__}")
            return
        seen[f"{kind} {r.status_code}"] = seen.get(f"{kind} {r.status_code}", 0) + 1
        where = f"{kind} {'.'.join(map(str, path))} = {what}"
        if r.status_code >= 500:
            failures.append(f"{where}: {r.status_code}")
        elif r.status_code in (400, 422) and "field" not in r.text:
            failures.append(f"{where}: {r.status_code} names no field: {r.text[:200]}")
        failures.extend(f"{where}, then {b}" for b in _pages_ok(c, admin))

    case()
    print(f"\n{c.store.backend}: {sum(seen.values())} board-shaped cases over "
          f"{len(targets)} leaves: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= min(EXAMPLES, 50)
    distinct = sorted(set(failures))
    assert not distinct, f"{len(distinct)} distinct failures:\n" + "\n".join(distinct[:40])
