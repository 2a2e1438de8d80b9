"""Offline preview: the Pulumi program for `Pulumi.<stack>.yaml`, run under the SDK's mocks.

This is not `pulumi preview` (no engine, no providers, no cloud): it shows which resources the
program declares and renders every Kubernetes resource as the manifest the provider would send
(camelCase inputs, numbers as ints, secrets redacted, unknowns as a visible placeholder, missing
names filled the way the provider auto-names, with a stable suffix). Security review and tests
stand on it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_deploy import interrupts
from slm_deploy.errors import InputError
from slm_deploy.preview_outputs import OutputQueue
from slm_deploy.safeyaml import read_input
from slm_deploy.stackfile import PROJECT, load_stack_file, read_config
from slm_deploy.stackfile import check_stack_name as check_stack_name  # callers name it from here too

# gRPC (under the Pulumi SDK) prints a notice on every fork while its threads run; review forks
# validators after a preview.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
SECRET_SIG = "4dabf18193072939515e22adb298388d"
REDACTED = "<redacted>"
UNKNOWN = "<unknown>"
# What AKS returns for an Entra ID cluster with local accounts off: kubelogin in device-code mode.
MOCK_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: aks
  cluster: {server: "https://aks.hcp.westeurope.azmk8s.io:443"}
contexts:
- name: aks
  context: {cluster: aks, user: clusterUser}
current-context: aks
users:
- name: clusterUser
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args: [get-token, --environment, AzurePublicCloud, --server-id, 6dae42f8-4368-4678-94ff-3960e28e3630,
             --client-id, 80faf920-1908-4b52-b5ef-a8e7bedfc67a, --tenant-id, 00000000-0000-0000-0000-0000000000aa,
             --login, devicecode]
"""
INDEX = ".slm-preview.json"  # what the last preview wrote into --out: only those files are ever replaced
STATE_FILE = ".slm-state.json"  # every resource a preview declared, for `preview --from`
PULUMI_CONFIG_ENV = "PULUMI_CONFIG"


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
    # What the engine waits for before creating this resource: depends_on, the resources its
    # inputs come from, and its provider (URNs, sorted). The simulator's ordering check reads them.
    dependencies: tuple[str, ...] = ()
    provider: str | None = None
    retain_on_delete: bool = False
    deleted_with: str | None = None  # the URN whose deletion takes this one along (no delete call of its own)
    protect: bool = False


@dataclass
class PreviewResult:
    stack: str
    resources: list[CapturedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    environment: Any = None  # the validated Environment the program built from (slm_deploy.environment)
    ignored_environment: list[str] = field(default_factory=list)  # PULUMI_CONFIG* variables set aside

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
            elif typ == "random:index/randomString:RandomString":
                state["result"] = "x" * int(state.get("length", 8))
            elif typ == "azure-native:containerservice:ManagedCluster":
                state["oidcIssuerProfile"] = {"issuerUrl": "https://oidc.example.invalid/issuer/"}
                identity = state.get("identity") or {}
                if isinstance(identity.get("userAssignedIdentities"), list):  # ids in, a map by id out (ARM)
                    state["identity"] = {
                        **identity,
                        "userAssignedIdentities": {i: {} for i in identity["userAssignedIdentities"]},
                    }
                if state.get("ingressProfile"):
                    identity = {"objectId": "00000000-0000-0000-0000-00000000a0a0"}
                    routing = {**state["ingressProfile"]["webAppRouting"], "identity": identity}
                    state["ingressProfile"] = {"webAppRouting": routing}
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

                kubeconfig = base64.b64encode(MOCK_KUBECONFIG.encode()).decode()
                return {"kubeconfigs": [{"name": "clusterUser", "value": kubeconfig}]}, []
            return {}, []

    return Mocks()


def _dependencies(request: Any) -> tuple[str, ...]:
    urns = set(request.dependencies)
    for deps in request.propertyDependencies.values():
        urns.update(deps.urns)
    return tuple(sorted(urns))


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
                        _dependencies(request),
                        request.provider.rsplit("::", 1)[0] if request.provider else None,
                        bool(request.retainOnDelete),
                        request.deletedWith or None,
                        bool(request.protect),
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


def _set_aside_config_environment() -> dict[str, str]:
    """PULUMI_CONFIG and PULUMI_CONFIG_<KEY> would feed the program values the stack file does not
    hold; the offline preview renders the stack file only (under `pulumi up` the Pulumi CLI hands
    the program the stack's own configuration)."""
    return {k: os.environ.pop(k) for k in sorted(os.environ) if k.startswith(PULUMI_CONFIG_ENV)}


# Whether this process has run Pulumi's runtime under mocks: a child forked after that inherits
# its global state and spins in wait_for_rpcs forever (seen when a test process previewed, then
# reviewed several stacks side by side). review/sources.py forks only while this is False.
PREVIEWED = False


def run_preview(stack: str, root: Path) -> PreviewResult:
    """Run the program for one stack under mocks and capture everything it declares."""
    global PREVIEWED
    PREVIEWED = True
    config, secret_keys, source = load_stack_file(stack, root)
    result = PreviewResult(stack)
    aside = _set_aside_config_environment()
    result.ignored_environment = sorted(aside)
    try:
        _run(result, config, secret_keys, source, root)
    finally:
        os.environ.update(aside)
    interrupts.check()  # Pulumi's SDK may have swallowed the signal's exception (slm_deploy.interrupts)
    result.resources.sort(key=lambda r: r.urn)  # registration order follows async scheduling
    for resource in result.resources:
        if _is_manifest(resource):
            _fill_name(resource)
    return result


def _run(result: PreviewResult, config: dict[str, str], secret_keys: list[str], source: str, root: Path) -> None:
    import pulumi
    from pulumi.runtime import set_all_config, set_mocks, settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from slm_deploy.stacks.entry import main, project_config
    from slm_deploy.stacks.images import pin_model_images
    from slm_deploy.supply.lock import locked_catalog

    stack = result.stack
    mocks = _mocks()
    # set_mocks makes a root Stack only when there is none (pulumi runtime/mocks.py; settings.py ROOT,
    # never cleared): a second stack here would be declared under the first one's Stack.
    settings.ROOT.set(None)
    set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=_monitor(mocks, result))
    # set_mocks (pulumi 3.x, runtime/mocks.py MockSettings) starts a new RPC manager but keeps the
    # process's list of outputs to await: an earlier program's outputs would be awaited, and their
    # failures raised, in this run. This run awaits its own, in a queue whose remove is O(1).
    settings.SETTINGS.outputs = OutputQueue()
    set_all_config(config, secret_keys)
    # Validate first, so a bad stack file is a clear InputError (exit 2) rather than a failed run.
    result.environment = read_config(stack, project_config(), source)
    # an image missing from the lock is exit 2 too, before the program runs
    pin_model_images(locked_catalog(root), result.environment, root)

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


