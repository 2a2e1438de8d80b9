"""Ordering: every custom resource waits (directly or transitively) for what installs its CRD, a
Helm release (from the chart profiles) or an AKS add-on the cluster enables; every class,
controller, driver and secret a resource names is provided by something the program creates or
the cluster mode guarantees (existing clusters: the add-on CRDs and classes the config asserts)."""

from __future__ import annotations

from urllib.parse import urlparse

from slm_deploy.catalog.platform import AksFacts
from slm_deploy.simulator.model import Finding, SimResource, Stack, chart_profile, dig, label

BUILTIN_GROUPS = {
    "v1",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "apiextensions.k8s.io",
    "admissionregistration.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "certificates.k8s.io",
}


def _gvk(manifest: dict[str, object]) -> str:
    return f"{manifest['apiVersion']}/{manifest['kind']}"


def _enabled_addons(stack: Stack, facts: AksFacts) -> list[str]:
    cluster = stack.cluster
    if cluster is None:
        return []
    return [a.id for a in facts.addons if dig(cluster.inputs, a.enabled_by) is True]


def crd_installers(stack: Stack, facts: AksFacts) -> dict[str, list[SimResource]]:
    """CRD (group/version/Kind) -> the resources that install it."""
    out: dict[str, list[SimResource]] = {}
    for release in stack.releases():
        profile = chart_profile(release)
        for crd in profile.crds if profile else ():
            out.setdefault(crd, []).append(release)
    enabled = _enabled_addons(stack, facts)
    for addon in facts.addons:
        if addon.id in enabled and stack.cluster is not None:
            for crd in addon.crds:
                out.setdefault(crd, []).append(stack.cluster)
    return out


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings: list[Finding] = []
    aks = stack.cluster is not None
    installers = crd_installers(stack, facts)
    addon_crds = {crd for a in facts.addons for crd in a.crds}
    for resource in stack.manifests():
        manifest = resource.inputs
        group = str(manifest["apiVersion"]).split("/")[0] if "/" in str(manifest["apiVersion"]) else "v1"
        if group in BUILTIN_GROUPS:
            continue
        gvk = _gvk(manifest)
        sources = installers.get(gvk, [])
        if not sources:
            if not aks and gvk in addon_crds:
                continue  # existing clusters: the config asserts KEDA and the CSI driver are installed
            findings.append(Finding("SLM-SIM-004", label(resource), f"nothing the program installs provides the CRD {gvk}"))
            continue
        waited = stack.waits_for(resource)
        if not any(s.urn in waited for s in sources):
            names = ", ".join(label(s) for s in sources)
            findings.append(Finding("SLM-SIM-003", label(resource), f"does not wait for {names}, which installs {gvk}"))
    findings += _references(stack, facts) + _release_secrets(stack)
    return findings


def _release_secrets(stack: Stack) -> list[Finding]:
    """Secrets a release's values name (e.g. Grafana's admin) exist and are created before it."""
    findings = []
    secrets = {(r.inputs["metadata"].get("namespace"), r.inputs["metadata"].get("name")): r for r in stack.manifests("Secret")}
    for release in stack.releases():
        profile = chart_profile(release)
        for path in profile.secret_refs if profile else ():
            name = dig(release.inputs.get("values") or {}, path)
            if not name:
                continue
            secret = secrets.get((release.inputs.get("namespace"), name))
            if secret is None:
                findings.append(Finding("SLM-SIM-004", label(release), f"{path} names Secret {name!r}, which nothing creates"))
            elif secret.urn not in stack.waits_for(release):
                findings.append(Finding("SLM-SIM-003", label(release), f"does not wait for Secret {name!r} that {path} names"))
    return findings


def _references(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings: list[Finding] = []
    aks = stack.cluster is not None
    enabled = set(_enabled_addons(stack, facts))
    addons = {a.id: a for a in facts.addons}
    classes = {c for a in facts.addons if a.id in enabled for c in a.ingress_classes}
    drivers = {d for a in facts.addons if a.id in enabled for d in a.csi_drivers}
    secrets = {(r.inputs["metadata"].get("namespace"), r.inputs["metadata"].get("name")) for r in stack.manifests("Secret")}
    if not aks:
        return findings  # an existing cluster's classes and drivers are the operator's to provide
    for ingress in stack.manifests("Ingress"):
        spec = ingress.inputs.get("spec", {})
        cls = spec.get("ingressClassName")
        if cls not in classes:
            findings.append(
                Finding("SLM-SIM-004", label(ingress), f"IngressClass {cls!r} is provided by nothing the program enables")
            )
        ns = ingress.inputs["metadata"].get("namespace")
        annotations = ingress.inputs["metadata"].get("annotations") or {}
        for tls in spec.get("tls") or []:
            secret = tls.get("secretName")
            routing = addons["app-routing"]
            synced = (
                "app-routing" in enabled
                and routing.tls_secret_prefix is not None
                and secret == f"{routing.tls_secret_prefix}{ingress.inputs['metadata']['name']}"
                and "kubernetes.azure.com/tls-cert-keyvault-uri" in annotations
            )
            if not synced and (ns, secret) not in secrets:
                findings.append(Finding("SLM-SIM-004", label(ingress), f"TLS secret {secret!r} is created by nothing"))
    for pvc in stack.manifests("PersistentVolumeClaim"):
        cls = dig(pvc.inputs, "spec.storageClassName")
        if cls and cls not in facts.storage_classes.values:
            findings.append(Finding("SLM-SIM-004", label(pvc), f"storage class {cls!r} is not one AKS provides"))
    for workload in stack.manifests("Deployment", "StatefulSet", "Job", "DaemonSet"):
        for volume in dig(workload.inputs, "spec.template.spec.volumes", []) or []:
            driver = dig(volume, "csi.driver")
            if driver and driver not in drivers:
                findings.append(
                    Finding("SLM-SIM-004", label(workload), f"CSI driver {driver!r} is installed by nothing the program enables")
                )
    for scaler in stack.manifests("ScaledObject"):
        for trigger in dig(scaler.inputs, "spec.triggers", []) or []:
            address = dig(trigger, "metadata.serverAddress")
            if trigger.get("type") == "prometheus" and address and not _served(stack, address):
                findings.append(Finding("SLM-SIM-004", label(scaler), f"Prometheus at {address} is installed by nothing"))
    return findings


def _served(stack: Stack, address: str) -> bool:
    """A `<service>.<namespace>.svc` address is served by a release in that namespace whose name
    prefixes the service (how kube-prometheus-stack names its Prometheus service)."""
    host = urlparse(address).hostname or ""
    parts = host.split(".")
    if len(parts) < 3 or parts[2] != "svc":
        return True  # an address outside the cluster: not ours to check
    service, namespace = parts[0], parts[1]
    for release in stack.releases():
        name = str(release.inputs.get("name", ""))
        if release.inputs.get("namespace") == namespace and service.startswith(name):
            return True
    return any(
        s.inputs["metadata"].get("name") == service and s.inputs["metadata"].get("namespace") == namespace
        for s in stack.manifests("Service")
    )
