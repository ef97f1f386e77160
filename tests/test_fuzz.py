"""Property-based fuzzing of every parser of outside input (issue 36), on a budget that
fits ``make test``; ``benchmarks/bench_fuzz.py`` runs the same targets for an hour.

Each example is refused with one line or accepted and then behaves within the schema with
the reject output safe (``tests/fuzzkit.py`` says exactly what is checked)."""

from __future__ import annotations

import os

import pytest
from fuzzkit import (
    BODIES,
    CLAIMS,
    ManifestTarget,
    TarTarget,
    UpdateTarget,
    check_config,
    config_texts,
    manifest_edits,
    tar_layouts,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# EDGECTL_FUZZ_SCALE scales the budget (CI: the default; a local soak: more).
SCALE = float(os.environ.get("EDGECTL_FUZZ_SCALE", "1"))


def budget(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_fuzz_config(scratch):
    seen = {"refused": 0, "accepted": 0}

    @budget(600)
    @given(config_texts())
    def run(text):
        seen[check_config(text, scratch)] += 1

    run()
    assert seen["refused"] and seen["accepted"]  # both sides of the schema were reached


def test_fuzz_manifest(scratch):
    target = ManifestTarget(scratch / "manifest")
    seen = {"refused": 0, "accepted": 0, "skipped": 0}

    @budget(450)
    @given(manifest_edits(), st.integers(0, 9))
    def run(edits, cli_roll):
        seen[target.check(edits, with_cli=cli_roll == 0)] += 1

    run()
    assert seen["refused"] and seen["accepted"]


def test_fuzz_tar(scratch):
    target = TarTarget(scratch / "tar")
    seen = {"refused": 0, "accepted": 0, "skipped": 0}

    @budget(600)
    @given(tar_layouts(), st.booleans(), st.booleans(), st.integers(0, 3))
    def run(layout, keep_good, nest, roll):
        if roll == 0:  # a good tar a quarter of the time, so the accept path runs
            layout, keep_good = [], True
        seen[target.check(layout, keep_good, nest)] += 1

    run()
    assert seen["refused"] and seen["accepted"]


def test_fuzz_update(scratch):
    target = UpdateTarget(scratch / "update")
    seen = {"refused": 0, "accepted": 0, "no-op": 0}
    raw = st.one_of(st.none(), st.none(), st.none(),
                    st.sampled_from([b"nope", b"[]", b'{"version": 7}', b"{}", b"null",
                                     b'{"version": "v", "sha256": 1}']))
    try:
        @budget(240)
        @given(st.integers(0, 3), CLAIMS, BODIES, st.booleans(), st.booleans(), st.booleans(),
               raw)
        def run(roll, claim, body, allow, sha_ok, header_ok, raw_desired):
            if roll == 0:  # an honest host a quarter of the time, so the accept path runs
                claim, body, sha_ok, header_ok, raw_desired = "newer", "match", True, True, None
            seen[target.check(claim, body, allow, sha_ok, header_ok, raw_desired)] += 1

        run()
    finally:
        target.close()
    assert seen["refused"] and seen["accepted"]
