"""`edgectl eval` (issue 2) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

eval_ = unfinished("eval", 2, "Evaluate a checkpoint.")
