"""`edgectl serve` (issue 8) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

serve = unfinished("serve", 8, "Run the host collector.")
