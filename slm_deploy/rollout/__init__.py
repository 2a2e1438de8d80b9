"""Releases to a fleet of boxes: signed OCI artifacts (publish), waves through Ansible (playbook),
the box's own verifier (boxagent), fleet status from the reports, and a fleet-scale simulation."""
