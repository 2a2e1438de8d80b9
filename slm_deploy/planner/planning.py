"""The planner's entry points: one model on a machine (or the cheapest one), several models sharing one."""

from __future__ import annotations

import math
from dataclasses import replace

from slm_deploy.catalog import Catalog, load_catalog
from slm_deploy.planner.build import build_plan
from slm_deploy.planner.evaluate import evaluate, resolve_request
from slm_deploy.planner.lookup import resolve_model, resolve_target
from slm_deploy.planner.memory import GIB, gib
from slm_deploy.planner.recommend import recommend
from slm_deploy.planner.suggest import suggest
from slm_deploy.planner.types import Fit, Plan, Request, Target
from slm_deploy.planner.vllm import vllm_profile
from slm_deploy.spec import Hardware, Runtime, Serving


def plan(
    serving: Serving,
    hardware: Hardware | None,
    *,
    catalog: Catalog | None = None,
    source: str = "spec",
    serving_path: str = "",
    hardware_path: str = "hardware",
) -> Plan:
    """Plan `serving` on `hardware`, or on the cheapest catalog VM size when hardware is None.

    Raises InputError for references that do not resolve (unknown model or GPU). A plan that
    does not fit is returned with fits=False, a reason and suggestions; callers decide.
    """
    catalog = catalog or load_catalog()
    vllm = vllm_profile(catalog)
    model = resolve_model(serving, catalog, source, f"{serving_path}.model".lstrip("."))
    if hardware is None:
        probe = resolve_request(serving, model, Target("gpu", None, 1, Hardware(cpus=1, memory_gib=1)), vllm)
        found = recommend(probe, Hardware(cpus=1, memory_gib=1), catalog)
        if found is None:
            target = Target("gpu", catalog.gpus["h100-80gb"], 8, Hardware(cpus=96, memory_gib=1900))
            req = resolve_request(serving, model, target, vllm)
            fit = replace(evaluate(req, target), fits=False, reason="no catalog GPU size fits this model and workload")
            return build_plan(req, target, fit, suggest(req, target, fit, catalog))
        target = found[0]
        req = replace(
            resolve_request(serving, model, target, vllm), tp=target.gpu_count if serving.runtime is Runtime.VLLM else 1
        )
    else:
        target = resolve_target(hardware, catalog, source, hardware_path)
        req = resolve_request(serving, model, target, vllm)
    fit = evaluate(req, target)
    suggestions = () if fit.fits else suggest(req, target, fit, catalog)
    return build_plan(req, target, fit, suggestions)


def plan_colocated(
    servings: tuple[Serving, ...],
    hardware: Hardware,
    *,
    catalog: Catalog | None = None,
    source: str = "spec",
    serving_paths: tuple[str, ...] = (),
    hardware_path: str = "hardware",
) -> tuple[Plan, ...]:
    """Plan several models that share one machine.

    Each model alone must fit; then the device budget is split in proportion to what each needs
    for its own context x concurrency (weights, overheads, KV cache). vLLM instances get that
    share of gpu_memory_utilization (each process also keeps its own CUDA context and graphs
    outside the budget); the GGUF runtimes get that share of the device or RAM budget.
    """
    catalog = catalog or load_catalog()
    vllm = vllm_profile(catalog)
    paths = serving_paths or tuple(f"models[{i}]" for i in range(len(servings)))
    if len(servings) == 1:
        return (
            plan(
                servings[0],
                hardware,
                catalog=catalog,
                source=source,
                serving_path=paths[0],
                hardware_path=hardware_path,
            ),
        )
    target = resolve_target(hardware, catalog, source, hardware_path)
    reqs = [
        resolve_request(s, resolve_model(s, catalog, source, f"{p}.model"), target, vllm)
        for s, p in zip(servings, paths, strict=True)
    ]
    fits = [evaluate(r, target) for r in reqs]
    if not all(f.fits for f in fits):
        return tuple(
            build_plan(r, target, f, () if f.fits else suggest(r, target, f, catalog), len(reqs))
            for r, f in zip(reqs, fits, strict=True)
        )
    needs = [f.budget - f.kv_cache + _needed_kv(r, f) if _is_vllm(r, target) else f.used for r, f in zip(reqs, fits, strict=True)]
    budget = min(f.budget for f in fits)
    total_need = sum(needs)
    problem = None
    if total_need > budget:
        problem = f"together the {len(reqs)} models need {gib(total_need)} GiB; the budget is {gib(budget)} GiB"
    elif target.gpu is not None and any(_is_vllm(r, target) for r in reqs):
        outside = len(reqs) * vllm.outside_budget_gib * GIB
        if target.gpu.memory_gib * GIB - budget < outside:
            problem = f"{len(reqs)} vLLM processes need {gib(outside)} GiB outside their budgets for CUDA contexts"
    plans = []
    for req, need in zip(reqs, needs, strict=True):
        share = need / total_need
        if _is_vllm(req, target):
            shared = replace(req, util=math.floor(req.util * share * 1000) / 1000)
        else:
            shared = replace(req, share=share)
        fit = evaluate(shared, target)
        if problem is not None:
            fit = replace(fit, fits=False, reason=problem)
        plans.append(build_plan(shared, target, fit, (), len(reqs)))
    return tuple(plans)


def _is_vllm(req: Request, target: Target) -> bool:
    return req.runtime is Runtime.VLLM and target.gpu is not None


def _needed_kv(req: Request, fit: Fit) -> float:
    return fit.kv_per_token * req.context * req.concurrency


# ---------------------------------------------------------------------------------------------
