"""The simulator's rules: one id each, like the other rules (SLM-K8S-..., SLM-AZ-...)."""

from __future__ import annotations

from dataclasses import dataclass

from slm_deploy.policies.model import Severity


@dataclass(frozen=True)
class SimRule:
    id: str
    check: str  # scheduling | ordering | access | autoscaling | platform
    title: str
    severity: Severity
    rationale: str
    fix: str


SIM_RULES: tuple[SimRule, ...] = (
    SimRule(
        "SLM-SIM-001",
        "scheduling",
        "Every pod fits a node pool that can scale to hold it",
        Severity.HIGH,
        "A pod that fits no pool stays Pending; an atomic Helm release then rolls back after its timeout.",
        "Give the pod tolerations/nodeSelector/requests that match a pool, or add a pool it fits.",
    ),
    SimRule(
        "SLM-SIM-002",
        "scheduling",
        "GPU daemon sets reach every GPU pool",
        Severity.HIGH,
        "A driver/device-plugin daemon set that does not tolerate a GPU pool's taints leaves its GPUs unusable.",
        "Add tolerations for every taint the GPU pools carry (the GPU taint, AKS's spot taint).",
    ),
    SimRule(
        "SLM-SIM-003",
        "ordering",
        "Custom resources wait for what installs their CRD",
        Severity.HIGH,
        "pulumi-kubernetes retries a missing CRD for about a minute only; a CR created before its CRD fails the update.",
        "Make the CR depend on the Helm release (or the cluster whose add-on) that installs its CRD.",
    ),
    SimRule(
        "SLM-SIM-004",
        "ordering",
        "Class, controller and driver references resolve",
        Severity.HIGH,
        "An IngressClass, storage class, CSI driver, TLS secret or metrics server nothing provides never becomes ready.",
        "Install what the reference names (release or AKS add-on), or point it at what the cluster provides.",
    ),
    SimRule(
        "SLM-SIM-005",
        "access",
        "The deployer can reach the API server",
        Severity.CRITICAL,
        "A private API server, or authorized ranges that exclude the runner, lock `pulumi up` and `destroy` out.",
        "Public API server with the runner's egress in authorizedIpRanges (see README, Runner requirements).",
    ),
    SimRule(
        "SLM-SIM-006",
        "access",
        "The deployer is authorized on the API server before Kubernetes calls",
        Severity.CRITICAL,
        "With Azure RBAC for Kubernetes and local accounts off, a principal without a data-plane role gets 403.",
        "Assign AKS RBAC Cluster Admin to the deployer on the cluster, wait for propagation, make the provider depend on it.",
    ),
    SimRule(
        "SLM-SIM-007",
        "access",
        "Workload identity chains are complete before their consumers",
        Severity.HIGH,
        "A pod whose service account, federated credential or vault role is missing or not yet created cannot mount secrets.",
        "Create identity, federated credential, role assignment and secrets, and make the workloads depend on them.",
    ),
    SimRule(
        "SLM-SIM-008",
        "autoscaling",
        "Autoscalers follow load within bounds and come back",
        Severity.MEDIUM,
        "An autoscaler that misses its maximum under load, leaves its bounds or never scales back wastes GPUs or drops requests.",
        "Fix the trigger's query/threshold and the min/max bounds.",
    ),
    SimRule(
        "SLM-SIM-009",
        "platform",
        "The GPU driver mode suits the VM family",
        Severity.HIGH,
        "GRID (vGPU) families need AKS's GRID driver; the GPU Operator's datacenter driver does not bring them up.",
        "Use an NC-family size, or gpuDriver: aks.",
    ),
    SimRule(
        "SLM-SIM-010",
        "platform",
        "Ephemeral OS disks fit the VM size's temp disk",
        Severity.HIGH,
        "AKS rejects a pool whose ephemeral OS disk exceeds the size's cache/temp disk (VMCacheSizeTooSmall).",
        "Use at most the temp disk size, or a managed OS disk.",
    ),
    SimRule(
        "SLM-SIM-011",
        "platform",
        "Names follow Azure and Kubernetes rules",
        Severity.HIGH,
        "A name too long or with characters the service refuses fails at creation, often late in an update.",
        "Derive names from a sanitised, length-capped base.",
    ),
    SimRule(
        "SLM-SIM-012",
        "platform",
        "Helm values exist in the pinned chart version and suit AKS",
        Severity.MEDIUM,
        "Helm ignores values the chart does not read: a setting that does not exist silently does nothing.",
        "Use the values the pinned chart version documents, and those the chart profile requires on AKS.",
    ),
    SimRule(
        "SLM-SIM-013",
        "platform",
        "An upgrade channel that moves the minor version owns kubernetesVersion",
        Severity.HIGH,
        "After an automatic minor upgrade the pinned version is older than the cluster: the next update tries a downgrade.",
        "Ignore changes to kubernetesVersion when the channel is stable or rapid.",
    ),
    SimRule(
        "SLM-SIM-014",
        "platform",
        "Non-root containers of passwd-less images know their user",
        Severity.HIGH,
        "torch's getpass.getuser() raises KeyError for a uid without a passwd entry; vLLM then fails at start.",
        "Set USER, LOGNAME and TORCHINDUCTOR_CACHE_DIR in the container's environment.",
    ),
    SimRule(
        "SLM-SIM-015",
        "platform",
        "Every image a Helm release runs is pinned by digest",
        Severity.MEDIUM,
        "A tag can be moved on the registry: two installs of the same release can run different bits. Each chart "
        "spells the digest its own way (sha with or without sha256:, or digest); a wrong spelling fails to render or pull.",
        "Run `slm-deploy lock` so every chart image in images.yaml has a lock entry (not --allow-unlocked).",
    ),
    SimRule(
        "SLM-SIM-016",
        "platform",
        "No chart container runs as root",
        Severity.HIGH,
        "A root container with added capabilities (e.g. an init container that chowns a volume) breaks a restricted "
        "Pod Security level and widens what a compromised image can do; the chart's values can make it unnecessary.",
        "Set the chart values the finding names so the container does not run (the pod's fsGroup does its job).",
    ),
    SimRule(
        "SLM-SIM-017",
        "access",
        "Images from a private Azure registry have a pull path",
        Severity.HIGH,
        "Nodes pull as the cluster's kubelet identity: without AcrPull on the registry every pull is 401 (ErrImagePull) "
        "and the server's rollout waits out its timeout.",
        "List the registry in `cluster.acrIds` (AcrPull for the kubelet identity, before the servers), or give the pods "
        "imagePullSecrets.",
    ),
    SimRule(
        "SLM-SIM-018",
        "scheduling",
        "Rolling updates can make progress",
        Severity.HIGH,
        "A RollingUpdate with maxSurge > 0 starts the new pod before an old one stops: when the pool at its maximum "
        "node count cannot hold maxReplicas plus the surge, the new pod stays Pending and the rollout never ends.",
        "Use maxSurge 0 / maxUnavailable 1 (or Recreate) for pods that fill a node, or raise the pool's maxCount.",
    ),
    SimRule(
        "SLM-SIM-019",
        "platform",
        "Dated platform facts hold today and for the next 90 days",
        Severity.HIGH,
        "AKS creates no cluster with a minor past its end of life, force-upgrades clusters leaving platform support "
        "(a pinned older minor is then a downgrade), and retires add-on behaviour on fixed dates: a stack that was "
        "right when written stops working on a date nobody re-reads. A chart run on a Kubernetes minor its vendor "
        "has not validated (the GPU Operator's platform support) is the same drift seen from the other side.",
        "Move kubernetesVersion to a minor in support (catalog/aks.yaml kubernetes_versions), or enable LTS (Premium "
        "tier); replace retired add-on settings as the finding says; keep each chart within its validated minors "
        "(catalog/chart_profiles.yaml `kubernetes`).",
    ),
    SimRule(
        "SLM-SIM-020",
        "access",
        "Every identity can do its part of up and destroy",
        Severity.HIGH,
        "The cluster's identity joins new nodes to our subnet (autoscaler), ARM checks a role assignment's principal "
        "type, and destroy deletes Key Vault secrets through the vault's data plane: a missing role or an unreachable "
        "endpoint fails a scale-out, the first CI up or every destroy.",
        "Network Contributor on the node subnet for a user-assigned control-plane identity, and a wait for it to propagate, "
        "before the cluster; "
        "principalType from cluster.deployerPrincipalType; secrets deleted with their vault.",
    ),
    SimRule(
        "SLM-SIM-021",
        "platform",
        "No example value reaches a deployment",
        Severity.CRITICAL,
        "Example CIDRs lock the runner out of the API server, all-zero subscription ids and example.* registries "
        "or hosts fail at creation or at the first pull.",
        "Put your own values where the stack file says REPLACE (run example stacks only with SLM_EXAMPLE_STACKS=1).",
    ),
    # 030-039: refresh drift and transitions between two states (slm_deploy.simulator.transitions;
    # facts in catalog/transitions.yaml). "transitions" rules need the previous state too: they run
    # in `preview --from` and tests/test_transitions.py, not in simulate().
    SimRule(
        "SLM-SIM-030",
        "refresh",
        "A refresh shows no drift",
        Severity.MEDIUM,
        "AKS and controllers write into resources after creation (the spot taint and label of a spot pool, every pool "
        "in the cluster's agentPoolProfiles, the autoscaler's node count); after `pulumi refresh` every `up` then "
        "shows a diff and PUTs the declared value back (AKS-11, AKS-12).",
        "Declare what AKS writes (the spot pair in nodeTaints/nodeLabels) or ignore the path (ignore_changes).",
    ),
    SimRule(
        "SLM-SIM-031",
        "transitions",
        "An `up` from the previous state is not refused and loses no data",
        Severity.HIGH,
        "Immutable fields make Pulumi replace a resource (a node pool, the cluster, a volume) and some updates the API "
        "refuses outright (a Kubernetes downgrade, a skipped minor, purge protection off); Helm never upgrades a "
        "chart's CRDs; some vendors support a chart upgrade only one release train at a time (the GPU Operator).",
        "Keep the immutable field, add a new resource beside the old one, retain what holds data, or upgrade the CRDs "
        "with the chart's own mechanism, step a chart through the releases its vendor names (`slm-deploy preview "
        "STACK --from PREVIOUS` lists each case).",
    ),
)
BY_ID = {rule.id: rule for rule in SIM_RULES}
