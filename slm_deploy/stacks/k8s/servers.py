"""Model servers: one component per runtime, every size taken from the Plan.

Each server owns a model-cache PVC (ReadWriteMany, so every replica shares one download), a Job
that fetches the model into it (the only pods allowed to reach the internet), a Deployment that
waits for the fetched model, a ClusterIP Service, a PodDisruptionBudget, an autoscaler (KEDA on
vLLM's queue, CPU HPA for runtimes without a queue metric), its network policies and, where the
runtime exports metrics, a PodMonitor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import pulumi
from pulumi_kubernetes.apps.v1 import Deployment, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.batch.v1 import Job, JobSpecArgs
from pulumi_kubernetes.core.v1 import (
    PersistentVolumeClaim,
    PersistentVolumeClaimSpecArgs,
    PersistentVolumeClaimVolumeSourceArgs,
    PodTemplateSpecArgs,
    VolumeArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from slm_deploy.catalog import Catalog
from slm_deploy.observability.scrape import HEALTH_PATH
from slm_deploy.planner import Plan
from slm_deploy.runtimes import FETCH_JOB_CPU_MILLIS, METRICS_PATH, MODEL_DIR, RuntimeSpec, runtime_spec
from slm_deploy.spec import Runtime
from slm_deploy.stacks.k8s.common import (
    Probes,
    Sizes,
    disruption_budget,
    gib,
    labels,
    metrics_monitor,
    mount,
    port,
    profiled_container,
    scratch_volume,
)
from slm_deploy.stacks.k8s.namespace import SECRETS_PATH, SECRETS_VOLUME
from slm_deploy.stacks.k8s.netpol import server_network_policies
from slm_deploy.stacks.k8s.server_scaling import server_autoscaler
from slm_deploy.stacks.k8s.server_settings import ServerSettings, identity_label, node_selector, tolerations
from slm_deploy.stacks.k8s.workload import cluster_service, config_files, serving_deployment, serving_pod
from slm_deploy.stacks.placement import GPU_RESOURCE

READY_MARKER = f"{MODEL_DIR}/.slm-ready"
READINESS_PATH = {
    Runtime.VLLM: "/v1/models",
    Runtime.OLLAMA: "/api/tags",
    Runtime.LLAMACPP: "/v1/models",
    Runtime.ONNX: "/v1/models",
}
# onnx: Foundry Local's admin `/status` (no /health), what the launcher's --check asks on edge boxes.
LIVENESS_PATH = {runtime: HEALTH_PATH[runtime.value] for runtime in Runtime}
# (failureThreshold, timeoutSeconds) of liveness where the default 3 x 5 s is too tight: Foundry Local
# answers /status late while a request keeps every core of the node busy (2 minutes before a restart).
LIVENESS_TOLERANCE = {Runtime.ONNX: (6, 10)}


# torch calls getpass.getuser(), which raises KeyError for a uid without a passwd entry (uid 10001
# in these images); USER/LOGNAME answer it first. TorchInductor's cache goes to the writable /tmp.
# vllm-project/vllm#44548, kserve/kserve#5666.
VLLM_IDENTITY_ENV = {"USER": "slm", "LOGNAME": "slm", "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor"}


@dataclass(frozen=True)
class _Parts:
    """What a server's fetch Job and Deployment are built from."""

    name: str
    ns: str
    plan: Plan
    spec: RuntimeSpec
    settings: ServerSettings
    models: VolumeArgs  # the model cache (the server's PVC)
    config: list[VolumeArgs]  # the runtime's files, when it has any
    child: pulumi.ResourceOptions


