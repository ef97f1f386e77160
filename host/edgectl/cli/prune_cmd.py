"""`edgectl prune` (issue 3) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

prune = unfinished("prune", 3, "Prune a checkpoint.")
