"""Kubernetes rules: Pod Security Standards `restricted`, plus what a serving workload needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from slm_deploy.image_profiles import ContainerView, profile_problems
from slm_deploy.policies.common import SECRET_NAME, unpinned
from slm_deploy.policies.model import Kind, RuleMaker, Severity

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"}
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
EXPOSURE_ANNOTATION = "slm.dev/exposure"
PSS_REASON = "slm.dev/pod-security-reason"


def mapping(value: Any) -> dict[str, Any]:
    """Labels and annotations as a dict (checkov hands annotations over as a list of pairs)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for item in value:
            if isinstance(item, dict):
                merged.update(item)
        return merged
    return {}


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "Pod":
        return dict(spec)
    if kind == "CronJob":
        found = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    elif kind in WORKLOADS:
        found = (spec.get("template") or {}).get("spec")
    else:
        return None
    return found if isinstance(found, dict) else None


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _each_container(manifest: dict[str, Any], bad: Any) -> list[str]:
    spec = pod_spec(manifest)
    if spec is None:
        return []
    return [message for c in containers(spec) if (message := bad(spec, c))]


def run_as_non_root(manifest: dict[str, Any]) -> list[str]:
    def bad(spec: dict[str, Any], c: dict[str, Any]) -> str | None:
        pod = spec.get("securityContext") or {}
        own = c.get("securityContext") or {}
        non_root = own.get("runAsNonRoot", pod.get("runAsNonRoot"))
        uid = own.get("runAsUser", pod.get("runAsUser"))
        if non_root is not True or uid == 0:
            return f"container {c.get('name')} may run as root (set runAsNonRoot: true and a non-zero runAsUser)"
        return None

    return _each_container(manifest, bad)


def _container_setting(key: str, required: bool, problem: str) -> Callable[[dict[str, Any]], list[str]]:
    """A rule: every container's securityContext sets `key` to `required`; else "container NAME {problem}"."""

    def bad(_: dict[str, Any], c: dict[str, Any]) -> str | None:
        return f"container {c.get('name')} {problem}" if (c.get("securityContext") or {}).get(key) is not required else None

    return lambda manifest: _each_container(manifest, bad)


no_privilege_escalation = _container_setting("allowPrivilegeEscalation", False, "does not set allowPrivilegeEscalation: false")


def drop_all_capabilities(manifest: dict[str, Any]) -> list[str]:
    def bad(_: dict[str, Any], c: dict[str, Any]) -> str | None:
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            return f"container {c.get('name')} does not drop ALL capabilities"
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            return f"container {c.get('name')} adds capabilities {sorted(added)}"
        return None

    return _each_container(manifest, bad)


def seccomp_runtime_default(manifest: dict[str, Any]) -> list[str]:
    def bad(spec: dict[str, Any], c: dict[str, Any]) -> str | None:
        pod = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        own = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        if (own or pod) not in ("RuntimeDefault", "Localhost"):
            return f"container {c.get('name')} has no RuntimeDefault seccomp profile"
        return None

    return _each_container(manifest, bad)


def no_host_access(manifest: dict[str, Any]) -> list[str]:
    spec = pod_spec(manifest)
    if spec is None:
        return []
    problems = [f"pod uses {key}" for key in ("hostNetwork", "hostPID", "hostIPC", "hostUsers") if spec.get(key) is True]
    for c in containers(spec):
        if (c.get("securityContext") or {}).get("privileged") is True:
            problems.append(f"container {c.get('name')} is privileged")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"container {c.get('name')} uses a hostPort")
    return problems


def restricted_volumes(manifest: dict[str, Any]) -> list[str]:
    spec = pod_spec(manifest)
    if spec is None:
        return []
    problems = []
    for volume in spec.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume.get('name')} is of a type `restricted` forbids: {sorted(types - ALLOWED_VOLUMES)}")
    return problems


read_only_root = _container_setting("readOnlyRootFilesystem", True, "has a writable root filesystem")


def resources_set(manifest: dict[str, Any]) -> list[str]:
    def bad(_: dict[str, Any], c: dict[str, Any]) -> str | None:
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in requests]
        missing += [f"limits.{r}" for r in ("cpu", "memory") if r not in limits]
        gpus = [k for k in requests if k.endswith("/gpu")]
        missing += [f"limits.{g}" for g in gpus if limits.get(g) != requests.get(g)]
        return f"container {c.get('name')} lacks {', '.join(missing)}" if missing else None

    return _each_container(manifest, bad)


def pinned_images(manifest: dict[str, Any]) -> list[str]:
    def bad(_: dict[str, Any], c: dict[str, Any]) -> str | None:
        image = str(c.get("image") or "")
        reason = unpinned(image)
        if reason == "untagged":
            return f"container {c.get('name')} uses an untagged image {image!r}"
        if reason:
            return f"container {c.get('name')} uses a moving tag {image!r}"
        return None

    return _each_container(manifest, bad)


