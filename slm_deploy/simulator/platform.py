"""Platform facts: the VM family against the GPU driver mode, the ephemeral OS disk against the
size's temp disk, every name the program sets or leaves to auto-naming against Azure's and
Kubernetes' rules, and Helm values against the pinned chart version."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from slm_deploy.catalog.platform import AksFacts, today
from slm_deploy.simulator.model import Finding, Stack, chart_profile, dig, label

AUTONAME_SUFFIX = 8  # Pulumi's auto-naming appends a random suffix of this length
POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
RELEASE_NAME_MAX = 53
DNS_LABEL_KINDS = ("Namespace", "Service", "Deployment", "StatefulSet", "DaemonSet", "Job", "Secret", "ConfigMap", "Ingress")


def check(stack: Stack, facts: AksFacts) -> list[Finding]:
    return [
        *_pools(stack, facts),
        *_names(stack, facts),
        *_values(stack),
        *_chart_images(stack),
        *_root_containers(stack),
        *_upgrade(stack, facts),
        *_image_env(stack, facts),
        *_dates(stack, facts),
        *_placeholders(stack, facts),
    ]


def _dates(stack: Stack, facts: AksFacts) -> list[Finding]:
    """Kubernetes minor and add-on facts with dates (catalog/aks.yaml), against today (SLM_TODAY pins it)."""
    cluster = stack.cluster
    if cluster is None:
        return []
    now = today()
    ahead = now + dt.timedelta(days=facts.warn_days)
    findings = []
    where = label(cluster)
    version = str(cluster.inputs.get("kubernetesVersion") or "")
    calendar = facts.kubernetes_versions
    minor = calendar.minor(version) if version else None
    lts = cluster.inputs.get("supportPlan") == calendar.lts.support_plan
    if lts and dig(cluster.inputs, "sku.tier") != calendar.lts.tier:
        findings.append(Finding("SLM-SIM-019", where, f"the LTS plan needs the {calendar.lts.tier} tier ({calendar.source})"))
    if version and minor is None:
        findings.append(Finding("SLM-SIM-019", where, f"Kubernetes {version} is not in AKS's release calendar"))
    elif minor is not None:
        end = minor.lts_end_of_life if lts and minor.lts_end_of_life else minor.end_of_life
        kind = "LTS end of life" if lts else "end of life"
        if now < minor.ga:
            findings.append(Finding("SLM-SIM-019", where, f"Kubernetes {minor.minor} is not GA on AKS before {minor.ga}"))
        elif end < now:
            findings.append(
                Finding(
                    "SLM-SIM-019", where, f"Kubernetes {minor.minor} passed its {kind} on {end}: AKS creates no cluster with it"
                )
            )
        elif end <= ahead:
            findings.append(
                Finding(
                    "SLM-SIM-019",
                    where,
                    f"Kubernetes {minor.minor} reaches its {kind} on {end} ({(end - now).days} days): AKS then force-upgrades "
                    "the cluster and the pinned version becomes a downgrade; move to a newer minor",
                )
            )
    if minor is not None:
        findings.extend(_chart_windows(stack, minor.minor))
    addons = cluster.inputs.get("addonProfiles") or {}
    for retired in facts.retirements:
        if retired.note_only or retired.date > ahead:
            continue
        addon = addons.get(retired.addon) or {}
        if not addon.get("enabled"):
            continue
        config = addon.get("config") or {}
        if retired.unless_config and all(config.get(k) == v for k, v in retired.unless_config.items()):
            continue
        when = "retired on" if retired.date < now else "retires on"
        findings.append(Finding("SLM-SIM-019", where, f"{retired.what} {when} {retired.date}: {retired.instead}"))
    return findings


def _chart_windows(stack: Stack, minor: str) -> list[Finding]:
    """A release whose pinned chart version is not validated for the cluster's Kubernetes minor
    (chart_profiles.yaml `kubernetes`: the range its vendor validates, with the source)."""
    findings = []
    for release in stack.releases():
        profile = chart_profile(release)
        problem = profile.outside_kubernetes(minor) if profile else None
        if problem:
            findings.append(Finding("SLM-SIM-019", label(release), problem))
    return findings


def _placeholders(stack: Stack, facts: AksFacts) -> list[Finding]:
    """An example value in what a resource sends to Azure or Kubernetes (catalog/aks.yaml placeholders)."""
    if facts.placeholders.allowed():
        return []
    findings = []
    for resource in stack.resources:
        if not resource.custom:
            continue
        hit = _first_placeholder(resource.inputs, facts)
        if hit:
            path, value = hit
            findings.append(Finding("SLM-SIM-021", label(resource), f"{path}: {value} is an example value"))
    return findings


def _first_placeholder(value: Any, facts: AksFacts, path: str = "") -> tuple[str, str] | None:
    if isinstance(value, dict):
        for key in sorted(value):
            found = _first_placeholder(value[key], facts, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_placeholder(item, facts, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, str):
        hit = facts.placeholders.in_text(value)
        if hit:
            return path, hit
    return None


def _upgrade(stack: Stack, facts: AksFacts) -> list[Finding]:
    cluster = stack.cluster
    if cluster is None or not cluster.inputs.get("kubernetesVersion"):
        return []
    channel = dig(cluster.inputs, "autoUpgradeProfile.upgradeChannel")
    if channel in facts.minor_upgrade_channels.values and "kubernetesVersion" not in cluster.ignore_changes:
        return [
            Finding(
                "SLM-SIM-013",
                label(cluster),
                f"channel {channel} upgrades the cluster past kubernetesVersion, which Pulumi still manages",
            )
        ]
    return []


def _image_env(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings = []
    images = facts.passwd_less_images
    for workload in stack.manifests("Deployment", "StatefulSet", "Job", "DaemonSet"):
        pod = dig(workload.inputs, "spec.template.spec", {}) or {}
        for container in pod.get("containers") or []:
            repository = str(container.get("image", "")).split("@")[0].rsplit(":", 1)[0]
            if repository not in images.values:
                continue
            user = dig(container, "securityContext.runAsUser", dig(pod, "securityContext.runAsUser"))
            if user in (None, 0):
                continue
            names = {e.get("name") for e in container.get("env") or []}
            missing = [n for n in images.env if n not in names]
            if missing:
                findings.append(
                    Finding(
                        "SLM-SIM-014", label(workload), f"{container.get('name')} runs as uid {user} without {', '.join(missing)}"
                    )
                )
    return findings


def _pools(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings = []
    cluster = stack.cluster
    profiles = [(label(cluster), p) for p in (cluster.inputs.get("agentPoolProfiles") or [])] if cluster else []
    profiles += [
        (label(r), {**r.inputs, "name": r.inputs.get("agentPoolName", r.name)})
        for r in stack.of_type("azure-native:containerservice:AgentPool")
    ]
    for where, pool in profiles:
        size = facts.node_size(str(pool.get("vmSize")))
        if not POOL_NAME.match(str(pool.get("name", ""))):
            findings.append(
                Finding(
                    "SLM-SIM-011",
                    where,
                    f"pool name {pool.get('name')!r}: 1-12 lowercase letters and digits, starting with a letter",
                )
            )
        if size is None:
            findings.append(
                Finding("SLM-SIM-009", where, f"{pool.get('vmSize')} has no platform facts (driver family, temp disk)")
            )
            continue
        driver = dig(pool, "gpuProfile.driver")
        if size.driver == "grid" and driver == "None":
            findings.append(
                Finding(
                    "SLM-SIM-009",
                    where,
                    f"{size.id} is a GRID family: with gpuProfile.driver None the operator's datacenter driver cannot run it",
                )
            )
        if size.driver == "none" and driver is not None:
            findings.append(Finding("SLM-SIM-009", where, f"{size.id} has no GPU, yet the pool sets a GPU driver"))
        if pool.get("osDiskType") == "Ephemeral":
            disk = int(pool.get("osDiskSizeGB") or 128)
            if disk > size.temp_disk_gib:
                findings.append(
                    Finding(
                        "SLM-SIM-010",
                        where,
                        f"ephemeral OS disk {disk} GB exceeds {size.id}'s {size.temp_disk_gib} GiB temp disk",
                    )
                )
        profile = pool.get("gpuInstanceProfile")
        if profile and profile not in facts.mig_profiles.values:
            findings.append(Finding("SLM-SIM-009", where, f"MIG profile {profile} is not one AKS accepts"))
    return findings


def _names(stack: Stack, facts: AksFacts) -> list[Finding]:
    findings = []
    rules = facts.names
    cluster = stack.cluster
    if cluster is not None:
        prefix = str(cluster.inputs.get("dnsPrefix", ""))
        rule = rules["dns_prefix"]
        if len(prefix) > rule.max or not re.match(rule.pattern, prefix):
            findings.append(Finding("SLM-SIM-011", label(cluster), f"dnsPrefix {prefix!r}: {rule.source}"))
    for vault in stack.of_type("azure-native:keyvault:Vault"):
        rule = rules["key_vault"]
        name = vault.inputs.get("vaultName")
        if isinstance(name, str) and not name.startswith("<"):
            if len(name) > rule.max or not re.match(rule.pattern, name):
                findings.append(Finding("SLM-SIM-011", label(vault), f"vault name {name!r}: {rule.source}"))
        elif name is None and len(vault.name) + AUTONAME_SUFFIX > rule.max:
            findings.append(
                Finding(
                    "SLM-SIM-011",
                    label(vault),
                    f"auto-name {vault.name!r} plus an {AUTONAME_SUFFIX}-character suffix exceeds {rule.max}",
                )
            )
    rule = rules["kubernetes"]
    for resource in stack.manifests():
        name = str(resource.inputs["metadata"].get("name", ""))
        if resource.inputs["kind"] in DNS_LABEL_KINDS and (len(name) > rule.max or not re.match(rule.pattern, name)):
            findings.append(Finding("SLM-SIM-011", label(resource), f"name {name!r} is not a DNS label ({rule.source})"))
    for release in stack.releases():
        name = str(release.inputs.get("name", ""))
        if len(name) > RELEASE_NAME_MAX:
            findings.append(Finding("SLM-SIM-011", label(release), f"Helm release name longer than {RELEASE_NAME_MAX}"))
    return findings


def _chart_images(stack: Stack) -> list[Finding]:
    """Each image a release runs (chart profile `images`) pinned by digest in the spelling its chart
    version reads: a tag alone can be moved; a digest in the wrong spelling fails to render or to pull."""
    findings = []
    for release in stack.releases():
        profile = chart_profile(release)
        values = release.inputs.get("values") or {}
        for entry in profile.images if profile else ():
            block = dig(values, entry.values)
            if not entry.pinned(block):
                findings.append(
                    Finding(
                        "SLM-SIM-015",
                        label(release),
                        f"{entry.values} runs {entry.reference(block) or 'the chart default'} without a digest: "
                        f"set {entry.digest_key} = {entry.wanted()}",
                    )
                )
    return findings


def _root_containers(stack: Stack) -> list[Finding]:
    """A container the chart runs as root whenever all its `when` values hold (chart defaults apply)."""
    findings = []
    for release in stack.releases():
        profile = chart_profile(release)
        values = release.inputs.get("values") or {}
        for root in profile.root_containers if profile else ():
            if all(dig(values, path, default) is True for path, default in root.when.items()):
                findings.append(Finding("SLM-SIM-016", label(release), f"runs {root.container}; instead: {root.instead}"))
    return findings


def _values(stack: Stack) -> list[Finding]:
    findings = []
    for release in stack.releases():
        profile = chart_profile(release)
        if profile is None:
            continue
        values = release.inputs.get("values") or {}
        if stack.cluster is not None:
            for path, wanted in sorted(profile.aks_values.items()):
                if dig(values, path, True) != wanted:
                    findings.append(
                        Finding("SLM-SIM-012", label(release), f"{path} must be {wanted} on AKS ({profile.aks_values_source})")
                    )
        for path, wanted in sorted(profile.upgrade_values.items()):
            if dig(values, path) != wanted:
                findings.append(
                    Finding("SLM-SIM-012", label(release), f"{path} must be {wanted} for upgrades ({profile.upgrade_source})")
                )
        for key, wanted in sorted(profile.upgrade_release_inputs.items()):
            if release.inputs.get(key) != wanted:
                findings.append(
                    Finding("SLM-SIM-012", label(release), f"{key} must be {wanted} for upgrades ({profile.upgrade_source})")
                )
        for section, known in profile.known_keys.items():
            for key in sorted(set(values.get(section) or {}) - set(known)):
                findings.append(
                    Finding("SLM-SIM-012", label(release), f"{section}.{key} does not exist in {profile.id} {profile.version}")
                )
    return findings
