"""The journal contract: durable record, unsent/mark_sent, samples, counts, prune."""

from __future__ import annotations

import sqlite3
import uuid

import numpy as np
import pytest

from edge_agent.journal import Journal


def _decision(i: int, kind: str = "ok", missed: bool = False) -> dict:
    return {
        "item": i,
        "label": "ok" if kind == "ok" else "scratch",
        "score": 0.9,
        "probs": {"ok": 0.9, "scratch": 0.1},
        "decision": kind,
        "truth": None,
        "model_version": "v1",
        "latency_ms": {
            "capture": 1.0,
            "preprocess": 0.5,
            "inference": 2.0,
            "decision": 0.01,
            "total": 3.6,
        },
        "deadline_missed": missed,
    }


def test_record_returns_uuid_and_is_visible_to_a_second_connection(tmp_path):
    j = Journal(tmp_path / "j")
    rid = j.record(_decision(1, "reject"))
    assert uuid.UUID(rid).version == 4
    # Committed before record() returned: an independent reader sees it.
    db = sqlite3.connect(str(j.path))
    assert db.execute("SELECT id FROM decisions").fetchall() == [(rid,)]
    rec = j.get(rid)
    assert rec["decision"] == "reject" and rec["seq"] == 1 and rec["sample"] is None
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unsent_mark_sent_and_counts(tmp_path):
    j = Journal(tmp_path / "journal.sqlite")
    ids = [
        j.record(_decision(i, kind, missed=(i == 2)))
        for i, kind in enumerate(["ok", "reject", "review", "ok"])
    ]
    batch = j.unsent(3)
    assert [r["id"] for r in batch] == ids[:3]
    assert [r["seq"] for r in batch] == [1, 2, 3]
    assert j.mark_sent(ids[:2] + ["nope"]) == 2
    assert j.mark_sent(ids[:2]) == 0  # idempotent
    assert [r["id"] for r in j.unsent(10)] == ids[2:]
    c = j.counts()
    assert c["total"] == 4 and c["ok"] == 2 and c["reject"] == 1 and c["review"] == 1
    assert c["unsent"] == 2 and c["deadline_misses"] == 1


def test_samples_written_before_commit_and_marked(tmp_path):
    j = Journal(tmp_path / "j", sample_format="png")
    img = np.zeros((8, 8, 3), np.uint8)
    img[2:4] = 200
    rid = j.record(_decision(1, "reject"), image=img)
    samples = j.unsent_samples(10)
    assert len(samples) == 1 and samples[0]["decision_id"] == rid
    from PIL import Image

    back = np.asarray(Image.open(samples[0]["path"]))
    assert np.array_equal(back, img)  # PNG is lossless
    assert samples[0]["bytes"] == len(open(samples[0]["path"], "rb").read())
    assert j.get(rid)["sample"].endswith(".png")
    j.mark_samples_sent([samples[0]["id"]])
    assert j.unsent_samples(10) == []


def test_prune_drops_oldest_sent_rows_first_then_unsent_and_counts_the_loss(tmp_path):
    j = Journal(tmp_path / "j")
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ids = [j.record(_decision(i, "reject"), image=img) for i in range(20)]
    j.mark_sent(ids[:10])
    j.mark_samples_sent([s["id"] for s in j.unsent_samples(100)][:10])
    out = j.prune(max_rows=15)
    assert out["rows"] == 5 and out["dropped_decisions"] == 0
    assert j.ids() == ids[5:]
    # Lifetime counters survive pruning.
    assert j.counts()["total"] == 20 and j.counts()["rows"] == 15
    # Under an outage the row cap still holds: the oldest unsent rows go, counted.
    out = j.prune(max_rows=8)
    assert j.ids() == ids[12:] and j.counts()["rows"] == 8
    assert out["dropped_decisions"] == 2 and j.counts()["dropped_decisions"] == 2
    # A byte budget drops sample images before unsent decisions.
    row_bytes = j.disk_bytes() - sum(s["bytes"] for s in j.unsent_samples(100))
    j.prune(max_bytes=row_bytes + 1)
    assert j.ids() == ids[12:] and j.unsent_samples(100) == []
    assert j.counts()["dropped_samples"] == 10  # every unsent image dropped is counted
    assert list((tmp_path / "j" / "samples").rglob("*.jpg")) == []
    # A tiny budget leaves nothing, and says so.
    j.prune(max_bytes=1)
    assert j.counts()["rows"] == 0 and j.counts()["dropped_decisions"] == 10


def test_bad_decision_is_rejected_and_nothing_written(tmp_path):
    j = Journal(tmp_path / "j")
    with pytest.raises(ValueError):
        j.record({"decision": "maybe"})
    assert j.counts()["total"] == 0 and j.ids() == []


def test_agent_data_files_are_not_world_readable_whatever_the_umask(tmp_path, tiny_bundle):
    """Journal (+ WAL), samples and status are 0640 even when the agent runs with umask 022."""
    import os
    import stat
    import subprocess

    from devicekit import agent_cmd, write_config

    cfg = write_config(tmp_path / "agent.yaml", tiny_bundle, samples={"rate": 1.0})
    res = subprocess.run([*agent_cmd(), "run", "--config", str(cfg), "--max-items", "5"],
                         capture_output=True, text=True, timeout=180,
                         preexec_fn=lambda: os.umask(0o022))
    assert res.returncode == 0, res.stderr
    jdir = tmp_path / "journal"
    files = [p for p in jdir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "journal.sqlite" in names and "status.json" in names, names
    assert any(p.suffix in (".jpg", ".png") for p in files), names
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o007 == 0, f"{p} is world-accessible"