def probes(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
        return []
    spec = pod_spec(manifest) or {}
    problems = []
    for c in spec.get("containers") or []:
        if not c.get("ports"):
            continue  # not a server
        missing = [p for p in ("livenessProbe", "readinessProbe") if not c.get(p)]
        labels = mapping(((manifest.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels"))
        if labels.get("slm.dev/role") == "model-server" and not c.get("startupProbe"):
            missing.append("startupProbe")
        if missing:
            problems.append(f"server container {c.get('name')} has no {', '.join(missing)}")
    return problems


def no_automounted_token(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") == "ServiceAccount":
        if manifest.get("automountServiceAccountToken") is not False:
            return [f"service account {manifest.get('metadata', {}).get('name')} automounts its token"]
        return []
    spec = pod_spec(manifest)
    if spec is not None and spec.get("automountServiceAccountToken") is not False:
        return ["pod does not set automountServiceAccountToken: false"]
    return []


def default_deny(manifests: list[dict[str, Any]]) -> list[str]:
    namespaces = {m.get("metadata", {}).get("namespace") for m in manifests if pod_spec(m) is not None} - {None}
    covered = set()
    for m in manifests:
        if m.get("kind") != "NetworkPolicy":
            continue
        spec = m.get("spec") or {}
        if (
            spec.get("podSelector") in ({}, None)
            and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
            and not spec.get("ingress")
            and not spec.get("egress")
        ):
            covered.add(m.get("metadata", {}).get("namespace"))
    return [f"namespace {ns} has no default-deny NetworkPolicy" for ns in sorted(namespaces - covered)]


def no_unplanned_exposure(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") != "Service":
        return []
    kind = (manifest.get("spec") or {}).get("type", "ClusterIP")
    annotations = mapping(manifest.get("metadata", {}).get("annotations"))
    if kind in ("NodePort", "LoadBalancer") and annotations.get(EXPOSURE_ANNOTATION) != "public":
        return [f"Service of type {kind} without the {EXPOSURE_ANNOTATION}: public annotation"]
    return []


def no_secret_env_literals(manifest: dict[str, Any]) -> list[str]:
    def bad(_: dict[str, Any], c: dict[str, Any]) -> str | None:
        literal = [
            e["name"]
            for e in c.get("env") or []
            if SECRET_NAME.search(str(e.get("name", "")))
            and "value" in e
            and str(e["value"])
            and not str(e["value"]).startswith("/")
        ]
        return f"container {c.get('name')} passes secrets as literal env values: {literal}" if literal else None

    return _each_container(manifest, bad)


def restricted_namespace(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") != "Namespace":
        return []
    meta = manifest.get("metadata", {})
    labels = mapping(meta.get("labels"))
    level = labels.get("pod-security.kubernetes.io/enforce")
    if level == "restricted":
        return []
    if level in ("baseline", "privileged") and str(mapping(meta.get("annotations")).get(PSS_REASON, "")).strip():
        return []
    return [
        f"namespace {meta.get('name')} does not enforce Pod Security `restricted` "
        f"(or a lower level with a {PSS_REASON} annotation saying why)"
    ]


def k8s_view(spec: dict[str, Any], c: dict[str, Any]) -> ContainerView:
    """A Kubernetes container as the profile rules read it (slm_deploy.image_profiles): `command`
    replaces the image's entrypoint, `args` its command; every writable emptyDir or volume allows exec."""
    caps = (c.get("securityContext") or {}).get("capabilities") or {}
    env = {str(e.get("name")): str(e.get("value")) for e in c.get("env") or [] if isinstance(e, dict) and "value" in e}
    writable = tuple(str(m.get("mountPath")) for m in c.get("volumeMounts") or [] if not m.get("readOnly"))
    return ContainerView(
        name=str(c.get("name")),
        image=str(c.get("image", "")),
        entrypoint=tuple(str(a) for a in c["command"]) if c.get("command") else None,
        command=tuple(str(a) for a in c["args"]) if c.get("args") else (() if c.get("command") else None),
        cap_drop=tuple(str(x) for x in caps.get("drop") or []),
        cap_add=tuple(str(x) for x in caps.get("add") or []),
        environment=env,
        exec_mounts=writable,
        where="container",
    )


def image_profile_needs(manifest: dict[str, Any]) -> list[str]:
    """The compose profile rules (SLM-COMPOSE-013/014) on a pod spec: file capabilities kept under
    drop ALL, the environment and exec-capable caches the image needs."""
    spec = pod_spec(manifest)
    if spec is None:
        return []
    return [p for c in containers(spec) for p in profile_problems(k8s_view(spec, c))]


_k8s = RuleMaker(Kind.K8S)


RULES = [
    _k8s(
        "SLM-K8S-001",
        "Containers run as non-root",
        Severity.HIGH,
        "A root process that escapes its container is root on the node; Pod Security `restricted` forbids it.",
        "Set runAsNonRoot: true and a non-zero runAsUser in the pod or container securityContext.",
        run_as_non_root,
    ),
    _k8s(
        "SLM-K8S-002",
        "No privilege escalation",
        Severity.HIGH,
        "setuid binaries can regain privileges the container dropped.",
        "Set allowPrivilegeEscalation: false on every container.",
        no_privilege_escalation,
    ),
    _k8s(
        "SLM-K8S-003",
        "All capabilities dropped",
        Severity.HIGH,
        "Linux capabilities such as NET_RAW or SYS_ADMIN widen what a compromised process can do.",
        "Set capabilities.drop: [ALL]; add back only NET_BIND_SERVICE if a port below 1024 is needed.",
        drop_all_capabilities,
    ),
    _k8s(
        "SLM-K8S-004",
        "Seccomp profile RuntimeDefault",
        Severity.MEDIUM,
        "Without a seccomp profile every syscall is allowed, including the ones most kernel exploits use.",
        "Set seccompProfile.type: RuntimeDefault in the pod securityContext.",
        seccomp_runtime_default,
    ),
    _k8s(
        "SLM-K8S-005",
        "No privileged containers, host namespaces or host ports",
        Severity.CRITICAL,
        "Privileged containers and host namespaces are the host; nothing else protects it then.",
        "Remove privileged, hostNetwork, hostPID, hostIPC and hostPort.",
        no_host_access,
    ),
    _k8s(
        "SLM-K8S-006",
        "Only restricted volume types",
        Severity.HIGH,
        "hostPath and similar volumes expose the node's filesystem to the pod.",
        "Use configMap, secret, emptyDir, projected, csi, ephemeral or persistentVolumeClaim volumes.",
        restricted_volumes,
    ),
    _k8s(
        "SLM-K8S-007",
        "Read-only root filesystem",
        Severity.MEDIUM,
        "A writable root lets an attacker drop tools and persist changes inside the container.",
        "Set readOnlyRootFilesystem: true and mount emptyDir volumes where the process must write.",
        read_only_root,
    ),
    _k8s(
        "SLM-K8S-008",
        "Resource requests and limits, GPUs included",
        Severity.MEDIUM,
        "Without limits one runaway server starves its node; a GPU request without a matching limit is rejected.",
        "Set requests and limits for cpu and memory, and limits equal to requests for nvidia.com/gpu.",
        resources_set,
    ),
    _k8s(
        "SLM-K8S-009",
        "Pinned images",
        Severity.HIGH,
        "`latest` and untagged images change under you: what was reviewed is not what runs.",
        "Use an explicit version tag (or a digest) from the catalog.",
        pinned_images,
    ),
    _k8s(
        "SLM-K8S-010",
        "Probes on servers",
        Severity.MEDIUM,
        "Without readiness the Service sends traffic to a loading model; without a startup budget liveness "
        "kills servers that are still downloading weights.",
        "Add liveness and readiness probes, and a startupProbe sized by the plan on model servers.",
        probes,
    ),
    _k8s(
        "SLM-K8S-011",
        "No automounted service-account token",
        Severity.MEDIUM,
        "A mounted token lets anyone who compromises the pod talk to the Kubernetes API.",
        "Set automountServiceAccountToken: false on the service account and the pod spec.",
        no_automounted_token,
    ),
    _k8s(
        "SLM-K8S-012",
        "Default-deny NetworkPolicy per namespace",
        Severity.HIGH,
        "Without a default deny, every pod can reach every other pod and the internet.",
        "Add a NetworkPolicy with an empty podSelector and policyTypes [Ingress, Egress] and no rules.",
        default_deny,
        Kind.K8S_SET,
    ),
    _k8s(
        "SLM-K8S-013",
        "No NodePort or LoadBalancer without an explicit exposure",
        Severity.HIGH,
        "Model servers have no authentication of their own; an exposed Service publishes them.",
        f"Use ClusterIP behind the gateway, or annotate the Service {EXPOSURE_ANNOTATION}: public on purpose.",
        no_unplanned_exposure,
    ),
    _k8s(
        "SLM-K8S-014",
        "No secrets as literal env values",
        Severity.CRITICAL,
        "Literal env values end up in the manifest, in `kubectl describe` and in every backup of etcd.",
        "Mount the secret as a file (CSI Key Vault volume or Secret volume), or use valueFrom.secretKeyRef.",
        no_secret_env_literals,
    ),
    _k8s(
        "SLM-K8S-015",
        "Namespace enforces Pod Security `restricted`",
        Severity.MEDIUM,
        "The admission controller then refuses any pod that breaks the baseline, whoever deploys it.",
        "Label the namespace pod-security.kubernetes.io/enforce: restricted (and audit, warn); a namespace "
        f"that cannot (host-level exporters) says why in a {PSS_REASON} annotation.",
        restricted_namespace,
    ),
    _k8s(
        "SLM-K8S-016",
        "What the image needs to start under the hardening (image profile)",
        Severity.HIGH,
        "A binary with file capabilities cannot be exec'd when they were all dropped; an unnamed uid without "
        "USER/LOGNAME or compile caches without a writable exec mount kill the server at start.",
        "Add back exactly the file's capability (capabilities.add), set the environment the profile names, "
        "and mount a writable emptyDir where the exec caches live.",
        image_profile_needs,
    ),
]
