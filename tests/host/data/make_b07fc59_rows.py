"""Make ``collector_b07fc59_rows.json``: the rows a collector at main's b07fc59 stored when
fed the requests of issue 31 (string counts, NaN scores, "yesterday" timestamps, a
manifest with ``accuracy: "high"``...), beside ordinary ones.

It runs that commit's own code (``git archive b07fc59``) as a live collector on
127.0.0.1, sends the requests over HTTP, and dumps every table. Run from the repository
root: ``python tests/host/data/make_b07fc59_rows.py``. The test that opens a database
holding these rows is ``tests/host/test_collector_old_rows.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMMIT = "b07fc59"
HERE = Path(__file__).parent
OUT = HERE / "collector_b07fc59_rows.json"

FEED = r'''
import io, json, sys, tarfile
from pathlib import Path
import requests, sqlalchemy as sa
from PIL import Image
from edgectl.collector.server import LocalCollector

data = Path(sys.argv[1])
c = LocalCollector(data / "collector").start()
api = c.url + "/api/v1"
admin = {"Authorization": "Bearer " + c.admin_token}
tok = {n: c.add_device(n, g) for n, g in (("good-1", "line1"), ("pi-1", "line1"),
                                           ("pi-2", "line1"), ("pi-3", "line2"),
                                           ("pi-4", "line2"))}

def post(path, who, body, method="POST"):
    r = requests.request(method, api + path, data=body.encode(), timeout=30, headers={
        "Authorization": "Bearer " + tok.get(who, c.admin_token),
        "Content-Type": "application/json"})
    print(r.status_code, path, body[:60], file=sys.stderr)
    return r

def jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()

def sample(dev, sid):
    r = requests.put(f"{api}/devices/{dev}/samples/{sid}", data=jpeg(), timeout=30,
                     headers={"Authorization": "Bearer " + tok[dev], "Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text

def bundle(version, metrics):
    manifest = json.dumps({"schema_version": 1, "name": "tiny", "version": version,
                           "labels": ["ok", "scratch"], "metrics": metrics}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, d in (("manifest.json", manifest), ("model.onnx", b"weights")):
            info = tarfile.TarInfo(name); info.size = len(d); tar.addfile(info, io.BytesIO(d))
    r = requests.post(api + "/bundles", data=buf.getvalue(), timeout=30,
                      headers={**admin, "Content-Type": "application/x-tar"})
    assert r.status_code == 200, r.text

# ordinary traffic
post("/devices/good-1/heartbeat", "good-1", json.dumps({"model_version": "v1", "fps": 2.0,
     "counts": {"total": 3, "reject": 1, "unsent": 0},
     "latency_ms": {"total": {"p50": 4.0, "p95": 9.0, "p99": 12.0}}}))
post("/devices/good-1/decisions", "good-1", json.dumps({"records": [
    {"id": f"g{i}", "seq": i, "ts": 1.7e9 + i, "decision": "reject", "label": "scratch",
     "score": 0.6, "latency_ms": {"total": 8.0}} for i in range(3)]}))
sample("good-1", "g0")
bundle("v1", {"accuracy": 0.9, "sparsity": 0.5})
post("/desired/group/line1", "admin", json.dumps({"version": "v1"}), "PUT")
post("/devices/good-1/updates", "good-1",
     json.dumps({"id": "u-good", "version": "v1", "outcome": "applied", "ts": 1.7e9}))
# issue 31: each was accepted (200) and stored by b07fc59
assert post("/devices/pi-1/heartbeat", "pi-1", '{"counts": {"total": "many"}}').ok
assert post("/devices/pi-2/heartbeat", "pi-2", '{"latency_ms": {"total": {"p95": "slow"}}}').ok
assert post("/devices/pi-3/heartbeat", "pi-3", '{"counts": {"unsent": "lots"}}').ok
assert post("/devices/pi-4/heartbeat", "pi-4",
            '{"fps": NaN, "temperature_c": Infinity, "faults": ["camera"]}').ok
assert post("/devices/pi-1/decisions", "pi-1",
            '{"records": [{"id": "n1", "ts": 1700000000.5, "score": NaN, "decision": "reject",'
            ' "label": "scratch"}]}').ok
sample("pi-1", "n1")
assert post("/devices/pi-1/decisions", "pi-1",
            '{"records": [{"id": "n2", "ts": "yesterday", "decision": "ok"}]}').ok
assert post("/devices/pi-1/decisions", "pi-1",
            '{"records": [{"id": "n3", "ts": 1700000001, "latency_ms": [1, 2],'
            ' "decision": "ok", "score": "high"}]}').ok
assert post("/devices/pi-2/decisions", "pi-2",
            '{"records": [{"id": "n4", "ts": 1700000002, "score": Infinity, "decision": "review",'
            ' "latency_ms": {"total": -Infinity}}]}').ok
sample("pi-2", "n4")
assert post("/devices/pi-1/updates", "pi-1",
            '{"id": "u-nan", "version": "v1", "outcome": "refused", "reason": "bad",'
            ' "ts": NaN}').ok
bundle("v2", {"accuracy": "high", "sparsity": [1]})
c.stop()
eng = sa.create_engine("sqlite:///" + str(data / "collector" / "collector.db"))
out = {}
with eng.connect() as db:
    rev = db.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    for t in ("devices", "decisions", "samples", "bundles", "desired", "updates",
              "review_labels"):
        rows = db.exec_driver_sql(f"SELECT * FROM {t}").mappings().all()
        out[t] = [dict(r) for r in rows]
print(json.dumps({"commit": sys.argv[2], "alembic_revision": rev, "tables": out},
                 indent=1, sort_keys=True))
'''


def main() -> None:
    repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                               capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="b07fc59-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(repo), "archive", COMMIT, "common", "host",
                                  "device"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            str(src / p) for p in ("common", "host", "device"))}
        out = subprocess.run([sys.executable, "-c", FEED, tmp, COMMIT], env=env, check=True,
                             capture_output=True, text=True, cwd=tmp)
        sys.stderr.write(out.stderr)
    OUT.write_text(out.stdout)
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
