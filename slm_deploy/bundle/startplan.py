"""plan.json: what the rollout's plan-versus-actual gate holds a box's model server to (issue 25).

Per model server, the figures its own start-up report can be compared with (KV cache, weights),
taken from the planner's Plan, each with the tolerance and its reason from
catalog/plan_gate.yaml. The box-side checker (slm_deploy/rollout/planguard.py) reads the engine's
log lines and this file; nothing here is recomputed from the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from slm_deploy.planner import GIB, Plan
from slm_deploy.spec import Runtime

PLAN_FILE = "plan.json"
FORMAT = 1


@dataclass(frozen=True)
class Tolerance:
    fraction: float
    why: str


@cache
def tolerances() -> dict[str, dict[str, Tolerance]]:
    """engine -> check name -> Tolerance (catalog/plan_gate.yaml)."""
    text = resources.files("slm_deploy.catalog").joinpath("plan_gate.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return {
        engine: {name: Tolerance(float(e["tolerance"]), " ".join(str(e["why"]).split())) for name, e in checks.items()}
        for engine, checks in data["engines"].items()
    }


def server_entry(
    engine: str, service: str, model: str, context: int, slots: int, planned: dict[str, int], not_checked: str = ""
) -> dict[str, Any]:
    """One model server's entry; `planned` maps check names (catalog/plan_gate.yaml) to figures."""
    known = tolerances().get(engine, {})
    checks = []
    for name, value in sorted(planned.items()):
        tolerance = known[name]  # a check without a stated tolerance is a programming error
        checks.append({"name": name, "planned": int(value), "tolerance": tolerance.fraction, "why": tolerance.why})
    return {
        "service": service,
        "engine": engine,
        "model": model,
        "context": context,
        "slots": slots,
        "checks": checks,
        "not_checked": not_checked if not checks else "",
    }


def planned_figures(plan: Plan) -> dict[str, int]:
    """What the engine of `plan` reports at start-up, as the planner planned it."""
    weights = round(plan.weights_gib * GIB)
    kv_bytes = plan.kv_bytes_per_token * plan.kv_tokens  # a slot per sequence, each the full context (planner/gguf.py)
    if plan.runtime == Runtime.LLAMACPP.value:
        return {"kv_cache_bytes": kv_bytes, "weights_bytes": weights}
    if plan.runtime == Runtime.OLLAMA.value:
        # Not the weights: a registry GGUF mixes quantization types, and the figure has one decimal.
        return {"kv_cache_bytes": kv_bytes}
    if plan.runtime == Runtime.VLLM.value:
        return {"kv_cache_tokens": plan.kv_tokens, "weights_bytes": weights}
    return {}


def plan_document(box_id: str, fleet: str, service: str, plans: tuple[Plan, ...]) -> str:
    servers = []
    for plan in plans:
        figures = planned_figures(plan)
        why = ""
        if not figures:
            why = f"no start-up line of {plan.runtime} with its KV cache is known to slm-deploy"
        elif len(plans) > 1:
            # Ollama's summary (ml/device.go:201-239 at v0.12.6) does not name the model it loaded.
            figures, why = {}, "several models share one Ollama server and its memory summary does not name the model"
        servers.append(server_entry(plan.runtime, service, plan.model, plan.context, plan.concurrency, figures, why))
    document = {"format": FORMAT, "fleet": fleet, "box": box_id, "servers": servers}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
