"""`edgectl bench` and `edgectl deploy` through Ansible against the local test host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from edgectl.cli import main
from edgectl.fleet.ansible import WHEEL_IGNORE, WHEEL_SOURCES, build_wheel, project_root


def test_bench_on_the_pi4_group_returns_the_agent_results_through_ansible(
    deployed, local_env, bundle_dir, cli_runner, tmp_path, ansible_dir
):
    from edge_common.bundle import pack_tar

    tar = pack_tar(bundle_dir, tmp_path / "tiny.tar")  # the archive upload path
    results = tmp_path / "bench"
    res = cli_runner.invoke(main, [
        "bench", "--device", "pi4", "--inventory", str(ansible_dir / "inventory.local.yml"),
        "--bundle", str(tar), "--runs", "5", "--json", "--results-dir", str(results),
    ])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)
    assert [r["host"] for r in runs] == ["pi4-local"]
    run = runs[0]
    assert run["via"] == "ansible" and run["target"] == "pi4"
    assert run["bundle"] == {"name": "tiny-colour", "version": "test-1"}
    [row] = run["results"]
    assert row["artifact"] == "model.fp32.onnx" and row["threads"] == 1
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
    assert row["agreement"] == 1.0  # with the outputs recorded in the bundle
    stored = Path(run["file"])
    assert stored.parent == results and stored.name.startswith("pi4-local_test-1_")
    assert json.loads(stored.read_text())["results"] == run["results"]
    # Nothing is left on the board.
    assert not list(Path("/tmp").glob("edge-bench-*/tiny.tar"))


def test_bench_on_an_unknown_device_is_one_clear_error(deployed, local_env, bundle_dir,
                                                        cli_runner, ansible_dir, tmp_path):
    res = cli_runner.invoke(main, [
        "bench", "--device", "nosuch", "--inventory", str(ansible_dir / "inventory.local.yml"),
        "--bundle", str(bundle_dir), "--json", "--results-dir", str(tmp_path),
    ])
    assert res.exit_code == 1
    assert "no host or group named 'nosuch'" in res.output
    assert not list(tmp_path.iterdir())


def test_edgectl_deploy_with_a_missing_inventory_is_one_clear_error(cli_runner, wheel,
                                                                     tmp_path):
    res = cli_runner.invoke(main, ["deploy", "--inventory", str(tmp_path / "nope.yml"),
                                   "--wheel", str(wheel)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == f"error: inventory not found: {tmp_path}/nope.yml"


def test_wheel_builds_are_byte_identical(tmp_path):
    """Same sources, same bytes: an unchanged tree never reinstalls the agent on a board."""
    snapshot = tmp_path / "src"  # fixed sources, whatever else edits the checkout meanwhile
    snapshot.mkdir()
    for name in WHEEL_SOURCES:
        p = project_root() / name
        if p.is_dir():
            shutil.copytree(p, snapshot / name, ignore=WHEEL_IGNORE)
        elif p.is_file():
            shutil.copy(p, snapshot / name)
    first = build_wheel(tmp_path / "a", source=snapshot)
    (snapshot / "README.md").touch()  # a newer mtime alone changes nothing
    second = build_wheel(tmp_path / "b", source=snapshot)
    assert first.name == second.name and first.name.startswith("edge_agent-")
    assert first.read_bytes() == second.read_bytes()
    assert not (snapshot / "build").exists()  # built from a copy of the copy


def test_the_boards_wheel_holds_the_agent_and_nothing_of_the_host(wheel):
    """The board installs edge-agent: common + device and the `edge-agent` command; no host
    code, no `edgectl` command, no click or torch among its requirements."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(info).decode()
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert {n.split("/")[0] for n in names} == {
        "edge_common", "edge_agent", "edge_agent-0.1.0.dist-info"}
    assert "edge_agent/systemd/edge-agent.service" in names
    assert "Name: edge-agent\n" in metadata and "License-Expression: Apache-2.0" in metadata
    requires = [ln.split(" ", 1)[1] for ln in metadata.splitlines()
                if ln.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if r.split(">")[0].split(";")[0].strip()
                             in ("click", "torch", "torchvision", "edgectl")]
    assert "edge-agent = edge_agent.cli:main" in entry_points and "edgectl" not in entry_points


def test_deploy_refuses_a_key_that_is_not_a_public_key(cli_runner, wheel, tmp_path, ansible_dir):
    """`--key` ships a public key to every board: a private key (or any other file) is one
    clear line, before Ansible runs."""
    from edge_common.bundle import generate_keypair

    private, _ = generate_keypair()
    key = tmp_path / "edge-signing.key"
    key.write_bytes(private)
    res = cli_runner.invoke(main, ["deploy", "--inventory",
                                   str(ansible_dir / "inventory.local.yml"),
                                   "--wheel", str(wheel), "--key", str(key)])
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(f"error: --key {key}: not a usable PEM public key"), res.output
    assert "PLAY" not in res.output


def test_deploy_from_a_wheel_install_and_a_project_folder(deployed, local_prefix, tmp_path):
    """edgectl installed from its wheel (`pip install ./host`, not editable: its modules in
    a site folder far from any checkout) finds the playbooks and builds the board's wheel
    from the checkout it was installed from, runs from the user's project folder, and
    writes nothing there or in the checkout (the wheel goes to a temporary folder)."""
    checkout = tmp_path / "checkout"  # a clean copy: pip builds in the source folder
    checkout.mkdir()
    for name in (*WHEEL_SOURCES, "host", "ansible"):
        src = project_root() / name
        if src.is_dir():
            shutil.copytree(src, checkout / name, ignore=WHEEL_IGNORE)
        elif src.is_file():
            shutil.copy(src, checkout / name)
    site = tmp_path / "site"
    env = dict(os.environ, PYTHONWARNINGS="ignore:Editable installation")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(checkout),
                    str(checkout / "host")], check=True, env=env, capture_output=True)
    for leftover in ("build", "edge_agent.egg-info", "host/build", "host/edgectl.egg-info"):
        shutil.rmtree(checkout / leftover, ignore_errors=True)
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    project = tmp_path / "line1"  # the user's folder: their inventory, nothing else
    project.mkdir()
    inventory = project / "inventory.yml"
    shutil.copy(checkout / "ansible" / "inventory.local.yml", inventory)
    probe = ("import json, edgectl.fleet.ansible as fa; print(json.dumps("
             "[fa.__file__, str(fa.installed_from()), str(fa.ansible_dir())]))")
    run_env = dict(os.environ, PYTHONPATH=str(site), EDGECTL_LOCAL_PREFIX=str(local_prefix))
    run_env.pop("EDGECTL_PROJECT_DIR", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=project, env=run_env,
                         capture_output=True, text=True, check=True)
    module, source, playbooks = json.loads(out.stdout)
    assert module.startswith(str(site)), module
    assert (source, playbooks) == (str(checkout / "host"), str(checkout / "ansible"))
    cli = "from edgectl.cli import main; main(prog_name='edgectl')"
    res = subprocess.run([sys.executable, "-c", cli, "deploy", "--inventory",
                          str(inventory), "--limit", "pi4", "--check"], cwd=project,
                         env=run_env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "building the edge-agent wheel" in res.stderr
    # --check reports the pip step as changed (docs/fleet.md); nothing failed.
    assert "deploy checked: 1 host(s)" in res.stderr, res.stdout[-3000:]
    assert "failed=0" in res.stdout.split("PLAY RECAP")[-1]
    assert [p.name for p in project.iterdir()] == ["inventory.yml"]
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before
