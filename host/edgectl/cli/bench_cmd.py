"""`edgectl bench`: the agent's own benchmark on a board (through Ansible) or locally."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.cli.options import echo_json, json_option
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
@click.option("--compare", is_flag=True,
              help="List the stored runs side by side (of --device if given); runs nothing.")
@click.option("--extra-vars", "-e", "extra_vars", multiple=True, metavar="VARS",
              help="Extra Ansible variables for the bench playbook; repeatable.")
@json_option
def bench(device: str | None, bundle: Path | None, inventory: Path | None, threads: str,
          runs: int | None, results_dir: Path, compare: bool, extra_vars: tuple[str, ...],
          as_json: bool) -> None:
    """Benchmark a bundle with the agent's own benchmark, store and print the results.

    \b
      edgectl bench --device local --bundle runs/demo/bundle
      edgectl bench --device pi4 --inventory my-inventory.yml --bundle runs/demo/bundle
      edgectl bench --compare
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
    if bundle is None:
        raise click.UsageError("give --bundle PATH (a bundle folder or .tar)")
    thread_list = fa.parse_threads(threads)
    from edge_common.cpuinfo import cores, cpu_model, isa_flags

    click.echo(f"bench on {device}; host CPU {cpu_model()} ({', '.join(isa_flags()[:3]) or '-'}),"
               f" {cores()} cores", err=True)
    if device == "local":
        reports = {"local": fa.bench_local(bundle, thread_list, runs)}
        via = "local"
    else:
        inv = inventory or fa.default_inventory()
        echo = None if as_json else (lambda line: click.echo(line, err=True))
        reports = fa.bench_ansible(device, inv, bundle, thread_list, runs,
                                   raw_extra_vars=extra_vars, echo=echo)
        via = "ansible"
    out = []
    for host, report in reports.items():
        path = fa.store_run(report, host=host, target=device, via=via, results_dir=results_dir)
        out.append(dict(report, host=host, target=device, via=via, file=str(path)))
    if as_json:
        echo_json(out)
        return
    for rec in out:
        click.echo(fa.format_report(rec, rec["host"]))
        click.echo(f"  stored: {rec['file']}")
