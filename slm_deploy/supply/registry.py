"""A small read-only client for the OCI distribution API: tag -> index digest -> per-platform digests.

Why not a library: PyPI's `oras` (0.2.43) keeps one bearer token per client whatever its scope
(Docker Hub scopes tokens per repository, so a second repository gets the first one's token),
returns a 429 as if it were an answer, retries a refused connection for about two minutes, and
does not look up Docker Hub credentials under the docker CLI's `https://index.docker.io/v1/` key.
`docker-registry-client` (0.5.2) predates OCI indexes. What is needed is three GET requests and
the token handshake of the distribution spec, on the standard library (which honours HTTPS_PROXY
and NO_PROXY through urllib's ProxyHandler).

Auth flows: anonymous and credentialed bearer tokens (`WWW-Authenticate: Bearer realm=...,
service=..., scope=...`; Docker Hub, GHCR, NGC, Quay all use it), OAuth2 refresh tokens (docker
config `identitytoken`), and plain Basic challenges. Plain HTTP only for loopback registries and
hosts the user names with --insecure-registry.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from slm_deploy import netclient
from slm_deploy.netclient import Client, Deadline, NetError, Unreachable, command_deadline, request_timeout
from slm_deploy.safejson import NotAJsonObject, json_object
from slm_deploy.supply.credentials import CredentialError, Credentials, lookup

DOCKER_HUB = "registry-1.docker.io"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's limit for a manifest
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_TOKEN_BYTES = 1024 * 1024  # a token answer is a JWT or two in JSON: kilobytes
MAX_REDIRECTS = 5
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER_SECONDS = 60
DEFAULT_RETRY_AFTER_SECONDS = 10
USER_AGENT = "slm-deploy-lock"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """A registry could not answer: unreachable, auth refused, unknown tag, rate limit."""


class UnknownTag(RegistryError):
    pass


@dataclass(frozen=True)
class Reference:
    host: str  # where to connect (Docker Hub's API host for docker.io images)
    path: str  # repository path on that host (library/ added for official images)

    @property
    def display(self) -> str:
        return f"{self.host}/{self.path}"


def parse_repository(repository: str) -> Reference:
    """`caddy` -> registry-1.docker.io/library/caddy; `ghcr.io/o/r` -> ghcr.io/o/r; `127.0.0.1:5000/x` too."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, repository
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return Reference(host, path)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return netclient.is_loopback(name)


def platform_key(platform: dict[str, Any]) -> str | None:
    """`linux/amd64`, `linux/arm64` (its v8 variant is the only one), `linux/arm/v7`; None for
    buildx attestation entries (`unknown/unknown`)."""
    os_name, arch, variant = platform.get("os"), platform.get("architecture"), platform.get("variant")
    if not os_name or not arch or os_name == "unknown" or arch == "unknown":
        return None
    if not all(isinstance(v, str) and _PLATFORM_PART.fullmatch(v) for v in (os_name, arch, variant or "v")):
        return None  # not a platform the OCI image spec names (GOOS, GOARCH, variant)
    if arch == "arm64" and variant == "v8":
        variant = None
    return f"{os_name}/{arch}" + (f"/{variant}" if variant else "")


@dataclass(frozen=True)
class PlatformImage:
    manifest: str
    config: str  # the image config digest: the image Id docker shows after a pull or a load


@dataclass(frozen=True)
class Resolved:
    digest: str  # what the tag points at: the index (or the single manifest)
    media_type: str
    platforms: dict[str, PlatformImage]


