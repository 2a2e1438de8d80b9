"""A pause after an Azure RBAC assignment, before anything uses it.

Azure RBAC for Kubernetes can take up to about five minutes to honour a new role assignment
(catalog/aks.yaml rbac_propagation_seconds); without the pause the first Kubernetes call after
the assignment is a 403. A dynamic resource: it sleeps when created (or when the assignment it
follows is replaced) and never again, so later `pulumi up`s pay nothing.
"""

from __future__ import annotations

import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


class _Pause(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        time.sleep(int(props["seconds"]))
        return CreateResult(id_=f"pause-{props['follows']}", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("follows") != news.get("follows")
        return DiffResult(changes=changed, replaces=["follows"] if changed else [], delete_before_replace=True)


class RbacPropagationWait(Resource):
    def __init__(
        self, name: str, *, follows: pulumi.Input[str], seconds: int, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(_Pause(), name, {"follows": follows, "seconds": seconds}, opts)
