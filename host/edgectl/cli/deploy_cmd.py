"""`edgectl deploy` (issue 6) — placeholder until its issue lands."""

from edgectl.cli._unfinished import unfinished

deploy = unfinished("deploy", 6, "Roll out with Ansible.")
