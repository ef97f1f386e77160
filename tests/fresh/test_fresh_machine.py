"""A fresh Debian machine, a fresh clone, the README's `make test` as root, no other command
(issue 30).

tests/fresh/freshhost.sh boots a bookworm minbase root with systemd-nspawn: systemd and
make, empty apt lists, no python3 and none of the Makefile's packages but systemd. A clone of this
repository's HEAD is copied in and there `make test` runs as root — its package step (one
apt-get), the venv install, then pytest on the tests that run each system package for real
(``PYTEST_ARGS``): the MQTT broker, PostgreSQL (the collector on a real cluster), chromium
(the fleet pages) and systemd-analyze. The wheel folders this machine keeps on disk are
bound read-only and its pip configuration copied in, so the machine's torch build is found
as it is here; everything else comes from the Debian mirror and PyPI through NAT.

Cold (nothing cached but the debootstrap'd root): the times go to
runs/fresh/timings.json (never asserted). Run with `make test-fresh` (root; marker
`board`, so `make test` leaves it out).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRESHHOST = Path(__file__).with_name("freshhost.sh")
# The tests that need a system package, by package; `-k "not sqlite"` keeps the collector
# tests on PostgreSQL only (their SQLite twins need nothing from apt).
TESTS = [
    "tests/test_system_packages.py::test_each_program_is_found_where_its_package_puts_it",
    "tests/device/test_plc_mqtt.py",                    # mosquitto
    "tests/host/test_collector_store.py",               # postgresql
    "tests/web",                                        # chromium
    "tests/device/test_systemd.py",                     # systemd (systemd-analyze)
]
PYTEST_ARGS = " ".join(TESTS) + " -k 'not sqlite' -rA"   # -rA: a PASSED line per test

pytestmark = pytest.mark.board


def make_var(name: str) -> list[str]:
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "--eval",
                          f"print-var: ; @echo $({name})", "print-var"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def installed(work: Path, packages: list[str]) -> list[str]:
    out = subprocess.run([str(FRESHHOST), "exec", str(work), "dpkg-query", "-W",
                          "-f=${Package} ${db:Status-Abbrev}\n", *packages],
                         capture_output=True, text=True, timeout=60)
    return [ln.split()[0] for ln in out.stdout.splitlines() if ln.split()[1:2] == ["ii"]]


def test_make_test_sets_a_fresh_debian_machine_up_with_no_other_command(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the fresh-machine test needs root (network namespace, systemd-nspawn)",
                    pytrace=False)
    debs = make_var("TEST_DEBS")
    work = tmp_path_factory.mktemp("fresh")
    src = work / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(src)], check=True)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        subprocess.run([str(FRESHHOST), "up", str(work), str(src)], check=True, timeout=1800)
        timings["boot_s"] = time.monotonic() - t0

        def sh(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(FRESHHOST), "exec", str(work), "bash", "-c", command],
                                  capture_output=True, text=True, timeout=timeout)

        # what a user has: no python3, none of the packages but systemd (its init), apt
        # never updated
        before = sh("command -v python3 || echo no-python3; ls /var/lib/apt/lists", 60)
        assert before.stdout.split() == ["no-python3", "partial"], before.stdout
        assert installed(work, debs) == ["systemd"]
        missing = [d for d in debs if d != "systemd"]

        t0 = time.monotonic()
        run = sh(f"cd /root/edgectl && make test PYTEST_ARGS=\"{PYTEST_ARGS}\" 2>&1", 3600)
        timings["make_test_s"] = time.monotonic() - t0
        out = run.stdout
        (work / "make-test.log").write_text(out)
        assert run.returncode == 0, out[-6000:]
        summary = out.strip().splitlines()[-1]
        assert " passed" in summary, out[-3000:]
        assert not {"failed", "error", "errors", "skipped"} & set(summary.replace(",", " ").split())
        assert "apt-get install -y " + " ".join(missing) in out  # one install, all missing
        assert sorted(installed(work, debs)) == sorted(debs)   # dpkg-query's own order
        # each package's tests ran and passed
        for path in ("tests/device/test_plc_mqtt.py", "tests/host/test_collector_store.py",
                     "tests/web/test_fleet_browser.py", "tests/device/test_systemd.py"):
            assert f"PASSED {path}::" in out, path
    finally:
        subprocess.run([str(FRESHHOST), "down", str(work)], check=False, timeout=300)
        if timings:
            path = ROOT / "runs" / "fresh" / "timings.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({k: round(v, 1) for k, v in timings.items()},
                                       indent=2) + "\n")
