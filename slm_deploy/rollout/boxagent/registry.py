"""The pull variant's registry client: a release artifact fetched from an OCI registry with the
distribution API, anonymously or with a credentials file (Basic, or the Bearer token handshake).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from .artifact import MANIFEST_TYPE, Artifact
from .statement import MAX_SMALL, Refused


def _loopback(host: str) -> bool:
    """HOST[:PORT] names this machine (plain http is allowed there only)."""
    name = host[1:].split("]")[0] if host.startswith("[") else (host.rsplit(":", 1)[0] if host.count(":") == 1 else host)
    return name in ("127.0.0.1", "localhost", "::1")


def read_credentials(path: str, host: str) -> tuple[str, str] | None:
    """(user, password) for HOST from a file only root may read: a docker config.json (`auths` with
    `auth` or `username`/`password`, as `docker login` writes it without a credential store) or
    one line `user:password`. None when a config.json has no entry for HOST."""
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SMALL + 1)
    except OSError as exc:
        raise Refused(f"{path}: cannot read the registry credentials ({exc.strerror or exc})") from None
    if info.st_mode & 0o077:
        raise Refused(f"{path}: readable by others (mode {oct(info.st_mode & 0o777)[2:]}): chmod 600 it")
    if len(raw) > MAX_SMALL:
        raise Refused(f"{path}: larger than a credentials file")
    text = raw.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            auths = json.loads(text).get("auths") or {}
        except (ValueError, AttributeError):
            raise Refused(f"{path}: not a docker config.json") from None
        for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
            entry = auths.get(key) if isinstance(auths, dict) else None
            if not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    user, sep, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    sep = ""
                if not sep:
                    raise Refused(f"{path}: auths.{key}.auth is not base64 of user:password") from None
                return user, password
            if entry.get("username") and entry.get("password"):
                return str(entry["username"]), str(entry["password"])
            if entry.get("identitytoken"):
                raise Refused(
                    f"{path}: auths.{key} holds an identity token; give the box a user:password (a robot or token user)"
                )
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or "\n" in text:
        raise Refused(f"{path}: expected one line user:password, or a docker config.json")
    return user, password


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://…",service="…",scope="…"` -> ("bearer", {realm, service, scope})
    (distribution docs/spec/auth/token.md; RFC 6750 section 3)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z]+)="([^"]*)"', rest)}
    return scheme.lower(), params


def fetch(registry: str, repository: str, tag: str, timeout: float = 60.0, credentials: str | None = None) -> Artifact:
    """The pull variant: the artifact from an OCI registry; a box behind NAT pulls, it is never
    pushed to. A private registry (ACR, Harbor, GHCR) answers 401 with a challenge: Bearer is the
    token handshake (GET realm?service=&scope=repository:REPO:pull, with the CREDENTIALS file's
    user and password as Basic, or anonymous without one), Basic sends them directly. Credentials
    go only over https (or to a loopback registry), and never along a redirect (blob storage)."""
    host = registry.split("/")[0]
    scheme = "http" if _loopback(host) else "https"
    base = f"{scheme}://{registry}/v2/{repository}"
    state: dict[str, str] = {}

    def basic() -> str | None:
        found = read_credentials(credentials, host) if credentials else None
        return "Basic " + base64.b64encode(f"{found[0]}:{found[1]}".encode()).decode() if found else None

    def open_url(url: str, accept: str, limit: int, authorization: str | None) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "slm-deploy-box"})
        if authorization:
            request.add_unredirected_header("Authorization", authorization)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(limit + 1)
        if len(data) > limit:
            raise Refused(f"registry {host}: answer larger than {limit} bytes")
        return data

    def login(header: str) -> None:
        kind, params = _challenge(header)
        if kind == "basic":
            found = basic()
            if found is None:
                raise Refused(f"registry {host}: wants a login (Basic); give --registry-auth FILE")
            state["auth"] = found
            return
        if kind != "bearer" or not params.get("realm"):
            raise Refused(f"registry {host}: HTTP 401 without a usable WWW-Authenticate challenge")
        realm = urllib.parse.urlsplit(params["realm"])
        if realm.scheme != "https" and not (realm.scheme == "http" and _loopback(realm.netloc)):
            raise Refused(f"registry {host}: token realm {params['realm']} is not https; refused")
        query = {"scope": params.get("scope") or f"repository:{repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = params["realm"] + ("&" if realm.query else "?") + urllib.parse.urlencode(sorted(query.items()))
        login_with = basic()
        try:
            answer = json.loads(open_url(url, "application/json", MAX_SMALL, login_with))
        except urllib.error.HTTPError as exc:
            what = f"HTTP {exc.code}"
            if exc.code in (401, 403):
                what = "the credentials were refused" if login_with else "no anonymous access: give --registry-auth FILE"
            raise Refused(f"registry {host}: token endpoint {realm.netloc}: {what}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Refused(
                f"registry {host}: token endpoint {realm.netloc}: cannot reach it ({getattr(exc, 'reason', exc)})"
            ) from None
        except ValueError:
            raise Refused(f"registry {host}: token endpoint {realm.netloc}: answer is not JSON") from None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise Refused(f"registry {host}: token endpoint {realm.netloc}: no token in its answer")
        state["auth"] = "Bearer " + token

    def get(url: str, accept: str, limit: int) -> bytes:
        for attempt in (0, 1):
            try:
                return open_url(url, accept, limit, state.get("auth"))
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and not attempt:
                    login(exc.headers.get("WWW-Authenticate", ""))
                    continue
                hint = " (the credentials were refused, or give --registry-auth FILE)" if exc.code in (401, 403) else ""
                raise Refused(f"registry {host}: HTTP {exc.code} for {url.rsplit('/v2/', 1)[1]}{hint}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise Refused(f"registry {host}: cannot reach it ({getattr(exc, 'reason', exc)})") from None
        raise AssertionError("unreachable")

    manifest = get(f"{base}/manifests/{tag}", MANIFEST_TYPE, MAX_SMALL)
    return Artifact(manifest, lambda d, size: get(f"{base}/blobs/{d}", "*/*", size))
