"""`edgectl bench`: the agent's own benchmark on a board (through Ansible) or locally."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from edgectl.cli.options import echo_json, json_option
from edgectl.cli.profile_layers import profile_options
from edgectl.fleet import ansible as fa


@click.command()
@click.option("--device", "-d", default=None, metavar="NAME",
              help="Inventory host or group, or 'local' for this machine.")
@click.option("--bundle", "-b", type=click.Path(exists=True, path_type=Path), default=None,
              help="Model bundle (folder or .tar) to benchmark.")
@click.option("--inventory", "-i", type=click.Path(path_type=Path), default=None,
              help="Ansible inventory (default: $EDGECTL_INVENTORY or ansible/inventory.yml).")
@click.option("--threads", default="1", show_default=True, metavar="LIST",
              help="Thread counts to measure, e.g. 1,2,4.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per measurement (default: the agent's).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path),
              default=fa.DEFAULT_BENCH_DIR, show_default=True,
              help="Where runs are stored, one JSON file each.")
@click.option("--reference", default="auto", show_default=True, metavar="auto|none|MODEL",
              help="Dense FP32 model measured beside the bundle for the 'vs dense' column: "
                   "auto = the baseline of the `edgectl build` folder the bundle is in.")
@click.option("--compare", is_flag=True,
              help="List the stored runs side by side (of --device if given); runs nothing.")
@click.option("--extra-vars", "-e", "extra_vars", multiple=True, metavar="VARS",
              help="Extra Ansible variables for the bench playbook; repeatable.")
@profile_options
@json_option
def bench(device: str | None, bundle: Path | None, inventory: Path | None, threads: str,
          runs: int | None, reference: str, results_dir: Path, compare: bool,
          extra_vars: tuple[str, ...], profile_layers: bool, runtime: str, precision: str,
          img_size: int,
          from_model: Path | None, as_json: bool) -> None:
    """Benchmark a bundle with the agent's own benchmark, store and print one table:
    format, size, sparsity, test-set accuracy, agreement, p50/p95 ms, images/s and the
    ratio to the dense FP32 ONNX Runtime model measured in the same run.

    \b
      edgectl bench --device local --bundle runs/demo/bundle
      edgectl bench --device pi4 --inventory my-inventory.yml --bundle runs/demo/bundle
      edgectl bench --device local --bundle b.tar --reference dense.fp32.onnx --json
      edgectl bench --compare
      edgectl bench --device pi4 -i my-inventory.yml --profile-layers --threads 1,4
    """
    if compare:
        stored = fa.load_runs(results_dir, device)
        if as_json:
            echo_json(stored)
        else:
            click.echo(fa.format_compare(stored))
        return
    if not device:
        raise click.UsageError("give --device NAME (an inventory host or group, or local)")
    thread_list = fa.parse_threads(threads)
    if profile_layers:
        if bundle is not None:
            raise click.UsageError("--profile-layers measures blocks, not a bundle: drop "
                                   "--bundle")
        from edgectl.cli.profile_layers import format_profile
        from edgectl.cli.profile_layers import profile_layers as run_profile

        echo = (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))
        doc = run_profile(device, inventory, runtime, precision, thread_list, img_size,
                          from_model,
                          depth=4, echo=echo)
        echo_json(doc) if as_json else click.echo(format_profile(doc))
        return
    if bundle is None:
        raise click.UsageError("give --bundle PATH (a bundle folder or .tar)")
    from edge_common.bundle import load_bundle
    from edgectl.fleet.benchtable import bench_rows, dense_reference, notes

    b = load_bundle(bundle)  # the manifest: accuracy, sizes, sparsity for the table
    try:
        manifest = b.manifest
    finally:
        b.close()
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-ref-") as tmp:
        ref: Path | None = None
        if reference == "auto":
            ref = dense_reference(bundle, Path(tmp))
        elif reference != "none":
            ref = Path(reference)
            if not ref.is_file():
                raise click.UsageError(f"--reference: no such model file: {reference}")
        if device == "local":
            reports = {"local": fa.bench_local(bundle, thread_list, runs, reference=ref)}
            via = "local"
        else:
            inv = inventory or fa.default_inventory()
            say = None if as_json else (lambda line: click.echo(line, err=True))
            reports = fa.bench_ansible(device, inv, bundle, thread_list, runs,
                                       raw_extra_vars=extra_vars, echo=say, reference=ref)
            via = "ansible"
    out = []
    for host, report in reports.items():
        rows = bench_rows(report, manifest)
        report = dict(report, table=rows, notes=notes(rows, manifest))
        path = fa.store_run(report, host=host, target=device, via=via, results_dir=results_dir)
        out.append(dict(report, host=host, target=device, via=via, file=str(path)))
    if as_json:
        echo_json(out)
        return
    for rec in out:
        click.echo(fa.format_report(rec, rec["host"], manifest))
        click.echo(f"  stored: {rec['file']}")
