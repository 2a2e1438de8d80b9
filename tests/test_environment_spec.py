"""What a stack file is told when a pool's or a model's bounds are the wrong way round, or an API
server range is one no deployer comes from: the exact one-line error, naming the file and the key."""

from __future__ import annotations

from typing import Any

import pytest

from slm_deploy.environment import plan_environment
from slm_deploy.errors import InputError
from tests.test_aks_fixes import stack_config


def _refusal(config: dict[str, Any]) -> str:
    with pytest.raises(InputError) as caught:
        plan_environment("dev", config)
    return str(caught.value)


def test_a_gpu_pool_with_more_minimum_than_maximum_nodes_is_refused() -> None:
    config = stack_config("dev")
    config["gpuPools"][0].update(minCount=3, maxCount=2)
    assert _refusal(config) == "Pulumi.dev.yaml: slm-deploy:gpuPools[0]: minCount cannot exceed maxCount"


def test_a_cpu_pool_with_more_minimum_than_maximum_nodes_is_refused() -> None:
    config = stack_config("dev")
    config["cpuPools"] = [{"name": "cpu", "vmSize": "Standard_D8ds_v5", "minCount": 2, "maxCount": 1}]
    assert _refusal(config) == "Pulumi.dev.yaml: slm-deploy:cpuPools[0]: minCount cannot exceed maxCount"


def test_a_model_with_more_minimum_than_maximum_replicas_is_refused() -> None:
    config = stack_config("dev")
    config["models"][0]["autoscaling"].update(minReplicas=2, maxReplicas=1)
    assert _refusal(config) == "Pulumi.dev.yaml: slm-deploy:models[0].autoscaling: minReplicas cannot exceed maxReplicas"


@pytest.mark.parametrize(
    ("cidr", "reason"),
    [
        ("0.0.0.0/0", "0.0.0.0/0: together these ranges admit every public IPv4 address; the API server would be open"),
        ("192.0.2.0/24", "192.0.2.0/24 is in the documentation range 192.0.2.0/24 ("),
    ],
)
def test_an_api_server_range_no_deployer_comes_from_is_refused(cidr: str, reason: str) -> None:
    config = stack_config("dev")
    config["cluster"]["apiServer"] = {"authorizedIpRanges": [cidr]}
    assert f"cluster.apiServer.authorizedIpRanges: {reason}" in _refusal(config)