STAGING_NAME = re.compile(r"\.slm-preview-[a-z0-9_]{8}")  # tempfile.mkdtemp's names
NAME_PART = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Kubernetes DNS subdomain


def manifest_filename(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    namespace = str(meta.get("namespace") or "cluster")
    name = str(meta.get("name", "unnamed"))
    kind = str(manifest["kind"]).lower()
    for part in (namespace, name, kind):
        if not NAME_PART.fullmatch(part) or part in (".", ".."):
            raise InputError("preview", "metadata", f"{part[:80]!r} cannot be a file name of a manifest")
    return f"{namespace}/{kind}-{name}.yaml"


def _read_index(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / INDEX).read_text(encoding="utf-8"))
        files = data.get("files", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def write_manifests(result: PreviewResult, out: Path) -> list[Path]:
    """Every manifest under OUT, all or nothing: rendered and written to a staging folder first
    (a full disk changes nothing in OUT), then each file renamed into place. Every path is
    resolved and must stay under OUT. A file in OUT that the previous preview did not write (per
    OUT/.slm-preview.json) is never overwritten; manifests of the previous preview that this one
    no longer has are removed, unless they were edited since."""
    from slm_deploy.yamlout import dump

    if not str(out) or str(out).strip() == "":
        raise InputError("arguments", "--out", "an empty path; name a folder for the manifests")
    files: dict[str, bytes] = {}
    for manifest in result.manifests():
        rel = manifest_filename(manifest)
        files[rel] = dump(manifest, f"# Rendered by `slm-deploy preview {result.stack}` (offline, mocks).\n").encode()
    try:
        out.mkdir(parents=True, exist_ok=True)
        root = out.resolve(strict=True)
    except OSError as exc:
        raise InputError(str(out), "", f"cannot create the output folder: {exc.strerror or exc}") from None
    previous = _read_index(out)
    for leftover in out.glob(".slm-preview-*"):  # staging of an interrupted preview: ours, by its name
        if leftover.is_dir() and not leftover.is_symlink() and STAGING_NAME.fullmatch(leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)
    for rel in sorted(files):
        target = out / rel
        if not (root / rel).resolve().is_relative_to(root) or os.path.islink(target):
            raise InputError(str(target), "", f"resolves outside {out}; refusing to write there")
        if os.path.lexists(target) and rel not in previous:
            raise InputError(str(target), "", "exists and was not written by slm-deploy preview; refusing to overwrite it")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".slm-preview-", dir=out))
    except OSError as exc:
        raise InputError(str(out), "", f"cannot write the manifests: {exc.strerror or exc}") from None
    try:
        for rel, data in sorted(files.items()):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        index = {"files": {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())}}
        (staging / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        for rel in sorted(files):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (out / rel).parent.resolve().is_relative_to(root):
                raise InputError(str(out / rel), "", f"resolves outside {out}; refusing to write there")
            os.replace(staging / rel, out / rel)
        for rel, digest in sorted(previous.items()):
            stale = out / rel
            if rel not in files and stale.is_file() and not stale.is_symlink() and _sha256(stale) == digest:
                stale.unlink()
                if stale.parent != out and not any(stale.parent.iterdir()):
                    stale.parent.rmdir()
        os.replace(staging / INDEX, out / INDEX)
    except OSError as exc:
        raise InputError(str(exc.filename or out), "", f"cannot write the manifests: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / rel for rel in sorted(files)]


# Transitions: `preview STACK --from PREVIOUS` ------------------------------------------------------


def state_document(result: PreviewResult) -> dict[str, Any]:
    """What `preview --out` keeps beside the manifests so that a later `preview --from` can compare:
    every resource's type, name, inputs (secrets already redacted) and options."""
    return {
        "stack": result.stack,
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "parent": r.parent,
                "custom": r.custom,
                "inputs": r.inputs,
                "ignore_changes": list(r.ignore_changes),
                "retain_on_delete": r.retain_on_delete,
            }
            for r in result.resources
        ],
    }


