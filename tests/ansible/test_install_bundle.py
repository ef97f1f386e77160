"""The edge_model role's board-side installer (roles/edge_model/files/install_bundle.py), run
as the role runs it (a subprocess, its one result line), on a real models folder: what a
cut run leaves is removed, `current` switches, pruning keeps the versions that served
(most recently activated first, never by mtime), a refusal is one line naming the upload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ansible" / "roles" / "edge_model" / "files" / "install_bundle.py"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, bundle_factory):
    """Four versions of the tiny bundle, as folders: test-1 .. test-4, and test-9."""
    base = tmp_path_factory.mktemp("versions")
    return {v: bundle_factory(base / v, v) for v in ("test-1", "test-2", "test-3", "test-4",
                                                     "test-9")}


def _install(bundle: Path, models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(ROOT / d) for d in ("common", "device"))}
    return subprocess.run([sys.executable, str(SCRIPT), str(bundle), str(models), *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def _result(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    mark, _, body = proc.stdout.strip().partition(" ")
    assert mark == "EDGECTL-INSTALL-RESULT", proc.stdout
    return json.loads(body)


def _installed(models: Path) -> list[str]:
    return sorted(p.name for p in (models / "versions").iterdir())


def test_first_install_switches_current_and_records_it(tmp_path, bundles):
    models = tmp_path / "models"
    res = _result(_install(bundles["test-1"], models))
    assert res["changed"] and res["installed"] and res["switched"]
    assert os.readlink(models / "current") == "versions/test-1"
    assert set(json.loads((models / "served.json").read_text())) == {"test-1"}
    installed = models / "versions" / "test-1"
    assert {oct(p.stat().st_mode & 0o777) for p in installed.iterdir()} == {"0o640"}
    assert oct(installed.stat().st_mode & 0o777) == "0o750"
    again = _result(_install(bundles["test-1"], models))  # the same bundle: nothing to do
    assert not again["changed"] and again["pruned"] == []
    assert _installed(models) == ["test-1"]


def test_leftovers_of_a_cut_run_are_removed(tmp_path, bundles):
    models = tmp_path / "models"
    _result(_install(bundles["test-1"], models))
    versions = models / "versions"
    # What a power cut leaves at each step: a half-extracted upload, a half-copied version,
    # a half-removed old version, a new `current` link not yet renamed over the old one.
    (versions / ".incoming-k1ll3d" / "x").mkdir(parents=True)
    (versions / ".incoming-k1ll3d" / "x" / "model.fp32.onnx").write_bytes(b"")
    (versions / ".tmp-test-2").mkdir()
    (versions / ".prune-test-0").mkdir()
    os.symlink("versions/test-2", models / ".current-4242")
    res = _result(_install(bundles["test-2"], models))
    assert res["switched"]
    assert _installed(models) == ["test-1", "test-2"]
    assert sorted(p.name for p in models.iterdir()) == ["current", "served.json", "versions"]


def test_pruning_keeps_the_versions_that_served_most_recently_activated_first(tmp_path,
                                                                              bundles):
    models = tmp_path / "models"
    for v in ("test-1", "test-2", "test-3"):
        _result(_install(bundles[v], models, "--keep", "9"))
    # test-9: installed, never activated (a cut between install and switch), and newest by
    # mtime and by name; test-1: the oldest version but activated again, last.
    assert _result(_install(bundles["test-9"], models, "--no-activate", "--keep", "9"))[
        "installed"]
    assert os.readlink(models / "current") == "versions/test-3"
    assert _result(_install(bundles["test-1"], models, "--allow-downgrade", "--keep", "9"))[
        "switched"]
    os.utime(models / "versions" / "test-9")
    res = _result(_install(bundles["test-4"], models, "--keep", "3"))
    assert sorted(res["pruned"]) == ["test-2", "test-9"]
    assert _installed(models) == ["test-1", "test-3", "test-4"]
    assert os.readlink(models / "current") == "versions/test-4"
    assert set(json.loads((models / "served.json").read_text())) == {"test-1", "test-3",
                                                                     "test-4"}


def test_a_refusal_is_one_line_naming_the_upload(tmp_path, bundles):
    from edge_common.bundle import generate_keypair, pack_tar, sign_manifest

    _ours, ours_pub = generate_keypair()
    theirs, _ = generate_keypair()
    (tmp_path / "bundle.pub").write_bytes(ours_pub)
    models = tmp_path / "models"
    signed = tmp_path / "signed"
    signed.mkdir()
    import shutil

    shutil.copytree(bundles["test-2"], signed / "test-2")
    sign_manifest(signed / "test-2", theirs)
    tar = pack_tar(signed / "test-2", tmp_path / "upload-test-2.tar")
    proc = _install(tar, models, "--public-key", str(tmp_path / "bundle.pub"))
    assert proc.returncode == 1 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0] == "error: bundle upload-test-2.tar: signature does not match manifest"
    assert ".incoming-" not in proc.stderr and "/tmp" not in errors[0]
    assert _installed(models) == []
    assert not (models / "current").exists()
