"""`pulumi preview --policy-pack policies`: only the PolicyPack call lives here (it starts the
analyzer's gRPC server and blocks, so nothing may import this module). The rules are the installed
`slm_deploy.policies` package."""

from pulumi_policy import EnforcementLevel, PolicyPack

from slm_deploy.policies.crossguard import build_policies

PolicyPack(name="slm-deploy", enforcement_level=EnforcementLevel.MANDATORY, policies=list(build_policies()))
