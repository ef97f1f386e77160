"""Every `edgectl` / `edge-agent` command in README.md and docs/ exists with the options shown.

Command lines are taken from fenced code blocks (lines starting with the program name,
optionally after `$ ` or `make`-free shell prompts). Each is resolved against the real
click group (edgectl) or argparse parser (edge-agent); unknown subcommands or options fail.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|shell|console|)\n(.*?)```", re.S)


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text()):
            joined = block.replace("\\\n", " ")
            for raw in joined.splitlines():
                line = raw.strip().removeprefix("$ ").split(" #")[0].strip()
                if not line.isascii():  # diagrams, not commands
                    continue
                for prog in ("edgectl", "edge-agent"):
                    if line.startswith(prog + " ") or line == prog:
                        found.append((f"{doc.relative_to(ROOT)}: {line}", line))
    return found


def _options(tokens: list[str]) -> list[str]:
    return [t.split("=")[0] for t in tokens if t.startswith("-") and t not in ("-", "--")]


def _check_edgectl(tokens: list[str]) -> None:
    from edgectl.cli import main

    cmd: click.Command = main
    ctx = click.Context(main)
    rest = tokens[1:]
    path = ["edgectl"]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    while rest and isinstance(cmd, click.Group):
        # skip group-level options
        if rest[0].startswith("-"):
            assert rest[0].split("=")[0] in known, f"{' '.join(path)}: unknown option {rest[0]}"
            opt = next((p for p in cmd.params if rest[0] in (*p.opts, *p.secondary_opts)), None)
            takes_value = isinstance(opt, click.Option) and not opt.is_flag and opt.nargs > 0
            rest = rest[2:] if takes_value and "=" not in rest[0] else rest[1:]
            continue
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"{' '.join(path)}: no subcommand {rest[0]!r}"
        path.append(rest[0])
        cmd, rest = sub, rest[1:]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    help_text = cmd.help or ""
    assert "NOT IMPLEMENTED" not in help_text, f"{' '.join(path)} is documented but unfinished"
    for opt in _options(rest):
        assert opt in known, f"{' '.join(path)}: unknown option {opt} (known: {sorted(known)})"


def _check_edge_agent(tokens: list[str]) -> None:
    from edge_agent.cli import build_parser

    parser = build_parser()
    rest = tokens[1:]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    known = set(parser._option_string_actions)
    while rest and rest[0].startswith("-"):
        assert rest[0].split("=")[0] in known, f"edge-agent: unknown option {rest[0]}"
        rest = rest[1:]
    if rest and subparsers:
        choices = subparsers[0].choices
        assert rest[0] in choices, f"edge-agent: no subcommand {rest[0]!r}"
        known = set(choices[rest[0]]._option_string_actions)
        rest = rest[1:]
    for opt in _options(rest):
        assert opt in known, f"edge-agent: unknown option {opt} (known: {sorted(known)})"


LINES = _command_lines()


def test_docs_show_commands():
    # The README must show the product's commands; an empty scan would make this file vacuous.
    assert (
        any(line.startswith("edgectl build") for _, line in LINES) or not (ROOT / "docs").exists()
    )


@pytest.mark.parametrize("where,line", LINES, ids=[w for w, _ in LINES] or None)
def test_documented_command_exists(where: str, line: str) -> None:
    tokens = shlex.split(line)
    if tokens[0] == "edgectl":
        _check_edgectl(tokens)
    else:
        _check_edge_agent(tokens)
