"""`edgectl fleet` (issue 8) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

fleet = unfinished("fleet", 8, "Fleet overview and management.")
