"""What `slm-deploy init` asks, as one strict typed answers model: each default stated once."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from slm_deploy.errors import from_validation_error
from slm_deploy.spec import Frozen, Runtime

# What a requirement line may not hold: the placeholders of the examples in `--help`, the README and
# the error for a local install. A line holding one fails the scaffold's first command (`pip install
# -r requirements.txt`), so it is refused before anything is written.
PLACEHOLDERS = re.compile(r"\b(OWNER|REPO|HOST|FULL_COMMIT_SHA|COMMIT|HASH|VERSION)\b")
# A pool's VM size when none is given: the GPU runtimes' and runtime onnx's (a CPU pool).
DEFAULT_VM_SIZES = {"gpu": "Standard_NC8as_T4_v3", "cpu": "Standard_D8ds_v5"}


class InitChoices(Frozen):
    """What `slm-deploy init` asks; each default is stated here once."""

    stacks: tuple[str, ...] = Field(default=("dev", "staging", "prod"), min_length=1)
    location: str = Field(default="westeurope", pattern=r"^[a-z0-9]+$")
    model: str = Field(default="phi-4-mini-instruct", min_length=1)
    runtime: Runtime = Runtime.VLLM
    # None: DEFAULT_VM_SIZES for the runtime (a GPU size, or a CPU size for runtime onnx).
    vm_size: str | None = Field(default=None, pattern=r"^Standard_[A-Za-z0-9_]+$")
    # None: AKS's drivers on a GRID (vGPU) size, which the GPU Operator's driver cannot bring up;
    # the program's default (the GPU Operator) otherwise.
    gpu_driver: Literal["operator", "aks"] | None = None
    # Runtime onnx serves your own build of its server (`slm-deploy image onnx`): no registry publishes it.
    image: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
    )
    context: int = Field(default=8192, ge=512)
    # No default (issue 11): a guessed range locks the deployer out of the API server.
    api_ranges: tuple[str, ...] = Field(min_length=1)
    edge_gpu: str = Field(default="l4", min_length=1)
    fleet: str = Field(default="edge", pattern=r"^[a-z0-9][a-z0-9-]*$")
    package: str | None = Field(
        default=None,
        pattern=r"^slm[-_]deploy *(== *[0-9][A-Za-z0-9.+!_-]*|@ *[a-z+]+://[^\s]+)$",
        description="The requirement line for slm-deploy (default: how the running slm-deploy was installed).",
    )

    @field_validator("package")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        found = PLACEHOLDERS.search(value or "")
        if found:
            raise ValueError(
                f"{found.group(1)} is a placeholder: name the repository (or wheel URL) and full commit your CI installs "
                "slm-deploy from; requirements.txt gets this line and `pip install -r requirements.txt` must resolve"
            )
        return value

    @model_validator(mode="after")
    def _runtime_needs(self) -> InitChoices:
        if self.runtime is Runtime.ONNX and self.image is None:
            raise ValueError(
                "runtime onnx serves your own build of its server image, which no registry publishes: pass --image "
                "REGISTRY/REPOSITORY:TAG (where you will push it); after init, `slm-deploy image onnx STACK --out DIR` "
                "writes its build context and `slm-deploy lock --images` pins it"
            )
        if self.runtime is not Runtime.ONNX and self.image is not None:
            raise ValueError("--image is for runtime onnx only: the other runtimes run the catalog's pinned images")
        return self

    @property
    def cpu_only(self) -> bool:
        """Runtime onnx runs on a CPU pool (and a CPU edge box)."""
        return self.runtime is Runtime.ONNX

    @property
    def pool_vm_size(self) -> str:
        return self.vm_size or DEFAULT_VM_SIZES["cpu" if self.cpu_only else "gpu"]

    @property
    def driver(self) -> str | None:
        """The stack's gpuDriver when it is not the program's default."""
        if self.cpu_only:
            return None
        if self.gpu_driver is not None:
            return None if self.gpu_driver == "operator" else self.gpu_driver
        from slm_deploy.catalog.platform import load_aks_facts

        size = load_aks_facts().node_size(self.pool_vm_size)
        return "aks" if size is not None and size.driver == "grid" else None

    @field_validator("stacks")
    @classmethod
    def _stack_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise ValueError(f"stack name {name!r}: lower-case letters, digits and '-' only")
        if len(set(value)) != len(value):
            raise ValueError("stack names must be unique")
        return value

    @field_validator("api_ranges")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR range") from None
            if network.prefixlen == 0:
                raise ValueError(f"{cidr!r} lets every address reach the API server")
        return value


def parse_choices(values: dict[str, Any]) -> InitChoices:
    try:
        return InitChoices.model_validate(values)
    except ValidationError as exc:
        raise from_validation_error("arguments", exc) from None
