"""`edgectl quantize` (issue 4) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

quantize = unfinished("quantize", 4, "INT8 post-training static quantization.")
