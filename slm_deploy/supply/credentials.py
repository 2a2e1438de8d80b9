"""Registry credentials the way the docker CLI keeps them: ~/.docker/config.json (or $DOCKER_CONFIG),
with inline `auths`, a `credsStore` for every registry, or a `credHelpers` entry per registry.

A helper is the program `docker-credential-NAME`; `get` reads the server URL on stdin and writes
{"Username", "Secret"} (docker/docker-credential-helpers). Nothing here talks to a registry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slm_deploy.errors import InputError
from slm_deploy.safeyaml import read_bytes

# The docker CLI stores Docker Hub credentials under its v1 index URL, whatever host it talks to.
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
HELPER_TIMEOUT_SECONDS = 30
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str
    secret: str
    identity_token: bool = False  # an OAuth2 refresh token ("<token>" user), not a password

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.secret}".encode()).decode()


class CredentialError(Exception):
    pass


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _keys(host: str) -> tuple[str, ...]:
    if host in DOCKER_HUB_KEYS:
        return DOCKER_HUB_KEYS
    return (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/")


def _from_helper(helper: str, server: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=HELPER_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise CredentialError(f"credential helper {program} (from {docker_config_path()}) is not installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"credential helper {program} did not answer within {HELPER_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise CredentialError(f"credential helper {program} failed: {(done.stderr or done.stdout).strip()[:200]}")
    try:
        data = json.loads(done.stdout)
        username, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialError(f"credential helper {program} returned no Username/Secret") from None
    return Credentials(username, secret, identity_token=username == "<token>")


def lookup(host: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for a registry host, or None (anonymous)."""
    path = config_path or docker_config_path()
    if not path.exists() and not path.is_symlink():
        return None
    try:
        # A regular file of bounded size only: a FIFO named as the docker config is refused.
        config = json.loads(read_bytes(path, str(path), MAX_CONFIG_BYTES))
    except InputError as exc:
        raise CredentialError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise CredentialError(f"{path}: unreadable docker config ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise CredentialError(f"{path}: the docker config is not a JSON object")
    keys = _keys(host)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(str(helpers[key]), key)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]), identity_token=True)
        if entry.get("auth"):
            try:
                username, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise CredentialError(f"{path}: auths.{key}.auth is not base64 user:password") from None
            return Credentials(username, secret)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]))
    store = config.get("credsStore")
    if store:
        return _from_helper(str(store), keys[0])
    return None
