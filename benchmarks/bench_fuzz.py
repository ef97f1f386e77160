"""The long fuzz run of issue 36: every target of ``tests/fuzzkit.py`` for a time budget.

    python benchmarks/bench_fuzz.py --minutes 16 --targets config,manifest
    python benchmarks/bench_fuzz.py --minutes 16 --targets tar,update --out-name fuzz-b

Runs Hypothesis in rounds of ``--round`` examples (a new random seed each round) until
the target's minutes are spent, and counts examples, refusals, acceptances and findings
(an example that was neither refused in one line nor accepted within the schema, or
any traceback). A finding is printed with its minimal example and the run goes on. Writes
``benchmarks/results/<out-name>.{json,md}`` with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzzkit  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge_common.cpuinfo import cpu_model  # noqa: E402


def runner(name: str, scratch: Path):
    """(strategies, body, outcome counts, closer) for one target."""
    counts: Counter[str] = Counter()
    if name == "config":
        def body(text):
            counts[fuzzkit.check_config(text, scratch)] += 1
        return (fuzzkit.config_texts(),), body, counts, lambda: None
    if name == "manifest":
        t = fuzzkit.ManifestTarget(scratch / "manifest")

        def body(edits, roll):
            counts[t.check(edits, with_cli=roll == 0)] += 1
        return (fuzzkit.manifest_edits(), st.integers(0, 9)), body, counts, lambda: None
    if name == "tar":
        t2 = fuzzkit.TarTarget(scratch / "tar")

        def body(layout, keep, nest, roll):
            if roll == 0:
                layout, keep = [], True
            counts[t2.check(layout, keep, nest)] += 1
        return ((fuzzkit.tar_layouts(), st.booleans(), st.booleans(), st.integers(0, 3)), body,
                counts, lambda: None)
    if name == "update":
        t3 = fuzzkit.UpdateTarget(scratch / "update")
        raw = st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=64),
                        st.sampled_from([b"[]", b'{"version": 7}', b"{}", b"null"]))

        def body(roll, claim, bod, allow, sha_ok, header_ok, raw_desired):
            if roll == 0:
                claim, bod, sha_ok, header_ok, raw_desired = "newer", "match", True, True, None
            counts[t3.check(claim, bod, allow, sha_ok, header_ok, raw_desired)] += 1
        return ((st.integers(0, 3), fuzzkit.CLAIMS, fuzzkit.BODIES, st.booleans(),
                 st.booleans(), st.booleans(), raw), body, counts, t3.close)
    raise SystemExit(f"unknown target {name!r} (config, manifest, tar, update)")


def fuzz(name: str, minutes: float, per_round: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        strategies, body, counts, close = runner(name, Path(tmp))
        findings: list[str] = []
        rounds = 0
        start = time.monotonic()
        try:
            while time.monotonic() - start < minutes * 60:
                rounds += 1
                wrapped = settings(max_examples=per_round, deadline=None, database=None,
                                   suppress_health_check=list(HealthCheck))(
                    given(*strategies)(body))
                try:
                    wrapped()
                except Exception as err:  # noqa: BLE001 - a finding: record, go on
                    text = "".join(traceback.format_exception_only(type(err), err)).strip()
                    findings.append(text[:2000])
                    print(f"[{name}] FINDING: {text[:500]}", flush=True)
                done = sum(counts.values())
                print(f"[{name}] round {rounds}: {done} examples, {dict(counts)}, "
                      f"{len(findings)} findings, {time.monotonic() - start:.0f} s", flush=True)
        finally:
            close()
        return {"target": name, "seconds": round(time.monotonic() - start, 1),
                "rounds": rounds, "examples": sum(counts.values()), "outcomes": dict(counts),
                "findings": findings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="per target")
    ap.add_argument("--targets", default="config,manifest,tar,update")
    ap.add_argument("--round", type=int, default=300, help="examples per Hypothesis round")
    ap.add_argument("--out-name", default="fuzz")
    args = ap.parse_args()
    rows = [fuzz(t, args.minutes, args.round) for t in args.targets.split(",")]
    result = {"cpu": cpu_model(), "python": platform.python_version(),
              "minutes_per_target": args.minutes, "targets": rows}
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.out_name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Fuzz run ({args.out_name})", "",
             f"`python benchmarks/bench_fuzz.py --minutes {args.minutes:g} --targets "
             f"{args.targets}` on {result['cpu']}, Python {result['python']}.", "",
             "| target | minutes | examples | refused (one line) | accepted (within schema) "
             "| no-op/skipped | findings |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r["outcomes"]
        other = sum(v for k, v in o.items() if k not in ("refused", "accepted"))
        lines.append(f"| {r['target']} | {r['seconds'] / 60:.1f} | {r['examples']} | "
                     f"{o.get('refused', 0)} | {o.get('accepted', 0)} | {other} | "
                     f"{len(r['findings'])} |")
    for r in rows:
        for f in r["findings"]:
            lines += ["", f"Finding in {r['target']}:", "", "```", f, "```"]
    (out / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
