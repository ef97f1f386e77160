"""`edgectl data` (issue 2) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

data = unfinished("data", 2, "Inspect or export datasets.")