class ModelServer(pulumi.ComponentResource):
    """Common shape of the three runtime components; subclasses only name their type token."""

    TYPE = "slm:k8s:ModelServer"
    RUNTIME: Runtime = Runtime.VLLM
    service_name: pulumi.Output[str]
    port: int

    def __init__(
        self,
        name: str,
        *,
        plan: Plan,
        catalog: Catalog,
        settings: ServerSettings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        runtime = Runtime(plan.runtime)
        if self.RUNTIME is not runtime:
            raise ValueError(f"{type(self).__name__} serves {self.RUNTIME.value}; the plan is for {runtime.value}")
        if not plan.fits:
            raise ValueError(f"{name}: the plan does not fit: {plan.reason}")
        super().__init__(self.TYPE, name, None, opts)
        spec = self._runtime_spec(name, plan, catalog)
        ns = settings.namespace.name
        child = pulumi.ResourceOptions(parent=self)
        res = plan.resources
        self.port = spec.port
        pvc = PersistentVolumeClaim(
            f"{name}-models",
            metadata=ObjectMetaArgs(name=f"{name}-models", namespace=ns, labels=labels(name, "model-cache")),
            spec=PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteMany"],
                storage_class_name=settings.storage_class,
                resources=VolumeResourceRequirementsArgs(requests={"storage": f"{res.cache_disk_gib}Gi"}),
            ),
            opts=child,
        )
        models = VolumeArgs(
            name="models", persistent_volume_claim=PersistentVolumeClaimVolumeSourceArgs(claim_name=pvc.metadata.name)
        )
        parts = _Parts(name, ns, plan, spec, settings, models, self._config_volumes(name, ns, spec, child), child)
        job = self._fetch_job(parts)
        deployment = self._deployment(parts, job)
        service = cluster_service(name, ns, "model-server", {"http": spec.port}, child)
        disruption_budget(name, ns, child)
        server_autoscaler(self, name, ns, plan, settings, deployment)
        server_network_policies(name, ns, spec.port, child)
        if settings.monitoring_release is not None and runtime in METRICS_PATH:
            # Every replica is scraped directly (PodMonitor), not through the Service. Its CRD comes
            # with the monitoring release: wait for it (pulumi-kubernetes retries a missing CRD ~1 min).
            metrics_monitor(
                name,
                ns,
                kind="PodMonitor",
                role="model-server",
                port_name="http",
                path=METRICS_PATH[runtime],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[settings.monitoring_release]),
            )
        self.service_name = service.metadata.name
        self.register_outputs({"serviceName": service.metadata.name, "port": spec.port, "deployment": deployment.metadata.name})

    def _runtime_spec(self, name: str, plan: Plan, catalog: Catalog) -> RuntimeSpec:
        return runtime_spec((plan,), catalog, False, name)

    def _config_volumes(self, name: str, ns: str, spec: RuntimeSpec, child: pulumi.ResourceOptions) -> list[VolumeArgs]:
        if not spec.files:
            return []
        return [config_files(name, ns, {path.rsplit("/", 1)[1]: text for path, text in sorted(spec.files.items())}, child)]

    def _fetch_job(self, parts: _Parts) -> Job:
        name, ns, plan, spec, settings = parts.name, parts.ns, parts.plan, parts.spec, parts.settings
        assert spec.fetch is not None
        fetch = spec.fetch
        digest = hashlib.sha256(plan.weights_source.encode()).hexdigest()[:8]
        mounts = [mount("models", MODEL_DIR), mount("tmp", "/tmp")]
        volumes = [
            parts.models,
            scratch_volume("tmp", "2Gi"),
        ]
        if parts.config:
            volumes += parts.config
            mounts.append(mount("config", "/config", read_only=True))
        if spec.uses_hf_token and settings.has_hf_token:
            volumes.append(settings.namespace.secrets_volume(["hf_token"]))
            mounts.append(mount(SECRETS_VOLUME, SECRETS_PATH, read_only=True))
        command = ["/bin/sh", "-c", f'set -e; "$@"; touch {READY_MARKER}', "fetch", *fetch["entrypoint"]]
        return Job(
            f"{name}-fetch",
            metadata=ObjectMetaArgs(
                name=f"{name}-fetch-{digest}",
                namespace=ns,
                labels=labels(name, "model-fetch"),
                # The download can take longer than Pulumi's await; the server waits for it instead.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=JobSpecArgs(
                backoff_limit=6,
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels={**labels(name, "model-fetch"), **identity_label(settings)}),
                    spec=serving_pod(
                        restart_policy="OnFailure",
                        tolerations=tolerations(settings, settings.gpu_pool),
                        node_selector=node_selector(settings),
                        containers=[
                            profiled_container(
                                "fetch",
                                fetch["image"],
                                command=command,
                                env=self._fetch_environment(spec),
                                sizes=Sizes(
                                    requests={"cpu": f"{FETCH_JOB_CPU_MILLIS}m", "memory": "1Gi", "ephemeral-storage": "512Mi"},
                                    limits={"cpu": "2", "memory": "4Gi", "ephemeral-storage": "3Gi"},
                                ),
                                mounts=mounts,
                            )
                        ],
                        volumes=volumes,
                    ),
                ),
            ),
            opts=parts.child,
        )

    @staticmethod
    def _environment(spec: RuntimeSpec) -> dict[str, str]:
        # runtimes.py may already set these (the edge bundles need them too); never override it.
        extra = VLLM_IDENTITY_ENV if spec.runtime is Runtime.VLLM else {}
        return {**extra, **spec.environment}

    @staticmethod
    def _fetch_environment(spec: RuntimeSpec) -> dict[str, str]:
        assert spec.fetch is not None
        # The fetch job runs the server's image as the same uid.
        extra = VLLM_IDENTITY_ENV if spec.runtime is Runtime.VLLM else {}
        return {**extra, **spec.fetch["environment"]}

    @staticmethod
    def _strategy(gpu_count: int) -> DeploymentStrategyArgs:
        # A GPU server cannot surge: there is rarely a spare GPU for a second copy. A CPU server is
        # planned on a whole node (host vCPUs less an allowance), so a surge pod would need a node
        # beyond the replicas' and stays Pending when the pool is at maxCount: replace one replica at
        # a time instead. Not Recreate: with two or more replicas the others keep serving meanwhile.
        if gpu_count:
            return DeploymentStrategyArgs(type="Recreate")
        return DeploymentStrategyArgs(
            type="RollingUpdate", rolling_update=RollingUpdateDeploymentArgs(max_surge=0, max_unavailable=1)
        )

    def _deployment(self, parts: _Parts, job: Job) -> Deployment:
        name, ns, plan, spec, settings = parts.name, parts.ns, parts.plan, parts.spec, parts.settings
        res = plan.resources
        read_only_models = spec.runtime is not Runtime.OLLAMA  # Ollama writes manifests next to its models
        mounts = [
            mount("models", MODEL_DIR, read_only=read_only_models),
            mount("tmp", "/tmp"),
            mount("shm", "/dev/shm"),
        ]
        volumes = [
            parts.models,
            scratch_volume("tmp", "4Gi"),
            scratch_volume("shm", gib(res.shm_gib), memory=True),
            *parts.config,
        ]
        gpu = {GPU_RESOURCE: str(res.gpu_count)} if res.gpu_count else {}
        # Room to burst above the request, but never more than the node has (a limit above it means nothing).
        cpu_limit = f"{min(res.cpu_request * 2, settings.node_vcpus or res.cpu_request * 2):g}"
        container = profiled_container(
            spec.runtime.value,
            spec.image,
            command=spec.entrypoint,
            args=spec.command,
            env=self._environment(spec),
            ports=[port(spec.port, "http")],
            # ephemeral-storage covers the 4 GiB /tmp emptyDir (compile caches) and the logs.
            sizes=Sizes(
                requests={
                    "cpu": f"{res.cpu_request:g}",
                    "memory": f"{res.memory_request_gib}Gi",
                    "ephemeral-storage": "1Gi",
                    **gpu,
                },
                limits={"cpu": cpu_limit, "memory": f"{res.memory_limit_gib}Gi", "ephemeral-storage": "5Gi", **gpu},
            ),
            # Downloading and loading weights takes a time that grows with their size; the
            # startup probe allows it, so liveness never kills a server that is still loading.
            probes=Probes.over_http(
                spec.port,
                ready=READINESS_PATH[spec.runtime],
                live=LIVENESS_PATH[spec.runtime],
                startup=(res.probe_period_seconds, res.startup_failure_threshold),
                live_tolerance=LIVENESS_TOLERANCE.get(spec.runtime),
            ),
            mounts=mounts,
        )
        wait = profiled_container(
            "wait-for-model",
            spec.image,
            command=["/bin/sh", "-c", f"until [ -f {READY_MARKER} ]; do echo waiting for the model; sleep 10; done"],
            sizes=Sizes(
                requests={"cpu": "10m", "memory": "32Mi", "ephemeral-storage": "16Mi"},
                limits={"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
            ),
            mounts=[mount("models", MODEL_DIR, read_only=True)],
        )
        autoscaled = settings.autoscaling.max_replicas > settings.autoscaling.min_replicas or (
            settings.autoscaling.min_replicas == 0
        )
        timeout = res.startup_budget_seconds + 600
        return serving_deployment(
            name,
            ns,
            "model-server",
            pod=serving_pod(
                grace_seconds=60,
                tolerations=tolerations(settings, res.gpu_count > 0),
                node_selector=node_selector(settings),
                spread_over=name,
                init_containers=[wait],
                containers=[container],
                volumes=volumes,
            ),
            replicas=None if autoscaled else settings.autoscaling.min_replicas,
            identity=identity_label(settings),
            annotations={"pulumi.com/timeoutSeconds": str(timeout)},
            strategy=self._strategy(res.gpu_count),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )


class VllmServer(ModelServer):
    TYPE = "slm:k8s:VllmServer"
    RUNTIME = Runtime.VLLM


class OllamaServer(ModelServer):
    TYPE = "slm:k8s:OllamaServer"
    RUNTIME = Runtime.OLLAMA


class LlamaCppServer(ModelServer):
    TYPE = "slm:k8s:LlamaCppServer"
    RUNTIME = Runtime.LLAMACPP


def server_image_id(name: str) -> str:
    """The catalog id under which a model's own image (models[].image, runtime onnx) is pinned."""
    return f"model-{name}"


class OnnxServer(ModelServer):
    """ONNX Runtime GenAI served by Foundry Local through slm-deploy's launcher, on a CPU pool.

    No registry publishes that server: it runs the user's image, built from `slm-deploy image onnx`
    (the edge bundle's Dockerfile: pinned python base, hash-checked wheels, the launcher), pushed,
    and pinned by the lock (`models[].image`). The fetch Job runs the same image and downloads the
    variant's folder of the ONNX repo only. No /metrics: the gateway's metrics carry the dashboard,
    and the HPA scales on CPU as for ollama and llama.cpp."""

    TYPE = "slm:k8s:OnnxServer"
    RUNTIME = Runtime.ONNX

    def _runtime_spec(self, name: str, plan: Plan, catalog: Catalog) -> RuntimeSpec:
        spec = super()._runtime_spec(name, plan, catalog)
        image = catalog.images.get(server_image_id(name))
        if image is None:
            raise ValueError(f"{name}: runtime onnx runs models[].image, which is not in the catalog given (pin_model_images)")
        assert spec.fetch is not None
        # The fetch (HF_HOME on the model volume) and the environment (CI=true: Foundry Local's native
        # library then skips its telemetry) are the edge bundle's (runtimes.onnx_runtime); only the
        # image differs. The build context (requirements, launcher) is in it: no ConfigMap of it here.
        return replace(spec, image=image.ref, fetch={**spec.fetch, "image": image.ref}, files={}, dockerfile=None)


SERVERS: dict[Runtime, type[ModelServer]] = {
    Runtime.VLLM: VllmServer,
    Runtime.OLLAMA: OllamaServer,
    Runtime.LLAMACPP: LlamaCppServer,
    Runtime.ONNX: OnnxServer,
}
