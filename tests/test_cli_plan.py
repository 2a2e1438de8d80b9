from __future__ import annotations

import json

from tests.conftest import run_cli

REQUIRED_KEYS = {
    "fits",
    "weights_gib",
    "kv_bytes_per_token",
    "kv_cache_gib",
    "kv_tokens",
    "max_concurrent_sequences",
    "runtime_args",
    "reason",
    "suggestions",
}


def test_plan_json_has_the_documented_fields() -> None:
    out = run_cli("plan", "--model", "phi-4-mini-instruct", "--gpu", "l4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= REQUIRED_KEYS
    assert data["fits"] is True and data["kv_bytes_per_token"] == 131072


def test_plan_accepts_hf_repo_ids_and_azure_vm_sizes() -> None:
    out = run_cli("plan", "--model", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "Standard_NC48ads_A100_v4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == "qwen2.5-7b-instruct" and data["tensor_parallel"] == 2


def test_plan_without_hardware_recommends_a_size() -> None:
    out = run_cli("plan", "--model", "qwen3-14b", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["hardware"].startswith("Standard_NC24ads_A100_v4")


def test_readable_table_by_default() -> None:
    out = run_cli("plan", "--model", "qwen3-4b", "--runtime", "ollama", "--cpu", "--cpus", "8", "--memory-gib", "16")
    assert out.returncode == 0, out.stderr
    assert "OLLAMA_NUM_PARALLEL=4" in out.stdout and "fits" in out.stdout


def test_unknown_model_is_exit_2_with_nearest_ids() -> None:
    out = run_cli("plan", "--model", "qwen3-8", "--gpu", "l4")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "qwen3-8b" in out.stderr and "Traceback" not in out.stderr


def test_unknown_gpu_is_exit_2_with_nearest_ids() -> None:
    out = run_cli("plan", "--model", "qwen3-8b", "--gpu", "a100-80")
    assert out.returncode == 2 and "a100-80gb" in out.stderr and out.stderr.count("\n") == 1


def test_a_plan_that_cannot_fit_is_exit_2_with_reason_and_suggestions() -> None:
    out = run_cli("plan", "--model", "qwen3-32b", "--gpu", "l4", "--json")
    assert out.returncode == 2
    data = json.loads(out.stdout)
    assert data["fits"] is False and data["reason"] and data["suggestions"]
    assert "does not fit" in out.stderr and "try:" in out.stderr


def test_invalid_combination_is_one_clear_line() -> None:
    out = run_cli("plan", "--model", "qwen3-8b", "--runtime", "ollama", "--quantization", "awq", "--cpu")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: arguments: quantization 'awq' is not available on ollama; choose one of fp16, q8_0, q5_k_m, q4_k_m"
    )


def test_usage_errors_are_one_line_too() -> None:
    for args in (("plan", "--model", "qwen3-8b", "--context", "0"), ("plan",), ("no-such-command",)):
        out = run_cli(*args)
        assert out.returncode == 2
        assert out.stderr.startswith("error: arguments: ") and out.stderr.count("\n") == 1, out.stderr


def test_vllm_on_a_cpu_suggests_a_gguf_runtime_and_tp_stays_on_the_box() -> None:
    out = run_cli("plan", "--model", "qwen3-0.6b", "--cpu", "--json")
    assert out.returncode == 2
    assert {s["change"] for s in json.loads(out.stdout)["suggestions"]} >= {"runtime=ollama"}
    out = run_cli("plan", "--model", "qwen3-0.6b", "--gpu", "l4", "--gpu-count", "2", "--tensor-parallel", "3", "--json")
    assert out.returncode == 2
    assert "tensor_parallel=1" in {s["change"] for s in json.loads(out.stdout)["suggestions"]}
