"""`edgectl keys` (issue 4) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

keys = unfinished("keys", 4, "Generate the bundle signing key pair.")
