"""The playbooks and roles pass ansible-lint's production profile and a syntax check."""

from __future__ import annotations

import subprocess

import pytest

from edgectl.fleet.ansible import ansible_tool


def test_ansible_lint_production_profile_passes(ansible_dir):
    lint = ansible_tool("ansible-lint")
    proc = subprocess.run(
        [str(lint), "--profile", "production", "--offline", "--nocolor"],
        cwd=ansible_dir, capture_output=True, text=True, timeout=300, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Profile 'production' was required, and it passed" in out


@pytest.mark.parametrize("playbook", ["deploy.yml", "bench.yml"])
@pytest.mark.parametrize("inventory", ["inventory.example.yml", "inventory.local.yml"])
def test_playbooks_pass_syntax_check(ansible_dir, playbook, inventory):
    proc = subprocess.run(
        [str(ansible_tool()), "--syntax-check", "-i", str(ansible_dir / inventory),
         str(ansible_dir / playbook)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"playbook: {ansible_dir / playbook}" in proc.stdout


def test_argument_specs_reject_a_bad_variable(run_local, wheel, tmp_path):
    """meta/argument_specs.yml makes a bad variable fail before any task changes the board."""
    result = run_local("deploy.yml", tmp_path,
                       {"edge_agent_wheel": str(wheel), "edge_agent_runtime_type": "tensorrt"})
    assert not result.ok
    assert "edge_agent_runtime_type" in result.output
    assert not (tmp_path / "opt").exists()


def test_deploy_without_a_wheel_fails_with_a_clear_message(run_local, tmp_path):
    result = run_local("deploy.yml", tmp_path, {"edge_agent_wheel": str(tmp_path / "nope.whl")})
    assert not result.ok
    assert "no edge-agent wheel to install" in result.output
