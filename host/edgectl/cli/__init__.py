"""The ``edgectl`` command group: tiny, lazy, one module per command (pip-tools style).

Commands are imported only when invoked, so ``edgectl --help`` is fast and a command's
heavy imports (torch, onnxruntime, ansible) cost nothing to the others.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from edge_common.errors import EdgeError

# name -> (module, attribute, one-line help shown by `edgectl --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("edgectl.cli.data_cmd", "data",
        "Inspect or export datasets (built-in synthetic set, CIFAR-10, folders)."),
    "train": ("edgectl.cli.train_cmd", "train", "Train the MobileNetV2 baseline."),
    "eval": ("edgectl.cli.eval_cmd", "eval_",
        "Evaluate a checkpoint: accuracy, size, sparsity, MACs, latency."),
    "prune": ("edgectl.cli.prune_cmd", "prune",
        "Prune a checkpoint (unstructured/structured, one-shot/iterative/gradual)."),
    "quantize": ("edgectl.cli.quantize_cmd", "quantize",
        "INT8 post-training static quantization (ONNX QDQ, TFLite)."),
    "export": ("edgectl.cli.export_cmd", "export",
        "Export a checkpoint to ONNX / TFLite with parity checks."),
    "build": ("edgectl.cli.build_cmd", "build",
        "Whole pipeline: train, prune, fine-tune, quantize, export, bundle."),
    "bundle": ("edgectl.cli.bundle_cmd", "bundle", "Show or verify a model bundle."),
    "keys": ("edgectl.cli.keys_cmd", "keys", "Generate the Ed25519 key pair that signs bundles."),
    "study": ("edgectl.cli.study_cmd", "study",
        "Regenerate the pruning study: table, plots, report."),
    "bench": ("edgectl.cli.bench_cmd", "bench",
        "Benchmark a bundle on a board (through Ansible) or locally."),
    "serve": ("edgectl.cli.serve_cmd", "serve", "Run the host collector that boards sync to."),
    "deploy": ("edgectl.cli.deploy_cmd", "deploy", "Roll out the agent and a bundle with Ansible."),
    "fleet": ("edgectl.cli.fleet_cmd", "fleet",
        "Fleet overview and management (devices, desired models)."),
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help so listing commands never imports torch.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeError as err:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.secho(f"error: {err}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and full tracebacks.")
@click.version_option(package_name="edgectl")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """edgectl: take a vision model from a laptop to a fleet of edge boards.

    \b
    Quick start:
      edgectl build --prune unstructured --sparsity 0.5 --out runs/demo
      edgectl bench --device local --bundle runs/demo/bundle
      ansible-playbook -i ansible/inventory.example.yml ansible/deploy.yml
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
