"""Pulumi entry point: Pulumi.yaml has no `main`, so Pulumi runs this file from the project folder.
Only wiring lives here; the program is the installed `slm_deploy.stacks` package."""

from slm_deploy.stacks.entry import main

main()
