"""Ollama library references (`qwen3:4b`, `namespace/name:tag`) through the registry's manifests.

The manifest says whether the tag exists and lists its layers; the model layer is a GGUF file
whose header (a ranged GET of the blob) gives the architecture, and whose size is the exact
weight bytes. The manifest digest is what a rebuild pins. OLLAMA_REGISTRY overrides the registry
(tests point it at a fake one on loopback).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from slm_deploy.errors import InputError
from slm_deploy.resolve import ResolvedModel, cache
from slm_deploy.resolve.gguf import GgufProblem, parse_header, resolved_from_header

DEFAULT_REGISTRY = "https://registry.ollama.ai"
KIND = "ollama"
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
TIMEOUT_S = 30


def registry() -> str:
    return (os.environ.get("OLLAMA_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")


class _Unreachable(Exception):
    pass


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"User-Agent": "slm-deploy", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers or {})
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise _Unreachable(str(getattr(exc, "reason", exc))) from None


def _error_code(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return str(errors[0].get("code") or "") if errors else ""
    except (ValueError, AttributeError, IndexError):
        return ""


def resolve_ollama(namespace: str, name: str, tag: str, source: str, field: str) -> ResolvedModel:
    ref = f"{name}:{tag}" if namespace == "library" else f"{namespace}/{name}:{tag}"
    key = f"{namespace}/{name}:{tag}"
    try:
        return _resolve_online(ref, namespace, name, tag, key, source, field)
    except _Unreachable as exc:
        why = "offline mode is set" if cache.offline() else f"the Ollama registry at {registry()} cannot be reached ({exc})"
        digest = cache.revision_for(KIND, key, tag)
        data = cache.load(KIND, key, digest) if digest else None
        if data is None:
            raise InputError(source, field, f"{ref} is not in the resolve cache ({cache.cache_root()}) and {why}") from None
        return ResolvedModel.from_json(data)


def _resolve_online(ref: str, namespace: str, name: str, tag: str, key: str, source: str, field: str) -> ResolvedModel:
    if cache.offline():
        raise _Unreachable("offline")
    base = f"{registry()}/v2/{namespace}/{name}"
    status, body, headers = _get(f"{base}/manifests/{tag}", {"Accept": ACCEPT})
    if status == 404:
        if _error_code(body) == "MANIFEST_UNKNOWN":
            raise InputError(source, field, f"the Ollama library has {namespace}/{name} but no tag {tag!r}")
        raise InputError(source, field, f"no model {namespace}/{name} in the Ollama library at {registry()}")
    if status != 200:
        raise InputError(source, field, f"the Ollama registry answered HTTP {status} for {ref}")
    digest = headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    hit = cache.load(KIND, key, digest)
    if hit is not None:
        cache.save(KIND, key, tag, digest, hit)
        return ResolvedModel.from_json(hit)
    try:
        manifest: dict[str, Any] = json.loads(body)
    except ValueError:
        raise InputError(source, field, f"the Ollama registry sent an unreadable manifest for {ref}") from None
    layers = manifest.get("layers") or []
    model = next((layer for layer in layers if layer.get("mediaType") == MODEL_LAYER), None)
    if model is None:
        raise InputError(source, field, f"{ref} has no model layer (an adapter or an embedding-only tag?)")
    size = int(model.get("size") or 0)
    extra = sum(int(layer.get("size") or 0) for layer in layers if layer.get("mediaType") == PROJECTOR_LAYER)

    def fetch(start: int, end: int) -> bytes:
        status, data, _ = _get(f"{base}/blobs/{model['digest']}", {"Range": f"bytes={start}-{end}"})
        if status not in (200, 206):
            raise InputError(source, field, f"the Ollama registry answered HTTP {status} for the model blob of {ref}")
        return data[: end - start + 1]

    try:
        header = parse_header(fetch, size)
        found = resolved_from_header(ref, KIND, f"{namespace}/{name}", digest, header, size + extra, f"ollama://{ref}")
    except GgufProblem as exc:
        raise InputError(source, field, f"{ref}: model layer: {exc}") from None
    if extra:
        found = replace(found, notes=(*found.notes, "the vision projector layer is counted in the weights"))
    cache.save(KIND, key, tag, digest, found.to_json())
    return found
