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
import re
from dataclasses import replace

from slm_deploy.errors import InputError
from slm_deploy.netclient import Client, NetError, Unreachable, command_deadline, host_of, request_timeout
from slm_deploy.resolve import cache
from slm_deploy.resolve.cache import unreachable
from slm_deploy.resolve.gguf import GgufProblem, parse_header, resolved_from_header
from slm_deploy.resolved import ResolvedModel
from slm_deploy.safejson import json_object

DEFAULT_REGISTRY = "https://registry.ollama.ai"
KIND = "ollama"
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's limit for a manifest
MAX_LAYER_BYTES = 4 * 1024**4
MAX_REDIRECTS = 5
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def registry() -> str:
    return (os.environ.get("OLLAMA_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")


class _Unreachable(Exception):
    pass


def _get(url: str, headers: dict[str, str], limit: int, what: str) -> tuple[int, bytes, dict[str, str]]:
    client = Client("Ollama registry", timeout=request_timeout(), deadline=command_deadline())
    try:
        # Blobs are handed to a CDN (a redirect); nothing here carries credentials.
        answer = client.request("GET", url, headers, limit=limit, what=what, redirects=MAX_REDIRECTS)
    except Unreachable as exc:
        raise _Unreachable(exc.message) from None
    return answer.status, answer.body, answer.headers


def _range(url: str, start: int, end: int) -> tuple[int, bytes]:
    client = Client("Ollama registry", timeout=request_timeout(), deadline=command_deadline())
    try:
        return client.read_range(url, start, end, redirects=MAX_REDIRECTS)
    except Unreachable as exc:
        raise _Unreachable(exc.message) from None


def _error_code(body: bytes) -> str:
    try:
        errors = json_object(body).get("errors") or []
        return str(errors[0].get("code") or "") if isinstance(errors, list) and errors else ""
    except (ValueError, AttributeError):
        return ""


def _layers(body: bytes, ref: str, source: str, field: str) -> tuple[str, int, int]:
    """(model layer digest, its size, the projector layers' size) of a manifest, each checked
    against the distribution spec's shapes (a digest is sha256 and 64 hex digits; a size is a
    non-negative byte count)."""

    def bad(what: str) -> NetError:
        return NetError("Ollama registry", host_of(registry()), f"sent a manifest for {ref} with {what}")

    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError):
        raise bad("no JSON in it") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise bad("no list of layers")
    for layer in layers:
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_LAYER_BYTES:
            raise bad(f"a layer size that is not a byte count ({str(size)[:40]!r})")
    model = next((layer for layer in layers if layer.get("mediaType") == MODEL_LAYER), None)
    if model is None:
        raise InputError(source, field, f"{ref} has no model layer (an adapter or an embedding-only tag?)")
    digest = model.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise bad(f"a model layer digest that is not sha256:<64 hex> ({str(digest)[:80]!r})")
    if model["size"] == 0:
        raise bad("an empty model layer")
    extra = sum(int(layer["size"]) for layer in layers if layer.get("mediaType") == PROJECTOR_LAYER)
    return digest, int(model["size"]), extra


def resolve_ollama(namespace: str, name: str, tag: str, source: str, field: str) -> ResolvedModel:
    ref = f"{name}:{tag}" if namespace == "library" else f"{namespace}/{name}:{tag}"
    key = f"{namespace}/{name}:{tag}"
    try:
        return _resolve_online(ref, namespace, name, tag, key, source, field)
    except _Unreachable as exc:
        digest = cache.revision_for(KIND, key, tag)
        data = cache.load(KIND, key, digest) if digest else None
        if data is None:
            if not cache.offline():
                raise unreachable("Ollama registry", registry(), str(exc), ref, source, field) from None
            raise InputError(
                source, field, f"{ref} is not in the resolve cache ({cache.cache_root()}) and offline mode is set"
            ) from None
        return ResolvedModel.from_json(data)


def _resolve_online(ref: str, namespace: str, name: str, tag: str, key: str, source: str, field: str) -> ResolvedModel:
    if cache.offline():
        raise _Unreachable("offline")
    base = f"{registry()}/v2/{namespace}/{name}"
    status, body, headers = _get(f"{base}/manifests/{tag}", {"Accept": ACCEPT}, MAX_MANIFEST_BYTES, "manifest")
    if status == 404:
        if _error_code(body) == "MANIFEST_UNKNOWN":
            raise InputError(source, field, f"the Ollama library has {namespace}/{name} but no tag {tag!r}")
        raise InputError(source, field, f"no model {namespace}/{name} in the Ollama library at {registry()}")
    if status != 200:
        raise InputError(source, field, f"the Ollama registry answered HTTP {status} for {ref}")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    announced = headers.get("docker-content-digest")
    if announced and announced != digest:
        raise NetError(
            "Ollama registry", host_of(registry()), f"says {announced[:80]!r} for {ref} but its manifest hashes to {digest}"
        )
    hit = cache.load(KIND, key, digest)
    if hit is not None:
        cache.save(KIND, key, tag, digest, hit)
        return ResolvedModel.from_json(hit)
    model, size, extra = _layers(body, ref, source, field)

    def fetch(start: int, end: int) -> bytes:
        status, data = _range(f"{base}/blobs/{model}", start, end)
        if status not in (200, 206):
            raise InputError(source, field, f"the Ollama registry answered HTTP {status} for the model blob of {ref}")
        return data

    try:
        header = parse_header(fetch, size)
        found = resolved_from_header(ref, KIND, f"{namespace}/{name}", digest, header, size + extra, f"ollama://{ref}")
    except GgufProblem as exc:
        raise InputError(source, field, f"{ref}: model layer: {exc}") from None
    if extra:
        found = replace(found, notes=(*found.notes, "the vision projector layer is counted in the weights"))
    cache.save(KIND, key, tag, digest, found.to_json())
    return found
