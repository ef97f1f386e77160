"""The fleet: Ansible runs, deploy, remote bench."""
