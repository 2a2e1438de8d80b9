"""Offline preview: the Pulumi program for `Pulumi.<stack>.yaml`, run under the SDK's mocks.

This is not `pulumi preview` (no engine, no providers, no cloud): it shows which resources the
program declares and renders every Kubernetes resource as the manifest the provider would send
(camelCase inputs, numbers as ints, secrets redacted, unknowns as a visible placeholder, missing
names filled the way the provider auto-names, with a stable suffix). Security review and tests
stand on it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slm_deploy.errors import InputError

# gRPC (under the Pulumi SDK) prints a notice on every fork while its threads run; review forks
# validators after a preview.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
SECRET_SIG = "4dabf18193072939515e22adb298388d"
REDACTED = "<redacted>"
UNKNOWN = "<unknown>"
PROJECT = "slm-deploy"


@dataclass
class CapturedResource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    has_secrets: bool = False
    ignore_changes: tuple[str, ...] = ()


@dataclass
class PreviewResult:
    stack: str
    resources: list[CapturedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def by_urn(self) -> dict[str, CapturedResource]:
        return {r.urn: r for r in self.resources}

    def manifests(self) -> list[dict[str, Any]]:
        return [r.inputs for r in self.resources if _is_manifest(r)]

    def table_rows(self) -> list[tuple[str, str, str]]:
        names = self.by_urn()
        rows = []
        for r in self.resources:
            parent = names[r.parent].name if r.parent in names else ""
            rows.append((r.type, r.name, parent))
        return rows


def _is_manifest(resource: CapturedResource) -> bool:
    return resource.type.startswith("kubernetes:") and "apiVersion" in resource.inputs and "kind" in resource.inputs


def _clean(value: Any) -> tuple[Any, bool]:
    """Mock inputs -> manifest data: secrets redacted, unknowns visible, integral floats as ints."""
    from pulumi.output import Unknown

    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            inner = value.get("value")
            if isinstance(inner, dict):  # keep the shape (a Secret's keys), hide every value
                return {key: REDACTED for key in inner}, True
            return REDACTED, True
        out = {}
        secret = False
        for key, item in sorted(value.items()):  # protobuf maps carry no order; sort for determinism
            out[key], item_secret = _clean(item)
            secret = secret or item_secret
        return out, secret
    if isinstance(value, list):
        cleaned = [_clean(v) for v in value]
        return [c for c, _ in cleaned], any(s for _, s in cleaned)
    if isinstance(value, Unknown):
        return UNKNOWN, False
    if isinstance(value, float) and value.is_integer():
        return int(value), False
    return value, False


def _fill_name(resource: CapturedResource) -> None:
    metadata = resource.inputs.setdefault("metadata", {})
    if isinstance(metadata, dict) and not metadata.get("name"):
        suffix = hashlib.sha256(resource.urn.encode()).hexdigest()[:8]
        metadata["name"] = f"{resource.name}-{suffix}"


def _mocks() -> Any:
    import pulumi

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
            state = dict(args.inputs)
            typ = args.typ
            state.setdefault("name", f"{args.name}-{hashlib.sha256(args.name.encode()).hexdigest()[:6]}")
            if typ == "random:index/randomPassword:RandomPassword":
                state["result"] = f"preview-{args.name}-" + "x" * 32
            elif typ == "azure-native:containerservice:ManagedCluster":
                state["oidcIssuerProfile"] = {"issuerUrl": "https://oidc.example.invalid/issuer/"}
            elif typ == "azure-native:managedidentity:UserAssignedIdentity":
                state["clientId"] = "00000000-0000-0000-0000-00000000c1d0"
                state["principalId"] = "00000000-0000-0000-0000-00000000b1d0"
            return f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
            if args.token == "azure-native:authorization:getClientConfig":
                return {
                    "tenantId": "00000000-0000-0000-0000-0000000000aa",
                    "subscriptionId": "00000000-0000-0000-0000-0000000000bb",
                    "clientId": "00000000-0000-0000-0000-0000000000cc",
                    "objectId": "00000000-0000-0000-0000-0000000000dd",
                }, []
            if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
                import base64

                kubeconfig = base64.b64encode(b"apiVersion: v1\nkind: Config\n").decode()
                return {"kubeconfigs": [{"name": "clusterUser", "value": kubeconfig}]}, []
            return {}, []

    return Mocks()


def _monitor(mocks: Any, result: PreviewResult) -> Any:
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor

    class CapturingMonitor(MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            if request.type != "pulumi:pulumi:Stack":
                inputs, secret = _clean(rpc.deserialize_properties(request.object, keep_unknowns=True))
                result.resources.append(
                    CapturedResource(
                        response.urn,
                        request.type,
                        request.name,
                        request.parent or None,
                        bool(request.custom),
                        inputs,
                        secret,
                        tuple(request.ignoreChanges),
                    )
                )
            return response

        def RegisterResourceOutputs(self, request: Any) -> Any:
            if "::pulumi:pulumi:Stack::" in request.urn:
                raw = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
                for key, value in raw.items():
                    cleaned, secret = _clean(value)
                    result.outputs[key] = cleaned
                    if secret:
                        result.secret_outputs.add(key)
            return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]

    return CapturingMonitor(mocks)


def load_stack_file(stack: str, root: Path) -> tuple[dict[str, Any], list[str], str]:
    """Pulumi.<stack>.yaml -> (config for the program, secret keys, source name)."""
    source = f"Pulumi.{stack}.yaml"
    path = root / source
    if not path.is_file():
        known = sorted(p.name.split(".")[1] for p in root.glob("Pulumi.*.yaml"))
        raise InputError(source, "", f"no such stack file (stacks: {', '.join(known)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(source, "", f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
        raise InputError(source, "config", "expected a mapping of config keys")
    unknown = sorted(set(data) - {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"})
    if unknown:
        raise InputError(source, unknown[0], "unknown top-level key")
    config: dict[str, Any] = {}
    secrets = []
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
            value = "<secret from the stack's secrets provider>"
        config[key] = value if isinstance(value, str) else json.dumps(value)
    return config, secrets, source


def run_preview(stack: str, root: Path) -> PreviewResult:
    """Run the program for one stack under mocks and capture everything it declares."""
    import pulumi
    from pulumi.runtime import set_all_config, set_mocks
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from slm_deploy.stacks.entry import main, project_config
    from slm_deploy.stacks.program import read_config
    from slm_deploy.supply.lock import locked_catalog

    config, secret_keys, source = load_stack_file(stack, root)
    result = PreviewResult(stack)
    mocks = _mocks()
    set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=_monitor(mocks, result))
    set_all_config(config, secret_keys)
    # Validate first, so a bad stack file is a clear InputError (exit 2) rather than a failed run.
    read_config(stack, project_config(), source)
    locked_catalog(root)  # an image missing from the lock is exit 2 too, before the program runs

    def program() -> None:
        main(root, offline=True)  # what `pulumi up` runs through the project's __main__.py, from ROOT
        root_resource = pulumi.runtime.get_root_resource()
        if root_resource is not None:
            root_resource.register_outputs(root_resource.outputs)  # type: ignore[attr-defined]

    # The SDK creates tens of thousands of short-lived futures; with the cyclic collector running,
    # a third of the run is spent scanning the (large, long-lived) heap. Pause it for the run.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        if collecting:
            gc.enable()
    result.resources.sort(key=lambda r: r.urn)  # registration order follows async scheduling
    for resource in result.resources:
        if _is_manifest(resource):
            _fill_name(resource)
    return result


def manifest_filename(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    namespace = meta.get("namespace") or "cluster"
    return f"{namespace}/{manifest['kind'].lower()}-{meta.get('name', 'unnamed')}.yaml"


def write_manifests(result: PreviewResult, out: Path) -> list[Path]:
    from slm_deploy.yamlout import dump

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for manifest in result.manifests():
        path = out / manifest_filename(manifest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(manifest, f"# Rendered by `slm-deploy preview {result.stack}` (offline, mocks).\n"))
        written.append(path)
    return written
