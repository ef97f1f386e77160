"""`edgectl bench` (issue 6) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

bench = unfinished("bench", 6, "Benchmark a bundle on a board.")
