"""Hugging Face Hub resolution with `huggingface_hub`: model info, config.json, safetensors headers.

Nothing but headers is downloaded: the safetensors header of each shard is read with two ranged
GETs (huggingface_hub's parse_safetensors_file_metadata), which gives every tensor's dtype and
shape, hence the exact parameter count and weight bytes. The endpoint, token and cache are read
from the environment at call time (HF_ENDPOINT, HF_TOKEN or the token file, HF_HOME), not when
huggingface_hub was imported, so one process can plan against several hubs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from slm_deploy.errors import InputError
from slm_deploy.resolve import ResolvedModel, cache
from slm_deploy.resolve.config import Checkpoint, ConfigProblem, Tensor, read_checkpoint

DEFAULT_ENDPOINT = "https://huggingface.co"
KIND = "hf"
T = TypeVar("T")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"


def hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or hf_home() / "hub")


def token() -> str | None:
    """HF_TOKEN, else the token file `hf auth login` writes (HF_TOKEN_PATH or $HF_HOME/token)."""
    value = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if value:
        return value.strip()
    path = Path(os.environ.get("HF_TOKEN_PATH") or hf_home() / "token")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _api() -> Any:
    from huggingface_hub import HfApi

    # token=False: never fall back to a token huggingface_hub found at import time.
    return HfApi(endpoint=endpoint(), token=token() or False, library_name="slm-deploy")


def _call(func: Callable[[], T], repo: str, revision: str | None, source: str, field: str) -> T:
    """One Hub call, its failures as one clear InputError."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return func()
    except GatedRepoError:
        if token():
            raise InputError(source, field, f"{repo} is gated and this token has no access to it; accept its terms") from None
        raise InputError(source, field, f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise InputError(source, field, f"{repo} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        hint = "" if token() else " (a private repo needs HF_TOKEN)"
        raise InputError(source, field, f"no model {repo!r} on the Hub at {endpoint()}{hint}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status == 429:
            raise _Unreachable(f"HTTP {status}") from None  # a Hub outage: the cached revision still serves
        raise InputError(source, field, f"the Hub answered HTTP {status} for {repo}") from None
    except (httpx2.HTTPError, OSError, OfflineModeIsEnabled) as exc:
        raise _Unreachable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


class _Unreachable(Exception):
    pass


def _tensors(api: Any, repo: str, sha: str, files: list[str], source: str, field: str) -> dict[str, Tensor] | None:
    names = set(files)
    if "model.safetensors" in names:
        shards = ["model.safetensors"]
    elif "model.safetensors.index.json" in names:
        index_path = _call(
            lambda: api.hf_hub_download(repo, "model.safetensors.index.json", revision=sha, cache_dir=hub_cache()),
            repo, sha, source, field,
        )  # fmt: skip
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
        shards = sorted(set((index.get("weight_map") or {}).values()))
    else:
        return None
    out: dict[str, Tensor] = {}
    for shard in shards:
        meta = _call(
            lambda s=shard: api.parse_safetensors_file_metadata(repo, s, revision=sha),  # type: ignore[misc]
            repo, sha, source, field,
        )  # fmt: skip
        for name, info in meta.tensors.items():
            out[name] = Tensor(str(info.dtype), tuple(int(d) for d in info.shape))
    return out


def checkpoint_from_files(
    config: dict[str, Any], tensors: dict[str, Tensor] | None, repo: str, source: str, field: str
) -> Checkpoint:
    try:
        return read_checkpoint(config, tensors)
    except ConfigProblem as exc:
        raise InputError(source, field, f"{repo}: config.json: {exc.field}: {exc}") from None


def _from_cache(ref: str, repo: str, revision: str | None, source: str, field: str, why: str) -> ResolvedModel:
    wanted = revision or "main"
    sha = wanted if len(wanted) == 40 else cache.revision_for(KIND, repo, wanted)
    data = cache.load(KIND, repo, sha) if sha else None
    if data is None:
        raise InputError(source, field, f"{repo}@{wanted} is not in the resolve cache ({cache.cache_root()}) and {why}")
    return ResolvedModel.from_json(data)


def resolve_hf(ref: str, repo: str, revision: str | None, source: str, field: str) -> ResolvedModel:
    if cache.offline():
        return _from_cache(ref, repo, revision, source, field, "HF_HUB_OFFLINE is set; plan once online first")
    if revision and len(revision) == 40:
        hit = cache.load(KIND, repo, revision)
        if hit is not None:
            return ResolvedModel.from_json(hit)
    api = _api()
    try:
        info = _call(lambda: api.model_info(repo, revision=revision), repo, revision, source, field)
        sha = str(info.sha or revision or "main")
        hit = cache.load(KIND, repo, sha)
        if hit is not None:
            cache.save(KIND, repo, revision or "main", sha, hit)
            return ResolvedModel.from_json(hit)
        files = [s.rfilename for s in (info.siblings or [])]
        if "config.json" not in files:
            raise InputError(source, field, f"{repo} has no config.json: not a transformers model (for GGUF: hf.co/{repo})")
        config_path = _call(
            lambda: api.hf_hub_download(repo, "config.json", revision=sha, cache_dir=hub_cache()), repo, sha, source, field
        )
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except ValueError:
            raise InputError(source, field, f"{repo}: config.json is not valid JSON") from None
        tensors = _tensors(api, repo, sha, files, source, field)
    except _Unreachable as exc:
        return _from_cache(ref, repo, revision, source, field, f"the Hub at {endpoint()} cannot be reached ({exc})")
    ckpt = checkpoint_from_files(config, tensors, repo, source, field)
    resolved = ResolvedModel(
        ref=ref,
        kind=KIND,
        repo=repo,
        revision=sha,
        arch=ckpt.arch,
        quantization=ckpt.quantization,
        quant_method=ckpt.quant_method,
        weights_bytes=ckpt.weights_bytes,
        weights_source=f"hf://{repo}",
        notes=ckpt.notes,
    )
    cache.save(KIND, repo, revision or "main", sha, resolved.to_json())
    return resolved
