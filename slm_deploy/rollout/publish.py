"""`slm-deploy publish`: each box's bundle as a signed OCI artifact, pushed to a registry and/or
written as an OCI image layout archive for a box with no network (issue 25).

The artifact (OCI image manifest 1.1 with `artifactType`, which registries that predate 1.1 store
as an ordinary manifest): a config blob naming the box, fleet and release; the bundle archive
(`slm-deploy bundle --tar`'s reproducible .tar.gz); the release statement; and its SSH signature.
The verifier is slm_deploy/rollout/boxagent/, the same code the box runs.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slm_deploy.atomicfile import write_atomic
from slm_deploy.bundle import BoxBundle
from slm_deploy.bundle.swap import OPERATOR_ENTRIES
from slm_deploy.bundle.writer import TAR_MTIME, tar_bytes
from slm_deploy.errors import InputError
from slm_deploy.rollout import boxagent as agent


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    title: str = ""

    @property
    def digest(self) -> str:
        return agent.sha256(self.data)

    def descriptor(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.title:
            out["annotations"] = {"org.opencontainers.image.title": self.title}
        return out


@dataclass(frozen=True)
class Release:
    box: str
    fleet: str
    release: str
    config: Blob
    layers: tuple[Blob, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        return agent.sha256(self.manifest)

    @property
    def tag(self) -> str:
        return f"{self.box}-{self.release}"


def _canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign(statement: bytes, key: Path) -> bytes:
    """`ssh-keygen -Y sign` over the statement with the release key (an OpenSSH private key file,
    or its public half when the private key lives in ssh-agent)."""
    if not key.is_file():
        raise InputError(str(key), "", "no such key file (make one: ssh-keygen -t ed25519 -f release_key -N '')")
    with tempfile.TemporaryDirectory(prefix="slm-sign-") as tmp:
        message = Path(tmp, "statement")
        message.write_bytes(statement)
        try:
            done = subprocess.run(
                ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", agent.NAMESPACE, str(message)],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        except FileNotFoundError:
            raise InputError(str(key), "", "ssh-keygen is not installed (apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise InputError(str(key), "", "ssh-keygen did not sign within 60 s (a passphrase prompt? use ssh-agent)") from None
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise InputError(str(key), "", f"ssh-keygen cannot sign with it: {why[-1] if why else 'failed'}")
        return Path(tmp, "statement.sig").read_bytes()


def build_release(bundle: BoxBundle, fleet: str, release: str, key: Path, sequence: int = 0) -> Release:
    archive = Blob(agent.BUNDLE_TYPE, tar_bytes(bundle), f"{bundle.box.id}.tar.gz")
    config = Blob(
        agent.CONFIG_TYPE,
        _canonical(
            {
                "box": bundle.box.id,
                "bundle": archive.digest,
                "fleet": fleet,
                "operator_entries": list(OPERATOR_ENTRIES),
                "release": release,
                "sequence": sequence,
            }
        ),
    )
    try:
        statement_bytes = agent.statement_text(fleet, bundle.box.id, release, str(sequence), archive.digest, config.digest)
    except agent.Refused as exc:
        raise InputError("--release", "", str(exc).removeprefix("statement: release: ")) from None
    statement = Blob(agent.STATEMENT_TYPE, statement_bytes, "statement")
    signature = Blob(agent.SIGNATURE_TYPE, sign(statement.data, key), "statement.sig")
    layers = (archive, statement, signature)
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": agent.MANIFEST_TYPE,
            "artifactType": agent.ARTIFACT_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
            "annotations": {"org.opencontainers.image.version": release, "dev.slm-deploy.box": bundle.box.id},
        }
    )
    return Release(bundle.box.id, fleet, release, config, layers, manifest)


def layout_bytes(release: Release) -> bytes:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/...) as one reproducible tar."""
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": agent.INDEX_TYPE,
            "manifests": [
                {
                    "mediaType": agent.MANIFEST_TYPE,
                    "artifactType": agent.ARTIFACT_TYPE,
                    "digest": release.digest,
                    "size": len(release.manifest),
                    "annotations": {"org.opencontainers.image.ref.name": release.tag},
                }
            ],
        }
    )
    files = {"oci-layout": _canonical({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for data in [release.manifest, release.config.data, *(layer.data for layer in release.layers)]:
        files["blobs/sha256/" + agent.sha256(data).split(":", 1)[1]] = data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, TAR_MTIME
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, TAR_MTIME
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def write_layout(out: Path, release: Release) -> Path:
    """OUT/BOX.oci.tar, whole or not at all (slm_deploy.atomicfile)."""
    dest = out / f"{release.box}.oci.tar"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(str(out), "", f"cannot create the folder: {exc.strerror or exc}") from None
    write_atomic(dest, layout_bytes(release))
    return dest
