"""Placeholder for commands whose issue has not landed yet: says so plainly, exits 2."""

from __future__ import annotations

import click


def unfinished(name: str, issue: int, summary: str) -> click.Command:
    @click.command(
        name=name,
        help=f"{summary}\n\nNOT IMPLEMENTED YET (issue {issue}).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def _cmd() -> None:
        click.secho(f"edgectl {name}: not implemented yet (issue {issue}).", fg="yellow", err=True)
        raise SystemExit(2)

    return _cmd
