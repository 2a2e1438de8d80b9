"""Pushing a release artifact to an OCI registry (distribution spec: monolithic blob upload with
POST + PUT ?digest=, then PUT of the manifest by tag). Blobs the registry already has are skipped
(HEAD), so re-publishing the same release sends only the manifest. Authentication reuses the lock's
registry client: its bearer-token handshake and docker-config credentials, with push scope."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from slm_deploy.rollout import boxagent as agent
from slm_deploy.rollout.publish import Release
from slm_deploy.supply.registry import RegistryClient, RegistryError, parse_repository

ANSWER_LIMIT = 64 * 1024  # upload and manifest answers are short JSON or empty


@dataclass
class Pusher:
    repository: str  # HOST[:PORT]/PATH
    client: RegistryClient = field(default_factory=RegistryClient)
    _auth: str | None = None

    def __post_init__(self) -> None:
        self.ref = parse_repository(self.repository)
        self.base = f"{self.client._scheme(self.ref.host)}://{self.ref.host}/v2/{self.ref.path}"
        self.scope = f"repository:{self.ref.path}:pull,push"

    def _send(self, method: str, url: str, body: bytes | None = None, content_type: str = "") -> tuple[int, dict[str, str]]:
        """One request through the lock's bounded client (deadlines, byte limits, no credentials on
        a redirect to another host); a 401 is answered once with the registry's challenge."""
        for attempt in (0, 1):
            headers = {"Content-Type": content_type} if content_type else {}
            status, answer, _ = self.client._open(method, url, self.ref.host, headers, ANSWER_LIMIT, auth=self._auth, body=body)
            if status != 401 or attempt:
                return status, answer
            challenge = answer.get("www-authenticate", "")
            scheme = challenge.split(" ", 1)[0].lower()
            if scheme == "bearer":
                self._auth = "Bearer " + self.client._token(self.ref.host, challenge, self.scope)
            elif scheme == "basic":
                creds = self.client.credentials(self.ref.host)
                if creds is None:
                    raise RegistryError(f"{self.repository}: the registry wants a login; run `docker login {self.ref.host}`")
                self._auth = f"Basic {creds.basic()}"
            else:
                raise RegistryError(f"{self.repository}: HTTP 401 without a usable WWW-Authenticate challenge")
        raise AssertionError("unreachable")

    def _blob(self, data: bytes) -> None:
        digest = agent.sha256(data)
        status, _ = self._send("HEAD", f"{self.base}/blobs/{digest}")
        if status == 200:
            return
        status, headers = self._send("POST", f"{self.base}/blobs/uploads/", b"")
        location = headers.get("location")
        if status != 202 or not location:
            raise RegistryError(f"{self.repository}: cannot start an upload (HTTP {status})")
        url = urllib.parse.urljoin(f"{self.base}/blobs/uploads/", location)
        parts = urllib.parse.urlsplit(url)
        if parts.netloc != urllib.parse.urlsplit(self.base).netloc:
            raise RegistryError(f"{self.repository}: the registry sends the upload to another host ({parts.netloc}); refused")
        query = (parts.query + "&" if parts.query else "") + urllib.parse.urlencode({"digest": digest})
        status, _ = self._send("PUT", urllib.parse.urlunsplit(parts._replace(query=query)), data, "application/octet-stream")
        if status != 201:
            raise RegistryError(f"{self.repository}: blob {digest[:19]} upload refused (HTTP {status})")

    def push(self, release: Release) -> str:
        for data in [release.config.data, *(layer.data for layer in release.layers)]:
            self._blob(data)
        status, headers = self._send("PUT", f"{self.base}/manifests/{release.tag}", release.manifest, agent.MANIFEST_TYPE)
        if status != 201:
            raise RegistryError(f"{self.repository}:{release.tag}: manifest refused (HTTP {status})")
        announced = headers.get("docker-content-digest")
        if announced and announced != release.digest:
            raise RegistryError(f"{self.repository}:{release.tag}: the registry stored {announced}, we sent {release.digest}")
        return release.digest

    def tag(self, release: Release, tag: str) -> None:
        """Point another tag (a box's ring tag, for the pull variant) at an already pushed release."""
        status, _ = self._send("PUT", f"{self.base}/manifests/{tag}", release.manifest, agent.MANIFEST_TYPE)
        if status != 201:
            raise RegistryError(f"{self.repository}:{tag}: manifest refused (HTTP {status})")
