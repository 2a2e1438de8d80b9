"""The node labels and taints both halves of the program agree on: the AKS pools (stacks/azure) put
them on their nodes, the workloads (stacks/k8s) select and tolerate them."""

from __future__ import annotations

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = f"{GPU_RESOURCE}=present:NoSchedule"
# CPU model servers only: the gateway, monitoring and platform pods stay off these nodes.
CPU_MODELS_TAINT = "slm.dev/cpu-models=true:NoSchedule"
POOL_LABEL = "slm.dev/pool"  # a pool's name on its nodes; a model server's nodeSelector on AKS
ACCELERATOR_LABEL = "slm.dev/accelerator"
PLATFORM_POOL = "platform"
