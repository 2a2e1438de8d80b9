"""GPU drivers and the device plugin: the NVIDIA GPU Operator, or AKS-installed drivers plus the
device plugin DaemonSet. `nvidia.com/gpu` is only advertised once one of them runs."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs

from generator.catalog import Catalog
from generator.environment import GpuDriver


class GpuSupport(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        driver: GpuDriver,
        catalog: Catalog,
        monitoring: bool,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("slm:k8s:GpuSupport", name, None, opts)
        if driver is GpuDriver.OPERATOR:
            chart = catalog.charts["gpu-operator"]
            values = {
                "driver": {"enabled": True},
                "toolkit": {"enabled": True},
                "devicePlugin": {"enabled": True},
                "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": monitoring}},
                "migManager": {"enabled": True},
                # Run the operator's own pods only where they must run, and never on the system pool.
                "daemonsets": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
                "node-feature-discovery": {"worker": {"tolerations": [{"operator": "Exists"}]}},
                "operator": {"defaultRuntime": "containerd"},
                "psa": {"enabled": True},
            }
        else:
            # AKS installs the drivers (gpuProfile.driver Install); the chart then runs only the
            # device plugin and DCGM exporter.
            chart = catalog.charts["gpu-operator"]
            values = {
                "driver": {"enabled": False},
                "toolkit": {"enabled": False},
                "devicePlugin": {"enabled": True},
                "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": monitoring}},
                "operator": {"defaultRuntime": "containerd"},
                "psa": {"enabled": True},
            }
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
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"release": release.name})
