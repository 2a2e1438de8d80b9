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

from slm_deploy.catalog import load_catalog
from slm_deploy.planner import GIB, Plan
from slm_deploy.spec import Runtime

PLAN_FILE = "plan.json"
FORMAT = 1


@dataclass(frozen=True)
class Tolerance:
    fraction: float
    why: str
    only_below: bool = False  # more than planned is reported, not failed


@cache
def _gate_data() -> dict[str, Any]:
    text = resources.files("slm_deploy.catalog").joinpath("plan_gate.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _words(text: object) -> str:
    return " ".join(str(text).split())


@cache
def tolerances() -> dict[str, dict[str, Tolerance]]:
    """engine -> check name -> Tolerance (catalog/plan_gate.yaml)."""
    return {
        engine: {
            name: Tolerance(float(e["tolerance"]), _words(e["why"]), bool(e.get("only_below", False)))
            for name, e in checks.items()
        }
        for engine, checks in _gate_data()["engines"].items()
    }


def ollama_architecture(weights_source: str) -> str | None:
    """general.architecture of an ollama.com library model (catalog/plan_gate.yaml), or None."""
    ref = weights_source.removeprefix("ollama://")
    name = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    parts = name.lower().split("/")
    if parts[:-1] not in ([], ["library"], ["registry.ollama.ai", "library"]):
        return None  # another namespace or registry: not a library model
    known: dict[str, str] = _gate_data()["ollama_engine"]["library_architectures"]
    return known.get(parts[-1])


def _ollama_unchecked(plan: Plan) -> str:
    """Why Ollama prints no memory summary for this model, or '' when it does."""
    engine = _gate_data()["ollama_engine"]
    arch = ollama_architecture(plan.weights_source)
    if arch is None:
        return (
            f"the architecture of {plan.weights_source.removeprefix('ollama://')} is unknown to slm-deploy, "
            f"and Ollama prints its memory summary only for models on its own engine ({engine['source']})"
        )
    if arch not in engine["architectures"]:
        return (
            f"Ollama's older runner prints no memory summary: {arch} models do not run on "
            f"Ollama's own engine ({engine['source']})"
        )
    return ""


def _tied_embeddings(plan: Plan) -> bool | None:
    """Whether the plan's model ties its embeddings (the catalog knows), or None (unknown)."""
    entry = load_catalog().models.get(plan.model)
    return None if entry is None else entry.tie_word_embeddings


def server_entry(
    engine: str,
    service: str,
    model: str,
    context: int,
    slots: int,
    planned: dict[str, int],
    not_checked: str = "",
    skipped: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One model server's entry; `planned` maps check names (catalog/plan_gate.yaml) to figures."""
    known = tolerances().get(engine, {})
    checks = []
    for name, value in sorted(planned.items()):
        tolerance = known[name]  # a check without a stated tolerance is a programming error
        checks.append(
            {
                "name": name,
                "planned": int(value),
                "tolerance": tolerance.fraction,
                "only_below": tolerance.only_below,
                "why": tolerance.why,
            }
        )
    return {
        "service": service,
        "engine": engine,
        "model": model,
        "context": context,
        "slots": slots,
        "checks": checks,
        "not_checked": not_checked if not checks else "",
        "skipped": dict(sorted((skipped or {}).items())),
    }


def _pad(value: int, to: int) -> int:
    return -(-value // to) * to


def llamacpp_cells_per_slot(plan: Plan) -> int:
    """The full-attention cache's cells per slot: -c (context x slots) and -c / -np each padded to
    256 cells (src/llama-context.cpp:292-298 at b11434; the bundle passes -c and -np, planner/gguf.py)."""
    slots = max(plan.concurrency, 1)
    return _pad(_pad(plan.context * slots, 256) // slots, 256)


def planned_figures(plan: Plan) -> tuple[dict[str, int], dict[str, str]]:
    """What the engine of `plan` reports at start-up, as the planner planned it, and the figures it
    reports that are not compared here, each with the reason."""
    weights = round(plan.weights_gib * GIB)  # per GPU: vLLM's weights are divided by tensor_parallel
    kv_bytes = plan.kv_bytes_per_token * plan.kv_tokens  # a slot per sequence, each the full context (planner/gguf.py)
    if plan.runtime == Runtime.LLAMACPP.value:
        figures = {"kv_cache_bytes": kv_bytes, "kv_cells_per_slot": llamacpp_cells_per_slot(plan), "weights_bytes": weights}
        tied = _tied_embeddings(plan)
        if plan.resources.gpu_count and tied is not False:
            del figures["weights_bytes"]
            why = _words(_gate_data()["llamacpp_gpu_tied_embeddings"])
            if tied is None:
                why += f" (whether {plan.model} ties its embeddings is unknown to slm-deploy)"
            return figures, {"weights_bytes": why}
        return figures, {}
    if plan.runtime == Runtime.OLLAMA.value:
        # Not the weights: a registry GGUF mixes quantization types, and the figure has one decimal.
        return {"kv_cache_bytes": kv_bytes}, {}
    if plan.runtime == Runtime.VLLM.value:
        return {"kv_cache_tokens": plan.kv_tokens, "weights_bytes": weights}, {}
    return {}, {}


def plan_document(box_id: str, fleet: str, service: str, plans: tuple[Plan, ...]) -> str:
    servers = []
    for plan in plans:
        figures, skipped = planned_figures(plan)
        why = ""
        if not figures:
            why = f"no start-up line of {plan.runtime} with its KV cache is known to slm-deploy"
        elif len(plans) > 1:
            # Ollama's summary (ml/device.go:201-239 at v0.12.6) does not name the model it loaded.
            figures, why = {}, "several models share one Ollama server and its memory summary does not name the model"
        elif plan.runtime == Runtime.OLLAMA.value:
            why = _ollama_unchecked(plan)
            if why:
                figures = {}
        entry = server_entry(plan.runtime, service, plan.model, plan.context, plan.concurrency, figures, why, skipped)
        servers.append(entry)
    document = {"format": FORMAT, "fleet": fleet, "box": box_id, "servers": servers}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
