"""Checkpoints: weights as tensors, architecture and metadata as plain data; never pickles.

A checkpoint is one ``.pt`` file written with ``torch.save`` and read with
``torch.load(..., weights_only=True)``, so loading one cannot run code::

    {"format": "edgectl-checkpoint", "version": 2,
     "arch": "mobilenet_v2", "num_classes": N, "width_mult": w,
     "plan": {module name: ["Conv2d", in, out, groups] | ["BatchNorm2d", n]
              | ["Linear", in, out] | ["Residual", skip connection on?]},
     "state_dict": {name: tensor}, "meta": "<JSON text>"}

A structurally pruned network has a new architecture, so the state_dict alone no longer
fits the class: ``plan`` is its channel plan (every layer's dimensions). Loading builds
the stock model, swaps in layers of the planned sizes, then loads the state_dict
strictly. ``meta`` (labels, input spec, data spec, metrics, config, history, code
version) is JSON text; a sidecar ``model.json`` next to it is for people and tools.
Version 1 files (a pickled ``nn.Module``) are refused with a message saying to re-create
them: unpickling them is what would let a crafted file run code.
"""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_common.errors import ModelError
from edge_common.fileio import atomic_path, write_json_atomic

FORMAT = "edgectl-checkpoint"
VERSION = 2
FILENAME = "model.pt"
ARCHS = ("mobilenet_v2",)


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


def channel_plan(model: nn.Module) -> dict[str, list[Any]]:
    """Every Conv2d / BatchNorm2d / Linear layer's dimensions, by module name."""
    plan: dict[str, list[Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            plan[name] = ["Conv2d", m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            plan[name] = ["BatchNorm2d", m.num_features]
        elif isinstance(m, nn.Linear):
            plan[name] = ["Linear", m.in_features, m.out_features]
        elif isinstance(getattr(m, "use_res_connect", None), bool):
            # MobileNetV2's InvertedResidual decides its skip connection from its sizes at
            # construction; record it, as it depends on the width the model was built at.
            plan[name] = ["Residual", m.use_res_connect]
    return plan


def _resized(old: nn.Module, spec: list[Any], name: str) -> nn.Module:
    """``old`` itself if it already has ``spec``'s dimensions, else a new layer that does."""
    kind, dims = spec[0], spec[1:]
    if kind == "Residual":
        if not (isinstance(getattr(old, "use_res_connect", None), bool) and len(dims) == 1
                and isinstance(dims[0], bool)):
            raise ModelError(f"checkpoint plan: layer {name} {spec} does not fit "
                             f"{type(old).__name__}")
        setattr(old, "use_res_connect", dims[0])  # noqa: B010 - a plain attribute, not a Module
        return old
    if type(old).__name__ != kind or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ModelError(f"checkpoint plan: layer {name} {spec} does not fit "
                         f"{type(old).__name__}")
    if isinstance(old, nn.Conv2d) and len(dims) == 3:
        cin, cout, groups = dims
        if (old.in_channels, old.out_channels, old.groups) == (cin, cout, groups):
            return old
        conv: Any = nn.Conv2d  # its hints want 2-tuples; these are the built layer's own
        return conv(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation,
                    groups, bias=old.bias is not None, padding_mode=old.padding_mode)
    if isinstance(old, nn.BatchNorm2d) and len(dims) == 1:
        return old if old.num_features == dims[0] else nn.BatchNorm2d(
            dims[0], eps=old.eps, momentum=old.momentum)
    if isinstance(old, nn.Linear) and len(dims) == 2:
        if (old.in_features, old.out_features) == tuple(dims):
            return old
        return nn.Linear(dims[0], dims[1], bias=old.bias is not None)
    raise ModelError(f"checkpoint plan: layer {name} {spec} is malformed")


def rebuild(arch: str, num_classes: int, width_mult: float,
            plan: dict[str, list[Any]]) -> nn.Module:
    """The stock ``arch`` with every layer resized to ``plan`` (random weights)."""
    from edgectl.pipeline.model import build_model

    if arch not in ARCHS:
        raise ModelError(f"checkpoint architecture {arch!r} is not supported "
                         f"(this edgectl knows {', '.join(ARCHS)})")
    model = build_model(int(num_classes), width_mult=float(width_mult))
    modules = dict(model.named_modules())
    for name, spec in plan.items():
        if name not in modules or not isinstance(spec, list) or not spec:
            raise ModelError(f"checkpoint plan: no layer {name!r} in {arch}")
        new = _resized(modules[name], spec, name)
        if new is not modules[name]:
            parent, _, child = name.rpartition(".")
            setattr(modules[parent] if parent else model, child, new)
    return model


def save_checkpoint(model: nn.Module, meta: dict[str, Any], path: str | Path) -> Path:
    """Write ``model`` and ``meta`` atomically; ``path`` is a file or a directory."""
    from edgectl.pipeline.model import ARCH

    p = Path(path)
    if p.suffix != ".pt":
        p = p / FILENAME
    meta = dict(meta)
    meta.setdefault("code_version", code_version())
    model = model.cpu().eval()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    payload = {
        "format": FORMAT, "version": VERSION, "arch": str(meta.get("arch") or ARCH),
        "num_classes": int(meta.get("num_classes") or head[-1].out_features),
        "width_mult": float(meta.get("width_mult") or 1.0),
        "plan": channel_plan(model),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": json.dumps(meta, sort_keys=True),
    }
    with atomic_path(p) as tmp:
        torch.save(payload, tmp)
    write_json_atomic(p.with_suffix(".json"), meta)
    return p


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``(model, meta)``; any file that is not an edgectl checkpoint is a ModelError.

    ``weights_only=True``: tensors and plain data only, so a crafted file cannot run code.
    """
    p = resolve(path)
    if not p.is_file():
        raise ModelError(f"checkpoint not found: {p}")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # junk, not pickled objects
            raise ModelError(f"{p} is not an edgectl checkpoint (UnpicklingError)") from err
        raise ModelError(
            f"{p} holds pickled Python objects (an edgectl checkpoint from before version "
            f"{VERSION}, or a crafted file); refusing to unpickle it, as that can run code: "
            "re-create it with this edgectl (edgectl train / prune)"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign files
        raise ModelError(f"{p} is not an edgectl checkpoint ({type(err).__name__})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{p} is not an edgectl checkpoint")
    if payload.get("version") != VERSION:
        raise ModelError(f"{p}: unsupported checkpoint version {payload.get('version')} "
                         f"(this edgectl reads {VERSION}); re-create it")
    try:
        meta = json.loads(payload["meta"])
        model = rebuild(payload["arch"], payload["num_classes"], payload["width_mult"],
                        payload["plan"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{p}: checkpoint is incomplete or does not fit its plan: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                         ) from err
    except RuntimeError as err:  # load_state_dict: missing/unexpected keys, shape mismatch
        raise ModelError(f"{p}: weights do not fit the saved channel plan: "
                         f"{str(err).splitlines()[0]}") from err
    return model.eval(), meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read only the metadata sidecar (no torch unpickling)."""
    p = resolve(path).with_suffix(".json")
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read checkpoint metadata {p}: {err}") from err