def write_state(result: PreviewResult, out: Path) -> Path:
    """OUT/.slm-state.json, whole or not at all, for a later `preview --from OUT`. Written by the
    `preview` command only: review's manifest folders hold manifests alone."""
    target = out / STATE_FILE
    if os.path.islink(target):
        raise InputError(str(target), "", "is a symbolic link; refusing to write there")
    data = json.dumps(state_document(result), indent=1, sort_keys=True) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".slm-state-", dir=out)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
        raise InputError(str(target), "", f"cannot write: {exc.strerror or exc}") from None
    return target


def previous_state(previous: Path, stack: str, root: Path) -> tuple[Any, set[str]]:
    """The state an `up` would start from (a simulator Stack and the URNs retained on delete): a
    previous preview's --out folder (its state file), or a stack file such as the previous commit's
    (`git show HEAD~1:Pulumi.dev.yaml > old.yaml`), rendered as STACK under the same project."""
    from slm_deploy.simulator.model import from_preview
    from slm_deploy.simulator.transitions import stack_from_state

    name = str(previous)
    if previous.is_dir():
        state = previous / STATE_FILE
        if not state.is_file():
            raise InputError(name, "--from", f"not a folder written by `slm-deploy preview --out` (no {STATE_FILE})")
        try:
            document = json.loads(read_input(state, str(state)))
        except ValueError as exc:
            raise InputError(str(state), "", f"not JSON: {str(exc)[:120]}") from None
        return stack_from_state(document, str(state))
    if not os.path.lexists(previous):
        raise InputError(name, "--from", "no such file or folder (name a previous preview's --out folder or a stack file)")
    if not previous.is_file():
        raise InputError(name, "--from", "neither a folder nor a stack file")
    text = read_input(previous, name)
    with tempfile.TemporaryDirectory(prefix="slm-from-") as tmp:
        mirror = Path(tmp)
        for entry in sorted(root.iterdir()):
            if not (entry.name.startswith("Pulumi.") and entry.name.endswith(".yaml") and entry.name != "Pulumi.yaml"):
                (mirror / entry.name).symlink_to(entry.resolve())
        (mirror / f"Pulumi.{stack}.yaml").write_text(text, encoding="utf-8")
        try:
            result = run_preview(stack, mirror)
        except InputError as exc:
            raise InputError(name, exc.field, exc.message) from None
    return from_preview(result), {r.urn for r in result.resources if r.retain_on_delete}


def transition_report(result: PreviewResult, previous: Path, root: Path) -> tuple[list[str], bool]:
    """The lines `preview --from` prints, and whether an `up` would be refused or lose data."""
    from slm_deploy.simulator.model import from_preview
    from slm_deploy.simulator.transitions import compare

    old, retained = previous_state(previous, result.stack, root)
    changes = compare(old, from_preview(result), retained)
    updates = sum(1 for c in changes if c.action == "update")
    lines = [c.line() for c in changes if c.action != "update"]
    blocking = any(c.severity <= 1 or c.action == "crds" for c in changes)
    head = f"from {previous}: " + (
        ", ".join(
            f"{n} {a}"
            for a in ("refused", "unsupported", "crds", "replace", "delete", "create")
            if (n := sum(1 for c in changes if c.action == a))
        )
        or "no replacement, deletion or refusal"
    )
    return [head, *(f"  {line}" for line in lines)] + (
        [f"  ({updates} in-place updates not listed)"] if updates else []
    ), blocking
