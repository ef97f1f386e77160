"""`edgectl export` (issue 4) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

export = unfinished("export", 4, "Export to ONNX / TFLite.")
