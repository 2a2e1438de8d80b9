"""checkov custom checks (`--external-checks-dir policies/checkov_checks`): thin wrappers around
the rules in policies/, one checkov check per rule. checkov loads nothing from a directory
without this file, and says nothing about it."""
