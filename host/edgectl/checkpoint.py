"""Checkpoints: the whole model (pruned models have new shapes) plus its metadata.

A checkpoint is one ``.pt`` file: ``{"format": "edgectl-checkpoint", "version": 1,
"model": nn.Module, "meta": {...}}``, written atomically. Saving the whole module (not
only a state_dict) is what Torch-Pruning recommends for structurally pruned networks.
``meta`` holds labels, reject labels, input spec, data spec, metrics, config, history
and code version; a sidecar ``meta.json`` next to it is for people and tools.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_common.errors import ModelError
from edge_common.fileio import atomic_path, write_json_atomic

FORMAT = "edgectl-checkpoint"
VERSION = 1
FILENAME = "model.pt"


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    from importlib.metadata import version

    v = version("edgectl")
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def resolve(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory containing ``model.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    return p


def save_checkpoint(model: nn.Module, meta: dict[str, Any], path: str | Path) -> Path:
    """Write ``model`` and ``meta`` atomically; ``path`` is a file or a directory."""
    p = Path(path)
    if p.suffix != ".pt":
        p = p / FILENAME
    meta = dict(meta)
    meta.setdefault("code_version", code_version())
    payload = {"format": FORMAT, "version": VERSION, "model": model.cpu().eval(), "meta": meta}
    with atomic_path(p) as tmp:
        torch.save(payload, tmp)
    write_json_atomic(p.with_suffix(".json"), meta)
    return p


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``(model, meta)``; any file that is not an edgectl checkpoint is a ModelError."""
    p = resolve(path)
    if not p.is_file():
        raise ModelError(f"checkpoint not found: {p}")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign files
        raise ModelError(f"{p} is not an edgectl checkpoint ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{p} is not an edgectl checkpoint")
    if payload.get("version") != VERSION:
        raise ModelError(f"{p}: unsupported checkpoint version {payload.get('version')}")
    model = payload["model"]
    if not isinstance(model, nn.Module):
        raise ModelError(f"{p}: checkpoint holds no model")
    return model.eval(), payload["meta"]


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read only the metadata sidecar (no torch unpickling)."""
    p = resolve(path).with_suffix(".json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read checkpoint metadata {p}: {err}") from err