def mirror_path(mirror: str, repository: str) -> str:
    """Where a mirror keeps an image: MIRROR/<registry>/<path>, e.g. 127.0.0.1:5000/docker.io/library/caddy."""
    ref = parse_repository(repository)
    host = "docker.io" if ref.host == DOCKER_HUB else ref.host
    return f"{mirror}/{host}/{ref.path}"


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PLATFORM_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def _digest(value: Any, what: str) -> str:
    """A digest from a manifest, in the only shape the lock and generated files accept: it goes
    into a URL here and into image references later."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise RegistryError(f"{what} has no sha256 digest ({str(value)[:80]!r})")
    return value


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _retry_after(value: str | None) -> float:
    if not value:
        return DEFAULT_RETRY_AFTER_SECONDS
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS
    return max(0.0, when.timestamp() - time.time())


def _oauth_error(body: bytes) -> str:
    """` invalid_grant` from an OAuth2 error answer ({"error": ...}), else nothing."""
    try:
        error = json_object(body).get("error")
    except ValueError:
        return ""
    return f" {error}" if isinstance(error, str) and re.fullmatch(r"[\w.-]{1,64}", error) else ""


@dataclass
class RegistryClient:
    insecure_hosts: frozenset[str] = frozenset()
    credentials: Callable[[str], Credentials | None] = lookup
    sleep: Callable[[float], None] = time.sleep
    timeout: float = field(default_factory=request_timeout)  # total seconds per request
    deadline: Deadline | None = field(default_factory=command_deadline)  # the whole `lock`'s
    on_request: Callable[[str, str], None] | None = None  # (method, url): tests count requests
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    _client: Client | None = None

    def _scheme(self, host: str) -> str:
        return "http" if host in self.insecure_hosts or is_loopback(host) else "https"

    def _http(self) -> Client:
        if self._client is None:
            self._client = Client(
                "registry", timeout=self.timeout, deadline=self.deadline, user_agent=USER_AGENT, on_request=self.on_request
            )
        return self._client

    def _open(
        self,
        method: str,
        url: str,
        host: str,
        headers: dict[str, str],
        limit: int,
        auth: str | None = None,
        body: bytes | None = None,
        blob: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request: the status, headers and at most LIMIT bytes of a 2xx body (more is an error)."""
        try:
            answer = self._http().request(
                method,
                url,
                headers,
                body,
                limit=limit,
                what="manifest" if "/manifests/" in url else "answer",
                auth=auth,
                redirects=MAX_REDIRECTS,
                # Blob stores (S3, CDNs) behind a registry reject a second credential, and must not see ours.
                drop_auth_on_redirect=blob,
            )
        except Unreachable as exc:
            raise RegistryError(f"cannot reach registry {host}: {exc.message}") from None
        except NetError as exc:
            raise RegistryError(str(exc)) from None
        return answer.status, answer.headers, answer.body

    def _token(self, host: str, challenge: str, scope: str) -> str:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {host} asked for a token without naming a realm")
        parsed = urllib.parse.urlsplit(realm)
        realm_host = parsed.netloc
        if parsed.scheme != "https" and not (parsed.scheme == "http" and self._scheme(realm_host) == "http"):
            raise RegistryError(f"registry {host} sends tokens from {realm!r}: refusing a non-HTTPS token endpoint")
        scope = params.get("scope", scope)
        try:
            creds = self.credentials(host)
        except CredentialError as exc:
            raise RegistryError(str(exc)) from None
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        if creds and creds.identity_token:
            # docker login with an identity token: OAuth2 refresh-token grant (distribution oauth spec).
            grant = {"grant_type": "refresh_token", "refresh_token": creds.secret, "client_id": USER_AGENT}
            form = urllib.parse.urlencode({**query, **grant})
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            status, _, body = self._open("POST", realm, realm_host, headers, MAX_TOKEN_BYTES, body=form.encode())
        else:
            sep = "&" if parsed.query else "?"
            auth = f"Basic {creds.basic()}" if creds else None
            url = realm + sep + urllib.parse.urlencode(query)
            status, _, body = self._open("GET", url, realm_host, {}, MAX_TOKEN_BYTES, auth=auth)
        if creds and creds.identity_token and status in (400, 401, 403):
            # RFC 6749 5.2: a revoked or expired refresh token is HTTP 400 {"error": "invalid_grant"}.
            raise RegistryError(
                f"registry {host}: token endpoint refused the identity token (OAuth2 refresh token) for {scope} "
                f"(HTTP {status}{_oauth_error(body)}); `docker login {host}` again"
            )
        if status in (401, 403):
            who = f"as {creds.username}" if creds else "anonymously"
            raise RegistryError(f"registry {host}: token endpoint refused {scope} {who} (HTTP {status}); `docker login {host}`?")
        if status != 200:
            raise RegistryError(f"registry {host}: token endpoint answered HTTP {status}")
        try:
            data = json_object(body)
        except ValueError:
            data = {}
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {host}: token endpoint returned no token")
        return token

    def _get(
        self, ref: Reference, kind: str, target: str, accept: str, limit: int, method: str = "GET"
    ) -> tuple[dict[str, str], bytes]:
        url = f"{self._scheme(ref.host)}://{ref.host}/v2/{ref.path}/{kind}/{target}"
        scope = f"repository:{ref.path}:pull"
        rate_limited = 0
        authorized = False
        while True:
            token = self._tokens.get((ref.host, scope))
            status, headers, body = self._open(method, url, ref.host, {"Accept": accept}, limit, token, blob=kind == "blobs")
            if status == 200:
                return headers, body
            if status == 401 and not authorized:
                challenge = headers.get("www-authenticate", "")
                scheme = challenge.split(" ", 1)[0].lower()
                if scheme == "bearer":
                    self._tokens[(ref.host, scope)] = f"Bearer {self._token(ref.host, challenge, scope)}"
                elif scheme == "basic":
                    try:
                        creds = self.credentials(ref.host)
                    except CredentialError as exc:
                        raise RegistryError(str(exc)) from None
                    if creds is None:
                        raise RegistryError(f"{ref.display}: registry wants a login; run `docker login {ref.host}`")
                    self._tokens[(ref.host, scope)] = f"Basic {creds.basic()}"
                else:
                    raise RegistryError(f"{ref.display}: HTTP 401 without a usable WWW-Authenticate challenge")
                authorized = True
                continue
            if status in (401, 403):
                raise RegistryError(f"{ref.display}: access denied (HTTP {status}); check `docker login {ref.host}`")
            if status == 404:
                raise UnknownTag(f"{ref.display}: {target} not found on the registry")
            if status == 429:
                wait = _retry_after(headers.get("retry-after"))
                left = self.deadline.remaining() if self.deadline else float("inf")
                if rate_limited >= RATE_LIMIT_RETRIES or wait > MAX_RETRY_AFTER_SECONDS or wait >= left:
                    raise RegistryError(
                        f"registry {ref.host} rate-limits us (HTTP 429, {rate_limited + 1} tries, retry after {wait:.0f} s); "
                        "wait, or `docker login` for a higher limit, then run `slm-deploy lock` again"
                    )
                rate_limited += 1
                self.sleep(wait)
                continue
            raise RegistryError(f"{ref.display}: registry answered HTTP {status} for {kind} {target}")

    def _manifest(self, ref: Reference, target: str) -> tuple[str, str, dict[str, Any]]:
        headers, body = self._get(ref, "manifests", target, ACCEPT, MAX_MANIFEST_BYTES)
        digest = _sha256(body)
        announced = headers.get("docker-content-digest")
        if announced and announced != digest:
            raise RegistryError(f"{ref.display}:{target}: registry says {announced} but the manifest hashes to {digest}")
        if target.startswith("sha256:") and target != digest:
            raise RegistryError(f"{ref.display}: manifest {target} hashes to {digest}")
        try:
            manifest = json_object(body)
        except NotAJsonObject as exc:
            raise RegistryError(f"{ref.display}:{target}: the manifest is {exc}") from None
        media_type = str(manifest.get("mediaType") or headers.get("content-type", "").split(";")[0])[:200]
        return digest, media_type, manifest

    def _config(self, ref: Reference, target: str, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        config = manifest.get("config")
        if not isinstance(config, dict) or "digest" not in config:
            raise RegistryError(f"{ref.display}:{target}: the manifest names no image config")
        digest = _digest(config["digest"], f"{ref.display}:{target}: the image config")
        _, body = self._get(ref, "blobs", digest, "*/*", MAX_CONFIG_BYTES)
        if _sha256(body) != digest:
            raise RegistryError(f"{ref.display}:{target}: config blob does not match its digest")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise RegistryError(f"{ref.display}:{target}: config blob is not JSON") from None
        return digest, data if isinstance(data, dict) else {}

    def head_digest(self, repository: str, tag: str) -> str | None:
        """What the tag points at, from a HEAD request's Docker-Content-Digest (None when the registry
        does not send it). Docker Hub counts a GET of a manifest as a pull, per architecture of an
        index, and a HEAD not at all: a check of an unmoved lock costs no pulls."""
        headers, _ = self._get(parse_repository(repository), "manifests", tag, ACCEPT, MAX_MANIFEST_BYTES, method="HEAD")
        digest = headers.get("docker-content-digest", "")
        return digest if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else None

    def resolve(self, repository: str, tag: str, wanted: Collection[str] | None = None) -> Resolved:
        """The digest a tag points at now; per platform, its manifest and image config digests.
        WANTED: the only platforms of an index whose manifests are read (Docker Hub counts a pull
        per architecture fetched); None reads them all."""
        ref = parse_repository(repository)
        digest, media_type, manifest = self._manifest(ref, tag)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            platforms: dict[str, PlatformImage] = {}
            entries = manifest.get("manifests")
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise RegistryError(f"{ref.display}:{tag}: the index has no list of manifests")
            for entry in entries:
                # Every descriptor has a digest (OCI image-spec descriptor.md), whether we read it or not.
                entry_digest = _digest(entry.get("digest"), f"{ref.display}:{tag}: an index entry")
                platform = entry.get("platform")
                key = platform_key(platform) if isinstance(platform, dict) else None
                if not key or key in platforms or (wanted is not None and key not in wanted):
                    continue
                child_digest, _, child = self._manifest(ref, entry_digest)
                config_digest, _ = self._config(ref, child_digest, child)
                platforms[key] = PlatformImage(child_digest, config_digest)
            return Resolved(digest, media_type or INDEX_TYPES[0], dict(sorted(platforms.items())))
        config_digest, config = self._config(ref, tag, manifest)
        key = platform_key(config)
        return Resolved(digest, media_type or MANIFEST_TYPES[0], {key: PlatformImage(digest, config_digest)} if key else {})
