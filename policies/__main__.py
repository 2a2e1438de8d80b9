"""`pulumi preview --policy-pack policies`: only the PolicyPack call lives here (it starts the
analyzer's gRPC server and blocks, so nothing may import this module)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: `policies`, `generator`

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.crossguard import build_policies

PolicyPack(name="slm-deploy", enforcement_level=EnforcementLevel.MANDATORY, policies=list(build_policies()))
