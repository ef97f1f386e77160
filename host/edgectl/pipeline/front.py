"""The accuracy / latency / size front of a latency-budget build (``edgectl build
--target-latency-ms``): every model the search kept, the final one and its artifacts, as
rows that say where each number comes from; the non-dominated ones marked; a table, JSON
and a plot with the budget line.

A row's ``latency_source`` is ``measured`` (end to end on the target), ``measured-host``
(on the build machine, a remote target's artifacts) or ``estimated`` (the latency table);
``accuracy_on`` is ``selection`` (images held out of training: what the search compared)
or ``test`` (the test set: the final model and its artifacts). Never mix the two when
reading accuracy across rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edge_common.runtime import RUNTIME_NAMES as RUNTIMES


def front_rows(build: dict[str, Any], local_target: bool) -> list[dict[str, Any]]:
    """Rows from a build summary (``build.json``) whose ``pruning.method`` is ``deadline``."""
    rep = build.get("pruning") or {}
    if rep.get("method") != "deadline":
        raise ValueError("not a latency-budget build (build.json pruning.method != deadline)")
    rt = (rep.get("oracle") or {}).get("runtime", "?")
    prec = (rep.get("oracle") or {}).get("precision", "fp32")
    dense_keep = [1.0] * len(rep.get("keep") or [])   # as many units as the search had
    rows: list[dict[str, Any]] = [{
        "model": "baseline", "runtime": rt, "precision": prec,
        "latency_ms": rep.get("start_ms"), "latency_source": "measured",
        "est_ms": rep.get("start_est_ms"), "accuracy": (build.get("baseline") or {})
        .get("accuracy"), "accuracy_on": "test",
        "params": (build.get("baseline") or {}).get("params"), "keep": dense_keep}]
    for c in rep.get("target_choice") or []:
        if c.get("dense_ms") is not None and not c.get("chosen"):
            # the runtime choice: the dense model where the search did not run
            rows.append({"model": f"dense ×{c['threads']}", "runtime": RUNTIMES[c["runtime"]],
                         "precision": c["precision"], "latency_ms": c["dense_ms"],
                         "latency_source": "measured", "est_ms": None, "accuracy": None,
                         "accuracy_on": "test", "params": None, "keep": dense_keep})
    for s in rep.get("steps", []):
        rows.append({"model": f"step {s['step'] + 1}", "runtime": rt, "precision": prec,
                     "latency_ms": s["measured_ms"], "latency_source": "measured",
                     "est_ms": s["est_ms"], "accuracy": s["accuracy"],
                     "accuracy_on": "selection", "params": s.get("params"), "keep": s["keep"]})
    model = build.get("model") or {}
    rows.append({"model": "final", "runtime": rt, "precision": prec,
                 "latency_ms": rep.get("final_ms"), "latency_source": "measured",
                 "est_ms": rep.get("final_est_ms"), "accuracy": model.get("accuracy"),
                 "accuracy_on": "test", "params": model.get("params"), "keep": rep.get("keep")})
    for a in build.get("artifacts", []):
        lat = (a.get("latency") or {}).get("p95", a.get("latency_ms"))
        rows.append({"model": f"final {a['format']} {a['precision']}",
                     "runtime": RUNTIMES[a["format"]],
                     "precision": a["precision"], "latency_ms": lat,
                     "latency_source": "measured" if local_target else "measured-host",
                     "est_ms": None, "accuracy": a.get("accuracy"), "accuracy_on": "test",
                     "bytes": a.get("bytes"), "keep": rep.get("keep")})
    mark_front(rows)
    return rows


def mark_front(rows: list[dict[str, Any]]) -> None:
    """``front`` = no other row with the same accuracy source is at least as accurate and
    at least as fast, and strictly better in one."""
    for r in rows:
        r["front"] = r.get("latency_ms") is not None and r.get("accuracy") is not None and \
            not any(o is not r and o.get("accuracy_on") == r["accuracy_on"]
                    and o.get("latency_ms") is not None and o.get("accuracy") is not None
                    and o["accuracy"] >= r["accuracy"] and o["latency_ms"] <= r["latency_ms"]
                    and (o["accuracy"] > r["accuracy"] or o["latency_ms"] < r["latency_ms"])
                    for o in rows)


def format_front(rows: list[dict[str, Any]], budget_ms: float) -> str:
    head = (f"{'model':<22} {'runtime':<12} {'prec':<5} {'p95 ms':>8} {'source':<14} "
            f"{'est ms':>8} {'accuracy':>9} {'on':<9} {'meets':<5} front")
    out = [head, "-" * len(head)]
    for r in rows:
        lat, est, acc = r.get("latency_ms"), r.get("est_ms"), r.get("accuracy")
        meets = "yes" if lat is not None and lat <= budget_ms else "no"
        out.append(f"{r['model']:<22} {r['runtime']:<12} {r['precision']:<5} "
                   f"{_f(lat, 3):>8} {r['latency_source']:<14} {_f(est, 3):>8} "
                   f"{_pct(acc):>9} {r['accuracy_on']:<9} {meets:<5} "
                   f"{'*' if r.get('front') else ''}")
    out.append(f"budget {budget_ms:g} ms p95; accuracy 'selection' = images held out of "
               "training (what the search compared), 'test' = the test set")
    return "\n".join(out)


def plot_front(rows: list[dict[str, Any]], budget_ms: float, path: Path) -> Path:
    """Accuracy against p95 latency, one marker per accuracy source, the budget dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for on, marker in (("selection", "o"), ("test", "s")):
        pts = [r for r in rows if r["accuracy_on"] == on and r.get("latency_ms") is not None
               and r.get("accuracy") is not None]
        if pts:
            ax.scatter([r["latency_ms"] for r in pts], [100 * r["accuracy"] for r in pts],
                       marker=marker, label=f"accuracy on {on}",
                       c=["C3" if r.get("front") else "C0" for r in pts])
            for r in pts:
                ax.annotate(r["model"], (r["latency_ms"], 100 * r["accuracy"]), fontsize=6)
    ax.axvline(budget_ms, color="black", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("p95 latency on the target (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as fh:
        tmp = Path(fh.name)
    try:
        fig.savefig(tmp, dpi=90)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _f(v: Any, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
