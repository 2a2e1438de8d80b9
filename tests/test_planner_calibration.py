"""Planner figures calibrated on real runtime logs (the numbers come from issue 14's logs)."""

from __future__ import annotations

import pytest

from slm_deploy.planner import plan
from slm_deploy.spec import GpuAttachment, Hardware, Serving

L4 = Hardware(cpus=8, memory_gib=64, gpu=GpuAttachment(model="l4"))


@pytest.mark.parametrize(("context", "observed_gib"), [(4096, 0.30), (32768, 1.8)])
def test_the_gguf_compute_buffer_grows_with_context_as_ollama_logs_it(context: int, observed_gib: float) -> None:
    # Ollama 0.20, a 7B Q4_K_M model (Qwen2.5-7B, 28 heads) fully on the GPU: "compute buffer"
    # 0.30 GiB at 4k context and 1.8 GiB at 32k. The buffer holds one micro-batch's attention
    # scores over the whole context, so it grows with it.
    result = plan(Serving(model="qwen2.5-7b-instruct", runtime="ollama", context=context, concurrency=1), L4)
    assert result.activation_gib == pytest.approx(observed_gib, rel=0.1)


def test_the_compute_buffer_covers_every_slot() -> None:
    # Ollama and llama.cpp allocate one context of num_ctx x num_parallel tokens.
    one = plan(Serving(model="qwen2.5-7b-instruct", runtime="llamacpp", context=4096, concurrency=1), L4)
    four = plan(Serving(model="qwen2.5-7b-instruct", runtime="llamacpp", context=4096, concurrency=4), L4)
    assert four.activation_gib > one.activation_gib + 0.5


def test_the_vllm_constants_are_those_of_the_pinned_vllm_release() -> None:
    from slm_deploy.catalog import load_catalog
    from slm_deploy.planner import VLLM_PROFILES, vllm_profile

    catalog = load_catalog()
    assert vllm_profile(catalog) is VLLM_PROFILES["0.11"]
    assert catalog.images["vllm"].tag.startswith("v0.11.")


def test_bumping_the_vllm_image_without_a_reviewed_profile_is_refused() -> None:
    from slm_deploy.catalog import load_catalog
    from slm_deploy.errors import InputError

    catalog = load_catalog()
    bumped = catalog.model_copy(
        update={"images": {**catalog.images, "vllm": catalog.images["vllm"].model_copy(update={"tag": "v0.99.0"})}}
    )
    with pytest.raises(
        InputError, match=r"^images.yaml: images.vllm.tag: vLLM v0.99.0 has no reviewed planner profile \(known: 0.11\)"
    ):
        plan(Serving(model="qwen3-8b"), L4, catalog=bumped)
