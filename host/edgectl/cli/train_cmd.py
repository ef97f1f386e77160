"""`edgectl train` (issue 2) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

train = unfinished("train", 2, "Train the MobileNetV2 baseline.")
