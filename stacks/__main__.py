"""Pulumi entry point (`main: stacks/` in Pulumi.yaml). Only wiring lives here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: `generator`, `stacks`

from stacks.entry import main

main()
