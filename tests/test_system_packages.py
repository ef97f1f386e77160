"""`make test` sets a fresh machine up: the Debian packages the suite runs come from one
list in the Makefile (tests/system-packages.sh installs them as root, or names them and
stops for any other user, before anything else runs), and a program that is still
missing fails its test in one line naming the package (tests/syskit.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import syskit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "system-packages.sh"
NOBODY = 65534


def make_var(name: str) -> list[str]:
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "--eval",
                          f"print-var: ; @echo $({name})", "print-var"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def as_user(cmd: list[str]) -> list[str]:
    """``cmd`` as a user without root (nobody when the tests run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--reset-env", *cmd]


def test_every_program_the_tests_run_comes_from_the_makefiles_list():
    debs = make_var("TEST_DEBS")
    assert {pkg for pkg, _ in syskit.PROGRAMS.values()} <= set(debs), debs
    assert set(make_var("VENV_DEBS")) <= set(debs)
    # CI installs through the same targets, with no list of its own
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in ci
    assert re.search(r"^(step )?make test( |$)", ci, re.M), ci


def test_installed_packages_pass_silently():
    out = subprocess.run(as_user(["sh", str(SCRIPT), "dpkg", "coreutils"]),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


@pytest.fixture
def tree():
    """The Makefile and what it reads, in a folder any user may enter (pytest's own
    temporary folders are private to the user running the tests)."""
    d = Path(tempfile.mkdtemp(prefix="edgectl-make-"))
    try:
        os.chmod(d, 0o755)
        (d / "tests").mkdir(mode=0o755)
        (d / "host").mkdir(mode=0o755)
        (d / "locks").mkdir(mode=0o755)
        for name in ("Makefile", "pyproject.toml", "host/pyproject.toml", "locks/host.txt",
                     "tests/system-packages.sh"):
            shutil.copy(ROOT / name, d / name)
        yield d
    finally:
        shutil.rmtree(d)


def test_make_test_without_root_names_what_is_missing_and_stops_before_the_venv(tree):
    cmd = ["make", "-C", str(tree), "test", "TEST_DEBS=dpkg edgectl-no-such-package"]
    out = subprocess.run(as_user(cmd), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("make")]
    assert lines == ["error: missing Debian packages: edgectl-no-such-package; install them "
                     "with: sudo apt-get update && sudo apt-get install -y "
                     "edgectl-no-such-package"], out.stderr
    assert not (tree / ".venv").exists()         # nothing ran: no venv, no pip, no pytest
    assert "venv" not in out.stdout and "pytest" not in out.stdout


def test_the_package_step_runs_before_the_venv_and_the_tests():
    steps = subprocess.run(["make", "-n", "-C", str(ROOT), "test", "VENV=/nonexistent/venv"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    steps = [s for s in steps if not s.startswith("make")]
    assert steps[0] == "sh tests/system-packages.sh " + " ".join(make_var("TEST_DEBS"))
    assert "-m venv" in steps[1] and "pytest" in steps[-1]


def test_a_missing_program_fails_in_one_line_naming_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECTL_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception) as err:
        syskit.program("chromium", "EDGECTL_CHROMIUM")
    assert err.value.pytrace is False          # no traceback in the report
    msg = str(err.value)
    assert "\n" not in msg and "Debian's chromium package" in msg
    assert "make system-packages" in msg and "apt-get install -y chromium" in msg


def test_each_program_is_found_where_its_package_puts_it(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")   # a user's PATH: no sbin
    for name in syskit.PROGRAMS:
        path = syskit.find(name)
        assert path and os.access(path, os.X_OK), syskit.missing_line(name)
