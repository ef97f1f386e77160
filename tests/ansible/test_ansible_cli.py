"""`edgectl bench` and `edgectl deploy` through Ansible against the local test host."""

from __future__ import annotations

import json
from pathlib import Path

from edgectl.cli import main
from edgectl.fleet.ansible import build_wheel


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
    import shutil

    from edgectl.fleet.ansible import WHEEL_IGNORE, WHEEL_SOURCES, project_root

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
