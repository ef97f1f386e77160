"""`edgectl bundle` (issue 4) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

bundle = unfinished("bundle", 4, "Show or verify a model bundle.")
