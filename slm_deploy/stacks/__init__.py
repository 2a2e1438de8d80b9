"""The Pulumi program: `stacks/__main__.py` wires a stack's config to these components."""
