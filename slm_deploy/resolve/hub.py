"""Hugging Face Hub resolution: model info, config.json, safetensors headers.

Nothing but headers is downloaded: the safetensors header of each shard is read with two ranged
GETs (as huggingface_hub's parse_safetensors_file_metadata does), which gives every tensor's
dtype and shape, hence the exact parameter count and weight bytes. The requests go through
slm_deploy/netclient.py (a total deadline, a byte limit per answer, no token sent to another
host), not through huggingface_hub, whose reads have neither a total deadline nor a size limit.
Every value the Hub sends that reaches a generated file (the commit, file names) is checked
against its documented shape first. The endpoint, token and cache are read
from the environment at call time (HF_ENDPOINT, HF_TOKEN or the token file, HF_HOME), not when
huggingface_hub was imported, so one process can plan against several hubs.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from slm_deploy.errors import InputError
from slm_deploy.netclient import Client, NetError, Unreachable, command_deadline, host_of, request_timeout
from slm_deploy.resolve import cache
from slm_deploy.resolve.cache import unreachable
from slm_deploy.resolve.config import Checkpoint, ConfigProblem, Tensor, read_checkpoint
from slm_deploy.resolved import ResolvedModel

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


# Bounds on what the Hub may send (slm_deploy/netclient.py): a model's info lists its files (a
# few KB; 16 MiB holds ~100k files), config.json is a few KB, a shard index a few MB; a
# safetensors header is at most 100 MB (huggingface_hub constants.SAFETENSORS_MAX_HEADER_LENGTH
# is 25 MB; safetensors' own reader refuses headers over 100 MB, safetensors/src/tensor.rs
# MAX_HEADER_SIZE); a weights file at most 4 TiB.
MAX_INFO_BYTES = 16 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_INDEX_BYTES = 32 * 1024 * 1024
MAX_SAFETENSORS_HEADER = 100_000_000
MAX_FILE_BYTES = 4 * 1024**4
MAX_REDIRECTS = 5
# What the Hub accepts as a repo id (huggingface_hub utils/_validators.py validate_repo_id: name
# and namespace of [A-Za-z0-9._-], at most 96 characters, no `--` or `..`, not starting or ending
# with `.` or `-`), and what git accepts as a branch or tag name, restricted to the characters
# the Hub's own branch names use. A commit is 40 hex digits.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
COMMIT = re.compile(r"[0-9a-f]{40}")
# A file name a generated file may carry (a GGUF file, a shard): no spaces, quotes or `$`.
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}")
LISTED_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")


def check_repo_id(repo: str, source: str, field: str) -> None:
    if not REPO_ID.fullmatch(repo) or "--" in repo or ".." in repo:
        raise InputError(
            source, field, f"{repo!r} is not a Hugging Face repo id (owner/name: letters, digits, '.', '_', '-'; at most 96 each)"
        )


def check_revision(revision: str, source: str, field: str) -> None:
    if not REVISION.fullmatch(revision) or ".." in revision or revision.endswith((".", "/", ".lock")) or "//" in revision:
        raise InputError(source, field, f"{revision!r} is not a Hub revision (a branch, tag or 40-digit commit)")


def _client() -> Client:
    return Client("Hub", timeout=request_timeout(), deadline=command_deadline(), user_agent="slm-deploy")


def _auth() -> str | None:
    value = token()
    return f"Bearer {value}" if value else None


def _host() -> str:
    return host_of(endpoint())


def _refused(status: int, headers: dict[str, str], repo: str, revision: str | None, source: str, field: str) -> None:
    """Raise the Hub's refusal as one clear error (its X-Error-Code, as huggingface_hub reads it in
    utils/_http.py hf_raise_for_status), or _Unreachable for an outage."""
    code = headers.get("x-error-code", "")
    if code == "GatedRepo":
        if token():
            raise InputError(source, field, f"{repo} is gated and this token has no access to it; accept its terms")
        raise InputError(source, field, f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN")
    if code == "RevisionNotFound":
        raise InputError(source, field, f"{repo} has no revision {revision!r}")
    if code == "RepoNotFound" or (status == 401 and not code):
        hint = "" if token() else " (a private repo needs HF_TOKEN)"
        raise InputError(source, field, f"no model {repo!r} on the Hub at {endpoint()}{hint}")
    if code == "EntryNotFound":
        raise InputError(source, field, f"{repo} has no such file at {revision}")
    if status >= 500 or status == 429:
        raise _Unreachable(f"HTTP {status}")  # a Hub outage: the cached revision still serves
    raise InputError(source, field, f"the Hub answered HTTP {status} for {repo}")


def _net(func: Callable[[], T]) -> T:
    """A request whose failure to get any answer becomes _Unreachable (a cached resolution may serve)."""
    try:
        return func()
    except Unreachable as exc:
        raise _Unreachable(exc.message) from None


def model_info(repo: str, revision: str | None, source: str, field: str) -> tuple[str, list[str]]:
    """(commit, file names) of REPO at REVISION (huggingface_hub hf_api.py model_info: GET
    /api/models/{repo}[/revision/{revision}])."""
    url = f"{endpoint()}/api/models/{repo}" + (f"/revision/{urllib.parse.quote(revision, safe='')}" if revision else "")
    answer = _net(
        lambda: _client().request(
            "GET",
            url,
            {"Accept": "application/json"},
            limit=MAX_INFO_BYTES,
            what="model info",
            auth=_auth(),
            redirects=MAX_REDIRECTS,
        )
    )
    if answer.status != 200:
        _refused(answer.status, answer.headers, repo, revision, source, field)
    try:
        info = json.loads(answer.body)
        sha = info["sha"]
        files = [entry["rfilename"] for entry in info.get("siblings") or []]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise NetError("Hub", _host(), f"sent model info for {repo} that is not the Hub's JSON") from None
    if not isinstance(sha, str) or not COMMIT.fullmatch(sha):
        raise NetError("Hub", _host(), f"sent a revision for {repo} that is not a 40-digit commit: {sha!r:.80}")
    if not all(isinstance(f, str) and LISTED_NAME.fullmatch(f) for f in files):
        raise NetError("Hub", _host(), f"lists a file name in {repo} with control characters")
    return sha, files


def _file_url(repo: str, sha: str, filename: str) -> str:
    return f"{endpoint()}/{repo}/resolve/{sha}/{urllib.parse.quote(filename)}"


def download(repo: str, sha: str, filename: str, limit: int, source: str, field: str) -> bytes:
    answer = _net(
        lambda: _client().request(
            "GET",
            _file_url(repo, sha, filename),
            limit=limit,
            what=filename,
            auth=_auth(),
            redirects=MAX_REDIRECTS,
            drop_auth_on_redirect=True,  # LFS files are handed to a CDN with a signed URL
        )
    )
    if answer.status != 200:
        _refused(answer.status, answer.headers, repo, sha, source, field)
    return answer.body


def read_range(repo: str, sha: str, filename: str, start: int, end: int, source: str, field: str) -> bytes:
    """Bytes START..END of a file, never more (netclient.Client.read_range)."""
    status, data = _net(
        lambda: _client().read_range(
            _file_url(repo, sha, filename), start, end, auth=_auth(), redirects=MAX_REDIRECTS, drop_auth_on_redirect=True
        )
    )
    if status not in (200, 206):
        _refused(status, {}, repo, sha, source, field)
    return data


def file_size(repo: str, sha: str, filename: str, source: str, field: str) -> int:
    answer = _net(
        lambda: _client().request(
            "HEAD", _file_url(repo, sha, filename), limit=0, auth=_auth(), redirects=MAX_REDIRECTS, drop_auth_on_redirect=True
        )
    )
    if answer.status != 200:
        _refused(answer.status, answer.headers, repo, sha, source, field)
    raw = answer.header("x-linked-size") or answer.header("content-length")
    if not raw.strip().isdigit() or not 0 < int(raw) <= MAX_FILE_BYTES:
        raise NetError("Hub", _host(), f"sent no usable size for {repo}/{filename} ({raw[:40]!r})")
    return int(raw)


class _Unreachable(Exception):
    pass


def safetensors_header(repo: str, sha: str, shard: str, source: str, field: str) -> dict[str, Tensor]:
    """Every tensor's dtype and shape from a shard's header: 8 bytes of length, then the JSON
    (the safetensors format, huggingface/safetensors README "Format")."""
    first = read_range(repo, sha, shard, 0, 7, source, field)
    if len(first) != 8:
        raise InputError(source, field, f"{repo}/{shard}: not a safetensors file (shorter than 8 bytes)")
    length = int.from_bytes(first, "little")
    if not 2 <= length <= MAX_SAFETENSORS_HEADER:
        raise InputError(
            source, field, f"{repo}/{shard}: a safetensors header of {length} bytes (at most {MAX_SAFETENSORS_HEADER})"
        )
    raw = read_range(repo, sha, shard, 8, 8 + length - 1, source, field)
    try:
        header = json.loads(raw)
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            shape = tuple(int(d) for d in info["shape"])
            if any(d < 0 for d in shape):
                raise ValueError
            out[str(name)] = Tensor(str(info["dtype"]), shape)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise InputError(source, field, f"{repo}/{shard}: unreadable safetensors header") from None
    return out


def _tensors(repo: str, sha: str, files: list[str], source: str, field: str) -> dict[str, Tensor] | None:
    names = set(files)
    if "model.safetensors" in names:
        shards = ["model.safetensors"]
    elif "model.safetensors.index.json" in names:
        raw = download(repo, sha, "model.safetensors.index.json", MAX_INDEX_BYTES, source, field)
        try:
            weight_map = json.loads(raw).get("weight_map") or {}
            shards = sorted({str(v) for v in weight_map.values()})
        except (ValueError, AttributeError, RecursionError):
            raise InputError(source, field, f"{repo}: model.safetensors.index.json is not valid JSON") from None
        if not all(v in names and FILE_NAME.fullmatch(v) and ".." not in v for v in shards):
            raise InputError(source, field, f"{repo}: model.safetensors.index.json names a shard the repo does not have")
    else:
        return None
    out: dict[str, Tensor] = {}
    for shard in shards:
        out.update(safetensors_header(repo, sha, shard, source, field))
    return out


def checkpoint_from_files(
    config: dict[str, Any], tensors: dict[str, Tensor] | None, repo: str, source: str, field: str
) -> Checkpoint:
    try:
        return read_checkpoint(config, tensors)
    except ConfigProblem as exc:
        raise InputError(source, field, f"{repo}: config.json: {exc.field}: {exc}") from None


def _from_cache(
    ref: str, repo: str, revision: str | None, source: str, field: str, why: str, online: bool = False
) -> ResolvedModel:
    wanted = revision or "main"
    sha = wanted if len(wanted) == 40 else cache.revision_for(KIND, repo, wanted)
    data = cache.load(KIND, repo, sha) if sha else None
    if data is None:
        if online:
            raise unreachable("Hub", endpoint(), why, f"{repo}@{wanted}", source, field)
        raise InputError(source, field, f"{repo}@{wanted} is not in the resolve cache ({cache.cache_root()}) and {why}")
    return ResolvedModel.from_json(data)


def resolve_hf(ref: str, repo: str, revision: str | None, source: str, field: str) -> ResolvedModel:
    check_repo_id(repo, source, field)
    if revision is not None:
        check_revision(revision, source, field)
    if cache.offline():
        return _from_cache(ref, repo, revision, source, field, "HF_HUB_OFFLINE is set; plan once online first")
    if revision and len(revision) == 40:
        hit = cache.load(KIND, repo, revision)
        if hit is not None:
            return ResolvedModel.from_json(hit)
    try:
        sha, files = model_info(repo, revision, source, field)
        hit = cache.load(KIND, repo, sha)
        if hit is not None:
            cache.save(KIND, repo, revision or "main", sha, hit)
            return ResolvedModel.from_json(hit)
        if "config.json" not in files:
            raise InputError(source, field, f"{repo} has no config.json: not a transformers model (for GGUF: hf.co/{repo})")
        raw = download(repo, sha, "config.json", MAX_CONFIG_BYTES, source, field)
        try:
            config = json.loads(raw)
        except (ValueError, RecursionError):
            raise InputError(source, field, f"{repo}: config.json is not valid JSON") from None
        if not isinstance(config, dict):
            raise InputError(source, field, f"{repo}: config.json is not a JSON object")
        tensors = _tensors(repo, sha, files, source, field)
    except _Unreachable as exc:
        return _from_cache(ref, repo, revision, source, field, str(exc), online=True)
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
