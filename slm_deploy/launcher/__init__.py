"""Processes that run inside the model-server containers (not on the operator's machine)."""
