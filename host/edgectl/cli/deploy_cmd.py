"""`edgectl deploy`: roll out the agent (and a model bundle) with ansible/deploy.yml."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.fleet import ansible as fa


@click.command()
@click.option("--inventory", "-i", type=click.Path(path_type=Path), default=None,
              help="Ansible inventory (default: $EDGECTL_INVENTORY or ansible/inventory.yml).")
@click.option("--limit", "-l", default=None, metavar="GROUP",
              help="Only these hosts or groups (an Ansible pattern, e.g. pi4).")
@click.option("--bundle", "-b", type=click.Path(exists=True, path_type=Path), default=None,
              help="Model bundle (folder or .tar) to install and activate.")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Install this edge-agent wheel instead of building one (a temporary folder).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Public key (PEM) the boards verify bundles with [default: the inventory's "
                   "edge_agent_public_key_file].")
@click.option("--tags", type=click.Choice(["agent", "model"]), default=None,
              help="Only the agent, or only the model bundle (agent already installed).")
@click.option("--check", is_flag=True, help="Dry run: report what would change.")
@click.option("--serial", default=fa.DEFAULT_SERIAL, show_default=True,
              help="Boards updated at once (number or percentage).")
@click.option("--max-fail-percentage", type=click.IntRange(0, 100),
              default=fa.DEFAULT_MAX_FAIL_PERCENTAGE, show_default=True,
              help="Stop the rollout when more of a batch than this fails.")
@click.option("--extra-vars", "-e", "extra_vars", multiple=True, metavar="VARS",
              help="Extra Ansible variables (key=value, JSON or @file); repeatable.")
def deploy(inventory: Path | None, limit: str | None, bundle: Path | None, wheel: Path | None,
           key: Path | None, tags: str | None, check: bool, serial: str,
           max_fail_percentage: int, extra_vars: tuple[str, ...]) -> None:
    """Roll out the edge agent and a model bundle to the boards with Ansible.

    Builds the board's wheel (edge-agent) in a temporary folder, then runs
    ansible/deploy.yml a batch of boards at a time, streaming its output. Nothing is
    written to the project or the working directory. See docs/fleet.md.
    """
    inv = inventory or fa.default_inventory()
    if wheel is None and tags != "model":
        click.echo("building the edge-agent wheel ...", err=True)
    result = fa.deploy(inv, bundle=bundle, wheel=wheel, key=key, limit=limit, check=check,
                       serial=serial, max_fail_percentage=max_fail_percentage,
                       raw_extra_vars=extra_vars, tags=tags, echo=click.echo)
    hosts = len(result.recap)
    click.secho(f"deploy {'checked' if check else 'done'}: {hosts} host(s), "
                f"{result.changed} change(s)", fg="green", err=True)
