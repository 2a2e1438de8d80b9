"""GPU drivers and the device plugin: the NVIDIA GPU Operator, or AKS-installed drivers plus the
device plugin DaemonSet. `nvidia.com/gpu` is only advertised once one of them runs."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs

from slm_deploy.catalog import Catalog
from slm_deploy.environment import GpuDriver
from slm_deploy.stacks.k8s.chart_images import pin_chart_images
from slm_deploy.stacks.k8s.common import GPU_TOLERATION_VALUES, toleration_values


class GpuSupport(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        driver: GpuDriver,
        catalog: Catalog,
        monitoring: bool,
        extra_gpu_taints: tuple[str, ...] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:GpuSupport", name, None, opts)
        chart = catalog.charts["gpu-operator"]
        # With AKS-installed drivers (gpuProfile.driver Install) the chart runs only the device
        # plugin, MIG manager and DCGM exporter; otherwise it installs the driver and toolkit too.
        installs_driver = driver is GpuDriver.OPERATOR
        values: dict[str, object] = {
            "driver": {"enabled": installs_driver},
            "toolkit": {"enabled": installs_driver},
            "devicePlugin": {"enabled": True},
            "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": monitoring}},
            "migManager": {"enabled": True},
            # The operator's daemon sets tolerate the GPU taint and whatever else AKS puts on the
            # GPU pools (spot), and nothing more.
            "daemonsets": {"tolerations": [GPU_TOLERATION_VALUES, *toleration_values(extra_gpu_taints)]},
            "node-feature-discovery": {"worker": {"tolerations": [{"operator": "Exists"}]}},
            "psa": {"enabled": True},
        }
        if not installs_driver:
            # AKS node images ship the driver and the container toolkit, whose containerd handler is
            # nvidia-container-runtime (NVIDIA, "GPU Operator with Azure Kubernetes Service",
            # preinstalled driver and toolkit). v25.3.4 has no operator.defaultRuntime value.
            values["operator"] = {"runtimeClass": "nvidia-container-runtime"}
        # Every image it runs by the locked digest (chart_profiles.yaml `images`; feature discovery
        # runs the device plugin's image).
        pin_chart_images(values, chart, catalog)
        release = Release(
            f"{name}-gpu-operator",
            ReleaseArgs(
                name="gpu-operator",
                chart=chart.chart,
                version=chart.version,
                namespace="gpu-operator",
                create_namespace=True,
                repository_opts=RepositoryOptsArgs(repo=chart.repository),
                values=values,
                atomic=True,
                timeout=900,
                # operator.upgradeCRD's pre-upgrade hook updates the CRDs, but only if Helm first accepts
                # a ClusterPolicy with the new fields: the chart asks for --disable-openapi-validation
                # (gpu-operator v25.3.4 deployments/gpu-operator/values.yaml, operator.upgradeCRD).
                disable_openapi_validation=True,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": release.name})
