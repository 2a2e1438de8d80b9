"""One release artifact (an OCI image manifest with its config and layers), as read from an OCI
image layout archive (`slm-deploy publish --layout`) or a registry (registry.fetch), and what makes
it one this box may install: a statement signed for this box, and blobs that match their digests.
A bundle signed for another box, a changed archive, an unsigned artifact, or one signed by a key
not in allowed_signers is refused before anything on the box changes.
"""

from __future__ import annotations

import json
import tarfile

from .signature import verify_signature
from .statement import DIGEST, MAX_ARCHIVE_MEMBERS, MAX_SMALL, Refused, parse_statement, sha256

ARTIFACT_TYPE = "application/vnd.slm-deploy.release.v1"
CONFIG_TYPE = "application/vnd.slm-deploy.release.config.v1+json"
BUNDLE_TYPE = "application/vnd.slm-deploy.bundle.v1.tar+gzip"
STATEMENT_TYPE = "application/vnd.slm-deploy.statement.v1"
SIGNATURE_TYPE = "application/vnd.slm-deploy.signature.v1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MAX_BLOB = 256 * 1024 * 1024  # a bundle is kilobytes; an offline image tarball never travels in it


class Artifact:
    """One release artifact as read from an OCI image layout archive or a registry."""

    def __init__(self, manifest: bytes, blob: object) -> None:
        self.manifest_bytes = manifest
        self.digest = sha256(manifest)
        self._blob = blob
        try:
            self.manifest = json.loads(manifest)
        except ValueError:
            raise Refused("manifest: not JSON") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("artifactType") != ARTIFACT_TYPE:
            raise Refused("manifest: not an slm-deploy release artifact")

    def _layer(self, media_type: str, limit: int) -> bytes:
        found = [d for d in self.manifest.get("layers", []) if isinstance(d, dict) and d.get("mediaType") == media_type]
        if not found:
            what = {SIGNATURE_TYPE: "unsigned: the artifact has no signature", STATEMENT_TYPE: "no release statement"}
            raise Refused(what.get(media_type, f"no {media_type} layer"))
        if len(found) > 1:
            raise Refused(f"manifest: more than one {media_type} layer")
        return self.blob(found[0], limit)

    def blob(self, descriptor: dict[str, object], limit: int) -> bytes:
        digest = str(descriptor.get("digest", ""))
        size = descriptor.get("size")
        if not DIGEST.match(digest) or not isinstance(size, int) or not 0 <= size <= limit:
            raise Refused(f"manifest: bad descriptor for {descriptor.get('mediaType')}")
        data: bytes = self._blob(digest, size)  # type: ignore[operator]
        if len(data) != size or sha256(data) != digest:
            raise Refused(f"blob {digest[:19]}: content does not match its digest (tampered)")
        return data

    def verified(self, box: str, allowed_signers: str, fleet: str | None = None) -> tuple[dict[str, str], bytes]:
        """The statement and the bundle archive, once everything checks out for BOX (and, when the
        box knows its FLEET, for that fleet: one allowed_signers file may trust several fleets)."""
        statement = self._layer(STATEMENT_TYPE, MAX_SMALL)
        signature = self._layer(SIGNATURE_TYPE, MAX_SMALL)
        values = parse_statement(statement)
        if fleet is not None and values["fleet"] != fleet:
            raise Refused(f"a release of fleet {values['fleet']}, not of this box's fleet ({fleet})")
        verify_signature(statement, signature, values["fleet"], allowed_signers)
        if values["box"] != box:
            raise Refused(f"addressed to box {values['box']}, not to this box ({box})")
        config = self.blob(self.manifest.get("config") or {}, MAX_SMALL)
        if sha256(config) != values["config"]:
            raise Refused("config: not the one the statement signs")
        bundle = self._layer(BUNDLE_TYPE, MAX_BLOB)
        if sha256(bundle) != values["bundle"]:
            raise Refused("bundle: not the archive the statement signs (tampered)")
        return values, bundle


def read_layout(path: str, ref: str | None = None) -> Artifact:
    """An OCI image layout written as one tar file (`slm-deploy publish --layout`)."""
    try:
        archive = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the `with` below; open errors are ours)
    except (OSError, tarfile.TarError) as exc:
        raise Refused(f"{path}: not an OCI layout archive ({exc})") from None
    with archive:
        members = {}
        for count, member in enumerate(archive):
            if count > MAX_ARCHIVE_MEMBERS:
                raise Refused(f"{path}: too many entries")
            if member.isfile():
                members[member.name] = member

        def read(name: str, limit: int) -> bytes:
            member = members.get(name)
            if member is None or member.size > limit:
                raise Refused(f"{path}: {name}: missing or too large")
            handle = archive.extractfile(member)
            assert handle is not None
            data: bytes = handle.read(limit + 1)
            return data

        try:
            index = json.loads(read("index.json", MAX_SMALL))
            entries = [m for m in index.get("manifests", []) if isinstance(m, dict) and m.get("mediaType") == MANIFEST_TYPE]
        except (ValueError, AttributeError):
            raise Refused(f"{path}: index.json is not an OCI index") from None
        if ref is not None:
            entries = [m for m in entries if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref]
        if len(entries) != 1:
            raise Refused(f"{path}: expected one release manifest{f' named {ref}' if ref else ''}, found {len(entries)}")
        digest = str(entries[0].get("digest", ""))
        if not DIGEST.match(digest):
            raise Refused(f"{path}: index.json: bad manifest digest")

        def blob(d: str, size: int) -> bytes:
            return read("blobs/sha256/" + d.split(":", 1)[1], size)

        manifest = blob(digest, MAX_SMALL)
        if sha256(manifest) != digest:
            raise Refused(f"{path}: manifest does not match its digest (tampered)")
        artifact = Artifact(manifest, blob)
        # Read everything now: the archive closes when this function returns.
        cache = {}
        for d in [artifact.manifest.get("config") or {}, *artifact.manifest.get("layers", [])]:
            sized = isinstance(d, dict) and isinstance(d.get("size"), int) and d["size"] <= MAX_BLOB
            if sized and DIGEST.match(str(d.get("digest", ""))):
                cache[d["digest"]] = read("blobs/sha256/" + d["digest"].split(":", 1)[1], d["size"])
        return Artifact(manifest, lambda d, size: cache.get(d, b""))
