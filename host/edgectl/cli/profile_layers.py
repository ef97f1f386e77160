"""`edgectl bench --profile-layers`: measure (or refresh) the per-block latency table of a
device for the latency-budget build, then check it: the estimates of a few pruned shapes
against their end-to-end measurements there (the table's error, docs/deadline.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import click


def checks(units: int) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """What the check compares, one keep per search unit: uniform keeps and one mixed
    (early units kept, late cut), the shapes a search passes through."""
    return (("dense", (1.0,) * units), ("uniform keep 0.75", (0.75,) * units),
            ("uniform keep 0.5", (0.5,) * units),
            ("mixed", (1.0,) * 4 + (0.75,) * 4 + (0.5,) * (units - 8)))


def profile_layers(device: str, inventory: Path | None, runtime: str, precision: str,
                   threads: list[int], img_size: int, from_model: Path | None, depth: int,
                   echo: Any) -> dict[str, Any]:
    from edgectl.cli.options import default_cache_dir
    from edgectl.fleet.ansible import profile_runner
    from edgectl.pipeline import netadapt, search_units
    from edgectl.pipeline.deadline import DeadlineConfig, TableOracle

    dense = _dense(from_model)
    widths = netadapt.stage_widths(dense)
    out: dict[str, Any] = {"device": device, "runtime": runtime, "img_size": img_size,
                           "tables": []}
    for t in threads:
        dl = DeadlineConfig(budget_ms=1.0, target=device, threads=t, runtime=runtime,
                            precision=precision)
        dl.validate()
        plan = dl.search_plan()
        oracle = TableOracle(dl, img_size, profile_runner(device, inventory, echo),
                             default_cache_dir(), echo).bind(dense)
        table = oracle.table
        # the entries a search's first steps ask for, and the checks', in one trip
        dense_keep = (1.0,) * netadapt.UNITS
        keeps = [k for _, k in checks(netadapt.UNITS)] + netadapt.candidates(
            dense_keep, widths, plan, depth)
        measured = oracle.prefetch(keeps)
        oracle.calibrate()
        rows: list[dict[str, Any]] = []
        for name, keep in checks(netadapt.UNITS):
            est = oracle.estimate(keep)
            model = (dense if name == "dense" else
                     search_units.stage_prune(copy.deepcopy(dense), list(keep), img_size,
                                         plan.round_to, dense))
            ms = oracle.measure(model)
            rows.append({"shape": name, "keep": list(keep), "estimated_ms": est,
                         "measured_ms": ms, "error": (est - ms) / ms})
            echo(f"  {t} thread(s), {name}: estimated {est:.3f} ms, measured {ms:.3f} ms")
        out["tables"].append({
            "threads": t, "path": str(table.path), "entries": len(table.doc["entries"]),
            "measured_now": measured, "overhead_ms": table.doc["overhead_ms"],
            "facts": table.facts(), "checks": rows,
            "mean_abs_error": sum(abs(r["error"]) for r in rows[1:]) / (len(rows) - 1)})
    return out


def format_profile(doc: dict[str, Any]) -> str:
    lines = []
    for t in doc["tables"]:
        f = t["facts"]
        lines += [f"latency table: {doc['device']} ({f.get('device')}, {f.get('cpu')}), "
                  f"{f.get('runtime')} {f.get('runtime_version')} {f.get('precision')}, "
                  f"{t['threads']} thread(s), {doc['img_size']}×{doc['img_size']}",
                  f"  {t['entries']} block entries ({t['measured_now']} measured now), "
                  f"overhead {t['overhead_ms']:+.3f} ms; {t['path']}",
                  f"  {'shape':<20} {'estimated':>10} {'measured':>10} {'error':>8}"]
        lines += [f"  {r['shape']:<20} {r['estimated_ms']:>10.3f} {r['measured_ms']:>10.3f} "
                  f"{100 * r['error']:>+7.1f}%" for r in t["checks"]]
        lines.append(f"  mean |error| of the pruned shapes: {100 * t['mean_abs_error']:.1f} % "
                     "(dense calibrates the overhead: its row is how two measurements of "
                     "one model agree)")
    return "\n".join(lines)


def _dense(from_model: Path | None) -> Any:
    if from_model is not None:
        from edgectl.pipeline.checkpoint import load_checkpoint

        return load_checkpoint(from_model)[0].eval()
    from edgectl.pipeline.model import build_model

    return build_model(6).eval()   # the stock width-1.0 model of the built-in data set


def profile_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--profile-layers", is_flag=True,
                     help="Measure the device's per-block latency table for "
                          "`build --target-latency-ms` and print its estimation error "
                          "(no --bundle)."),
        click.option("--runtime", type=click.Choice(["onnx", "tflite"]), default="onnx",
                     show_default=True, help="--profile-layers: the runtime to table."),
        click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32",
                     show_default=True, help="--profile-layers: the precision to table."),
        click.option("--img-size", type=click.IntRange(min=16), default=64, show_default=True,
                     help="--profile-layers: the model's input size."),
        click.option("--from", "from_model", type=click.Path(exists=True, path_type=Path),
                     default=None,
                     help="--profile-layers: the architecture of this checkpoint (default: "
                          "the stock MobileNetV2 of `edgectl build`)."),
    ]):
        fn = opt(fn)
    return fn
