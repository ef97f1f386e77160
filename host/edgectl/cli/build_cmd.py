"""`edgectl build` (issue 4) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

build = unfinished("build", 4, "Whole pipeline to a model bundle.")
