"""`edgectl study` (issue 7) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

study = unfinished("study", 7, "Regenerate the pruning study.")
