"""The box's side of a release: verify a signed bundle artifact, install it beside the previous one,
switch, roll back, and report. Python standard library plus `ssh-keygen` only (issue 25).

This one file is copied to each box (by the rollout playbook, or by hand for the pull variant) and
runs there with the box's own python3; `slm-deploy verify --artifact` imports the same code, so the
check a box makes is the check the tests make. It imports nothing from slm_deploy
(tests/test_rollout.py guards that) and keeps to Python 3.9 syntax at run time (no `match`, no
`tarfile` filters: Debian 11 and Ubuntu 22.04 boxes have 3.9 and 3.10).

Why ssh-keygen: an SSH signature (`ssh-keygen -Y sign/verify`, OpenSSH 8.1+, the SSHSIG format)
verifies offline with the openssh-client every Linux box already has; an allowed_signers file names
the release keys with `namespaces=` and `valid-after=`/`valid-before=` options, which is the key
rotation: add the new key's line, sign with the new key, remove the old line
(ssh-keygen(1) "ALLOWED SIGNERS"; the windows need OpenSSH 8.7+, see check_openssh). Ed25519
signatures are deterministic, so the same bundle signed with the same key is byte-identical.

What is signed: a short statement naming the fleet, the box, the release, its sequence (the
order: a lower one than the current release's is a downgrade, refused unless --allow-downgrade) and
the sha256 of the bundle archive and of the artifact's config. A bundle signed for another box, a changed archive,
an unsigned artifact, or one signed by a key not in allowed_signers is refused before anything on
the box changes.

Layout on the box (ROOT, default /srv/slm-deploy):
  ROOT/releases/<release>/<box>/   one extracted bundle per release (compose project dir; the
                                   compose file names its project, so volumes stay the same)
  ROOT/current, ROOT/previous       symbolic links to release folders
Operator files (secrets/, .env, overrides, certs/) are copied from the current release into the
new one, so a release never loses what the operator put there; before the first release, from
ROOT/operator/ when the operator prepared one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

ARTIFACT_TYPE = "application/vnd.slm-deploy.release.v1"
CONFIG_TYPE = "application/vnd.slm-deploy.release.config.v1+json"
BUNDLE_TYPE = "application/vnd.slm-deploy.bundle.v1.tar+gzip"
STATEMENT_TYPE = "application/vnd.slm-deploy.statement.v1"
SIGNATURE_TYPE = "application/vnd.slm-deploy.signature.v1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
NAMESPACE = "slm-deploy-release"
STATEMENT_HEADER = "slm-deploy release statement v2"
# v1 statements carried no release order: a box refuses them (a replayed old artifact could not be
# told from a new one; outside review F4).
STATEMENT_KEYS = ("fleet", "box", "release", "sequence", "bundle", "config")
SEQUENCE = re.compile(r"^(0|[1-9][0-9]{0,17})$")  # decimal, canonical (no leading zeros), < 10**18
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # slm_deploy.fleet.BOX_ID_PATTERN
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_BLOB = 256 * 1024 * 1024  # a bundle is kilobytes; an offline image tarball never travels in it
MAX_SMALL = 1024 * 1024  # manifests, config, statement, signature
MAX_ARCHIVE_MEMBERS = 10000
DEFAULT_ROOT = "/srv/slm-deploy"
KEEP_RELEASES = 2
OPENSSH_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")
WINDOW_OPTION = re.compile(r"(^|[\s,])valid-(after|before)=", re.IGNORECASE)
MIN_OPENSSH = (8, 1)
WINDOWS_OPENSSH = (8, 7)
STATEMENT_FILE = "statement"  # releases/<release>/statement: the verified statement, for the order
FAILED = "failed"  # ROOT/failed/<release>.json: a release that failed its gate here (F2)
# ROOT/sequence.json: the highest sequence ever installed here. Compared besides the current
# release's, which may be gone (a failed first release is unlinked) or older (after a rollback).
HIGH_WATER = "sequence.json"
DOCKER_ENV = "SLM_DEPLOY_DOCKER"  # as slm_deploy.supply.loaded: the docker command to use
LOAD_TIMEOUT = 3600  # docker load of a model server image of several GB from a slow disk


class Refused(Exception):
    """The artifact is not one this box may install; nothing on the box changed."""


class FailedBefore(Refused):
    """The release failed on this box and was rolled back: not installed again until a newer
    release or an explicit --retry-failed (outside review F2: the pull timer retried it forever)."""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def principal(fleet: str) -> str:
    return f"release@{fleet}"


def statement_text(fleet: str, box: str, release: str, sequence: str, bundle: str, config: str) -> bytes:
    values = {"fleet": fleet, "box": box, "release": release, "sequence": sequence, "bundle": bundle, "config": config}
    for key in ("fleet", "box"):
        if not NAME.match(values[key]):
            raise Refused(f"statement: {key}: {values[key]!r} is not a fleet or box name")
    if not RELEASE.match(release):
        raise Refused(f"statement: release: {release!r} is not a release name (letters, digits, . _ -; at most 64)")
    if not SEQUENCE.match(sequence):
        raise Refused(f"statement: sequence: {sequence!r} is not a whole number from 0 to 10**18 - 1")
    for key in ("bundle", "config"):
        if not DIGEST.match(values[key]):
            raise Refused(f"statement: {key}: not a sha256 digest")
    return (STATEMENT_HEADER + "\n" + "".join(f"{k} {values[k]}\n" for k in STATEMENT_KEYS)).encode()


def parse_statement(data: bytes) -> dict[str, str]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Refused("statement: not ASCII") from None
    lines = text.split("\n")
    if lines[0] == "slm-deploy release statement v1":
        raise Refused("statement: v1, which carries no release order (a replay could downgrade the box); republish the release")
    if lines[0] != STATEMENT_HEADER or lines[-1] != "" or len(lines) != len(STATEMENT_KEYS) + 2:
        raise Refused("statement: not a release statement slm-deploy writes")
    values: dict[str, str] = {}
    for key, line in zip(STATEMENT_KEYS, lines[1:-1]):  # noqa: B905 (lengths checked above; strict= is 3.10+)
        name, _, value = line.partition(" ")
        if name != key:
            raise Refused(f"statement: expected {key!r}, found {name!r}")
        values[key] = value
    # Re-rendering refuses any value that is not of its shape, and proves the parse was exact.
    if statement_text(**values) != data:
        raise Refused("statement: not in canonical form")
    return values


def openssh_version() -> tuple[int, int] | None:
    """The box's OpenSSH version from `ssh -V` (openssh-client ships ssh and ssh-keygen together;
    ssh-keygen has no version flag), or None when it cannot be told."""
    try:
        done = subprocess.run(["ssh", "-V"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = OPENSSH_VERSION.search((done.stderr + done.stdout).decode(errors="replace"))
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_openssh(allowed_signers: str) -> bool:
    """Refuse, with the version found, an OpenSSH too old for what allowed_signers asks of it.
    True when the file uses key windows and the version could not be told.

    `valid-after`/`valid-before` (the key rotation windows) exist from OpenSSH 8.7 (sshsig.c at
    V_8_7_P1, sshsigopt_parse). Before that, sshsigopt_parse answers "unknown key option" for
    them, and sshsig_check_allowed_keys stops at that line with an error (sshsig.c at V_8_4_P1,
    lines 659 and 758): every signature of the fleet is then refused with a message that names
    neither the cause nor the version. `-Y verify` itself exists from 8.1 (ssh-keygen.c at V_8_1_P1)."""
    with open(allowed_signers, encoding="utf-8", errors="replace") as handle:
        windows = any(WINDOW_OPTION.search(line) for line in handle if not line.lstrip().startswith("#"))
    version = openssh_version()
    need = WINDOWS_OPENSSH if windows else MIN_OPENSSH
    if version is None:
        # No `ssh` to ask (RHEL packs it in openssh-clients, ssh-keygen in openssh): ssh-keygen is
        # the judge; a refusal then names the possible cause (verify_signature).
        return windows
    if version < need:
        found = f"OpenSSH {version[0]}.{version[1]}"
        if windows:
            raise Refused(
                f"{allowed_signers}: uses valid-after/valid-before, which OpenSSH honours from 8.7; this box has "
                f"{found}, which rejects the whole file: upgrade openssh-client, or rotate by adding and removing lines"
            )
        raise Refused(f"ssh-keygen: {found} found; `ssh-keygen -Y verify` needs OpenSSH 8.1 or later")
    return False


def verify_signature(statement: bytes, signature: bytes, fleet: str, allowed_signers: str) -> None:
    """ssh-keygen -Y verify: the signature is by a key that allowed_signers lists for this fleet's
    release principal, in the release namespace, valid now."""
    if not os.path.isfile(allowed_signers):
        raise Refused(f"{allowed_signers}: no allowed_signers file (the release public keys)")
    unknown_windows = check_openssh(allowed_signers)
    with tempfile.TemporaryDirectory(prefix="slm-verify-") as tmp:
        sig = os.path.join(tmp, "statement.sig")
        with open(sig, "wb") as handle:
            handle.write(signature)
        try:
            done = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", allowed_signers, "-I", principal(fleet), "-n", NAMESPACE, "-s", sig],
                input=statement,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except FileNotFoundError:
            raise Refused("ssh-keygen is not installed (apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise Refused("ssh-keygen did not answer within 30 s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        hint = (
            "; the file uses valid-after/valid-before, which OpenSSH before 8.7 rejects (this box's version could not be told)"
            if unknown_windows
            else ""
        )
        raise Refused(f"signature: not valid for {principal(fleet)} ({why[-1] if why else 'ssh-keygen refused it'}){hint}")


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


def _safe_members(archive: tarfile.TarFile, box: str) -> list[tarfile.TarInfo]:
    members = []
    for count, member in enumerate(archive):
        if count > MAX_ARCHIVE_MEMBERS:
            raise Refused("bundle: too many entries")
        name = member.name
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or parts[0] != box or not (member.isfile() or member.isdir()):
            raise Refused(f"bundle: entry {name!r} is not a plain file or folder under {box}/")
        members.append(member)
    return members


def unpack(bundle: bytes, box: str, dest: str) -> None:
    """Extract the bundle archive under DEST (which must not exist), then check every file against
    the bundle's own MANIFEST.json (content and mode), as `slm-deploy verify` does."""
    os.makedirs(dest, mode=0o755, exist_ok=True)
    # mkdtemp makes 0700; the containers' users (uid 10001 ...) must traverse to their bind mounts,
    # whatever the box's umask (edge review E5).
    os.chmod(dest, 0o755)
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        for member in _safe_members(archive, box):
            target = os.path.join(dest, member.name)
            if member.isdir():
                os.makedirs(target, mode=0o755, exist_ok=True)
                os.chmod(target, 0o755)
                continue
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            handle = archive.extractfile(member)
            assert handle is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(handle, out)
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
    root = os.path.join(dest, box)
    try:
        with open(os.path.join(root, "MANIFEST.json"), "rb") as handle:
            manifest = json.load(handle)
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise Refused("bundle: no readable MANIFEST.json") from None
    if manifest.get("box") != box:
        raise Refused(f"bundle: MANIFEST.json is for box {manifest.get('box')!r}")
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    found.discard("MANIFEST.json")
    if found != set(files):
        raise Refused(f"bundle: files differ from its MANIFEST.json: {sorted(found ^ set(files))[:3]}")
    for rel, entry in files.items():
        with open(os.path.join(root, rel), "rb") as handle:
            if "sha256:" + hashlib.sha256(handle.read()).hexdigest() != "sha256:" + str(entry.get("sha256", "")).removeprefix(
                "sha256:"
            ):
                raise Refused(f"bundle: {rel} does not match MANIFEST.json")
        if oct(os.stat(os.path.join(root, rel)).st_mode & 0o777)[2:].zfill(4) != entry.get("mode"):
            raise Refused(f"bundle: {rel}: mode differs from MANIFEST.json")


def _copy_keeping_owner(source: str, dest: str) -> None:
    """Copy an operator entry with its modes AND owners: init-secrets.sh gives secrets to the
    containers' user (uid 10001, mode 0600), and a copy owned by root is one the gateway cannot
    read (`cat: /run/secrets/api_key: Permission denied`, seen in tests/test_rollout_live.py)."""
    if os.path.isdir(source):
        shutil.copytree(source, dest, symlinks=True)
        pairs = [(source, dest)]
        for folder, dirs, files in os.walk(source):
            for name in dirs + files:
                here = os.path.join(folder, name)
                pairs.append((here, os.path.join(dest, os.path.relpath(here, source))))
    elif os.path.isfile(source):
        shutil.copy2(source, dest)
        pairs = [(source, dest)]
    else:
        return  # a FIFO, socket or device is no operator file
    for src, dst in pairs:
        info = os.lstat(src)
        os.lchown(dst, info.st_uid, info.st_gid)


def _link(root: str, name: str, target: str | None) -> None:
    path = os.path.join(root, name)
    if target is None:
        if os.path.lexists(path):
            os.unlink(path)
        return
    tmp = path + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)  # atomic: the link is the old or the new one, never missing


def _target(root: str, name: str) -> str | None:
    path = os.path.join(root, name)
    return os.readlink(path) if os.path.islink(path) else None


def _statement_of(root: str, link: str) -> dict[str, str] | None:
    """The verified statement of the release a link (current, previous) points at; None when there
    is none (no release yet, or one installed before releases carried an order)."""
    target = _target(root, link)
    if not target:
        return None
    try:
        with open(os.path.join(root, os.path.dirname(target), STATEMENT_FILE), "rb") as handle:
            return parse_statement(handle.read(MAX_SMALL))
    except (OSError, Refused):
        return None


def _failed_mark(root: str, release: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(root, FAILED, release + ".json"), "rb") as handle:
            mark = json.loads(handle.read(MAX_SMALL))
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in mark.items()} if isinstance(mark, dict) else None


def _write_json(path: str, data: dict[str, str]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, sort_keys=True) + "\n")
    os.replace(tmp, path)  # same folder: never a rename across filesystems


def load_images(images: str, project: str) -> list[str]:
    """`docker load -i IMAGES` (the bundle README's air-gapped step, read where the file lies: no
    copy, link or rename), then every image the bundle's images.lock.json pins must be loaded with
    the locked digest: `docker save` keeps tags, no digests, so the image Id (the config digest)
    is what is compared, as `slm-deploy verify` does (slm_deploy/supply/loaded.py)."""
    docker = os.environ.get(DOCKER_ENV) or "docker"
    if not os.path.isfile(images):
        raise Refused(f"{images}: no such images archive (docker save -o images.tar ..., README: air-gapped box)")

    def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run([docker, *args], capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise Refused(f"{docker}: not installed (an offline box needs Docker to load its images)") from None
        except subprocess.TimeoutExpired:
            raise Refused(f"{docker} {args[0]}: no answer within {int(timeout)} s") from None

    done = run(["load", "-i", images], LOAD_TIMEOUT)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise Refused(f"{images}: docker load failed: {why[-1] if why else done.returncode}")
    try:
        with open(os.path.join(project, "images.lock.json"), "rb") as handle:
            pinned = json.loads(handle.read(MAX_SMALL)).get("images") or {}
    except (OSError, ValueError, AttributeError):
        return []
    checked = []
    for ref, want in sorted(pinned.items()):
        accepted = {str(want[k]) for k in ("config", "manifest", "index") if want.get(k)} if isinstance(want, dict) else set()
        if not accepted:
            continue  # a bundle built --allow-unlocked: tag references, nothing to compare
        name = ref.split("@", 1)[0]
        seen = run(["image", "inspect", "--format", "{{.Id}}", name], 60)
        found = seen.stdout.decode(errors="replace").strip()
        if seen.returncode != 0:
            raise Refused(f"{images}: does not hold {name} (images.lock.json pins it)")
        if found not in accepted:
            raise Refused(f"{images}: {name} is {found}, images.lock.json pins {sorted(accepted)[0]}")
        checked.append(name)
    return checked


def install(
    artifact: Artifact,
    box: str,
    allowed_signers: str,
    root: str,
    operator_entries: list[str],
    fleet: str | None = None,
    allow_downgrade: bool = False,
    retry_failed: bool = False,
    images: str | None = None,
) -> dict[str, str]:
    """Verify, unpack into releases/<release>, carry the operator's files over from the current
    release, then make it current (the old current becomes previous). Returns the statement.

    Refused before anything changes: a release older (by its signed sequence) than the current one
    unless ALLOW_DOWNGRADE (a replayed old artifact; rollback stays allowed), and a release that
    failed here and was rolled back (`rollback --failed`) unless RETRY_FAILED."""
    values, bundle = artifact.verified(box, allowed_signers, fleet)
    release = values["release"]
    releases = os.path.join(root, "releases")
    final = os.path.join(releases, release)
    current = _target(root, "current")
    if current == os.path.join("releases", release, box) and os.path.isdir(final):
        return values  # already installed and current: a re-run changes nothing
    mark = _failed_mark(root, release)
    if mark is not None and mark.get("bundle") in ("", values["bundle"]) and not retry_failed:
        raise FailedBefore(
            f"release {release} failed on this box ({mark.get('reason') or 'rolled back'}) and was rolled back; "
            "not installed again: publish a newer release, or install it with --retry-failed"
        )
    newest = _newest_installed(root)
    if newest is not None and int(values["sequence"]) < int(newest["sequence"]) and not allow_downgrade:
        raise Refused(
            f"release {release} (sequence {values['sequence']}) is older than {newest['release']} "
            f"(sequence {newest['sequence']}), installed here before: a downgrade; use rollback, or --allow-downgrade"
        )
    os.makedirs(releases, mode=0o755, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{release}.", dir=releases)
    try:
        unpack(bundle, box, staging)
        with open(os.path.join(staging, STATEMENT_FILE), "wb") as handle:
            handle.write(statement_text(**values))
        if images:
            load_images(images, os.path.join(staging, box))
        # The operator's files come from the current release; before the first one, from
        # ROOT/operator/ (a compose override or certificates prepared before the first rollout).
        seed = current or ("operator" if os.path.isdir(os.path.join(root, "operator")) else None)
        if seed:
            for entry in operator_entries:
                source = os.path.join(root, seed, entry)
                if os.path.lexists(source) and not os.path.islink(source):
                    _copy_keeping_owner(source, os.path.join(staging, box, entry))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if mark is not None:
        os.unlink(os.path.join(root, FAILED, release + ".json"))
    if current and current != os.path.join("releases", release, box):
        _link(root, "previous", current)
    _link(root, "current", os.path.join("releases", release, box))
    # `newest` as read before the install: a downgrade (--allow-downgrade) never lowers the mark
    if newest is None or int(values["sequence"]) >= int(newest["sequence"]):
        _write_json(os.path.join(root, HIGH_WATER), {"release": release, "sequence": values["sequence"]})
    _prune(root)
    record_state(root, "installed", values)
    return values


def _newest_installed(root: str) -> dict[str, str] | None:
    """The newest release (by signed sequence) ever installed here: the high-water file, or the
    current release's statement where that is newer (a box from before the file existed)."""
    found: list[dict[str, str]] = []
    try:
        with open(os.path.join(root, HIGH_WATER), encoding="utf-8") as handle:
            data = json.loads(handle.read(MAX_SMALL))
        if isinstance(data, dict) and SEQUENCE.match(str(data.get("sequence", ""))):
            found.append({"release": str(data.get("release", "")), "sequence": str(data["sequence"])})
    except (OSError, ValueError):
        pass  # none yet; a damaged file is replaced at the next install
    running = _statement_of(root, "current")
    if running is not None:
        found.append(running)
    return max(found, key=lambda d: int(d["sequence"]), default=None)


def rollback(root: str, failed: str | None = None) -> str:
    """Make the previous release current again; returns its folder. With FAILED (a reason), the
    release rolled away from is remembered as failed on this box, so that the pull timer does not
    install it again at its next tick."""
    previous = _target(root, "previous")
    current = _target(root, "current")
    if failed is not None and current:
        values = _statement_of(root, "current") or {"release": current.split("/")[1], "bundle": ""}
        mark = {"release": values["release"], "bundle": values["bundle"], "reason": failed[:200]}
        _write_json(os.path.join(root, FAILED, values["release"] + ".json"), mark)
    if not previous or not os.path.isdir(os.path.join(root, previous)):
        if failed is not None and current:
            # The box's first release failed: nothing to go back to. Unlinking `current` keeps the
            # next timer tick from bringing the failed release up again.
            _link(root, "current", None)
            raise Refused(f"no previous release to roll back to; {current} is marked failed and no longer current")
        raise Refused("no previous release to roll back to")
    _link(root, "current", previous)
    _link(root, "previous", current)
    record_state(root, "rolled_back")
    return previous


def _prune(root: str) -> None:
    keep = {t.split("/")[1] for t in (_target(root, "current"), _target(root, "previous")) if t}
    releases = os.path.join(root, "releases")
    for name in sorted(os.listdir(releases)):
        if name not in keep and not name.startswith("."):
            shutil.rmtree(os.path.join(releases, name), ignore_errors=True)


# The box's release state as Prometheus metrics, for the fleet view (issue 25, item 5): a file in
# ROOT/metrics that the bundle's node-exporter reads with its textfile collector
# (node_exporter collector/textfile.go: only *.prom files, no client timestamps, plus
# node_textfile_mtime_seconds). Written to a temporary name and renamed, so a scrape never reads
# half a file; the counts it needs across runs live beside it in ROOT/metrics/state.json.
METRICS_DIR = "metrics"
METRICS_FILE = "slm-release.prom"
STATES = ("installed", "rolled_back")
GATE_RESULTS = ("passed", "failed")


def record_state(root: str, event: str, values: dict[str, str] | None = None, gate: str | None = None) -> None:
    """Never fails the install or rollback it follows: the box's state matters more than its metric."""
    try:
        _record_state(root, event, values, gate)
    except OSError as exc:
        print(f"warning: {root}/{METRICS_DIR}: release metrics not written ({exc.strerror or exc})", file=sys.stderr)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a state.json edited by hand
        print(f"warning: {root}/{METRICS_DIR}/state.json: release metrics not written ({exc})", file=sys.stderr)


def _record_state(root: str, event: str, values: dict[str, str] | None, gate: str | None) -> None:
    import time

    folder = os.path.join(root, METRICS_DIR)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    os.chmod(folder, 0o755)  # node-exporter runs as uid 10001
    path = os.path.join(folder, "state.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        assert isinstance(state, dict) and isinstance(state.get("bundles", {}), dict)
    except (OSError, ValueError, AssertionError):
        state = {}  # unreadable or not ours: start again (the release links are the truth)
    bundles = state.setdefault("bundles", {})
    now = round(time.time(), 3)
    current = _target(root, "current") or ""
    release = current.split("/")[1] if current.count("/") == 2 else ""
    if values is None and not state.get("fleet"):  # a state file lost: the current release's statement says
        values = _statement_of(root, "current")
        if values is not None and not state.get("release"):
            state.update(state="installed", release=release)
    if values is not None:
        state.update(fleet=values["fleet"], box=values["box"])
        bundles[values["release"]] = values["bundle"]
    elif not state.get("box") and current.count("/") == 2:
        state["box"] = current.split("/")[2]
    if event in STATES:
        state.update(state=event, release=release, installed_at=now)
        state["rollbacks"] = int(state.get("rollbacks", 0)) + (event == "rolled_back")
        if event == "installed":  # a new release's gate has not run; after a rollback, the failed one stays
            state.update(gate=None, gate_at=None, gate_release=None)
    elif gate in GATE_RESULTS and state.get("release") == release:
        state.update(gate=gate, gate_at=now, gate_release=release)
    state["bundles"] = {k: v for k, v in bundles.items() if os.path.isdir(os.path.join(root, "releases", k))}
    who = {"fleet": state.get("fleet", ""), "box": state.get("box", "")}
    release = state.get("release", "")
    digest = str(state["bundles"].get(release, "")).replace("sha256:", "")
    lines = _family("slm_release_info", "gauge", "The release this box runs (value 1), with its bundle's digest.")
    lines.append(_series("slm_release_info", {**who, "release": release, "bundle_sha256": digest}, 1))
    lines += _family("slm_release_state", "gauge", "1 for how the current release got there: installed, or rolled_back to.")
    lines += [_series("slm_release_state", {**who, "state": s}, int(state.get("state") == s)) for s in STATES]
    lines += _family("slm_release_installed_timestamp_seconds", "gauge", "When the current release was switched to.")
    lines.append(_series("slm_release_installed_timestamp_seconds", who, state.get("installed_at", 0)))
    lines += _family("slm_rollbacks_total", "counter", "Rollbacks on this box since the agent first ran.")
    lines.append(_series("slm_rollbacks_total", who, int(state.get("rollbacks", 0))))
    if state.get("gate"):
        lines += _family(
            "slm_release_gate_passed", "gauge", "The last health gate: 1 passed, 0 failed, for the release it tested."
        )
        tested = {**who, "release": str(state.get("gate_release") or release)}
        lines.append(_series("slm_release_gate_passed", tested, int(state["gate"] == "passed")))
        lines += _family("slm_release_gate_timestamp_seconds", "gauge", "When the last health gate ran.")
        lines.append(_series("slm_release_gate_timestamp_seconds", who, state["gate_at"]))
    for name, data in (("state.json", json.dumps(state, sort_keys=True)), (METRICS_FILE, "\n".join(lines))):
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(data + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(folder, name))


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _series(name: str, labels: dict[str, str], value: object) -> str:
    # Label values are names the statement's patterns allow (no quote, backslash or newline).
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} " + str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slm-box", description="Verify and install a signed slm-deploy release on this box.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("verify", "install"):
        p = sub.add_parser(name)
        p.add_argument("--box", required=True)
        p.add_argument("--fleet", help="this box's fleet: a release of another fleet is refused")
        p.add_argument("--allowed-signers", required=True)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--layout", help="an OCI image layout archive (offline boxes)")
        src.add_argument("--registry", help="HOST[:PORT]/REPOSITORY:TAG (the pull variant)")
        p.add_argument(
            "--registry-auth", help="credentials for a private registry: docker config.json or user:password, mode 0600"
        )
        p.add_argument("--root", default=DEFAULT_ROOT)
        p.add_argument("--operator-entry", action="append", default=[])
        if name == "install":
            p.add_argument("--images", help="an images.tar (docker save) to `docker load` and check against images.lock.json")
            p.add_argument("--allow-downgrade", action="store_true", help="install a release older than the current one")
            p.add_argument("--retry-failed", action="store_true", help="install a release that failed here before")
    p = sub.add_parser("rollback")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--failed", metavar="REASON", help="remember the release rolled away from as failed on this box")
    p = sub.add_parser("gate", help="record the health gate result of the current release (the fleet view's metrics)")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--result", required=True, choices=GATE_RESULTS)
    args = parser.parse_args(argv)
    try:
        if args.command == "gate":
            record_state(args.root, "gate", gate=args.result)
            return 0
        if args.command == "rollback":
            target = rollback(args.root, args.failed)
            print(
                json.dumps(
                    {"project": os.path.join(os.path.abspath(args.root), target), "rolled_back_to": target}, sort_keys=True
                )
            )
            return 0
        if args.layout:
            artifact = read_layout(args.layout)
        else:
            where, _, tag = args.registry.rpartition(":")
            if not where or "/" in tag:
                raise Refused("--registry: expected HOST[:PORT]/REPOSITORY:TAG")
            registry, _, repository = where.partition("/")
            artifact = fetch(registry, repository, tag, credentials=args.registry_auth)
        if args.command == "verify":
            values, _ = artifact.verified(args.box, args.allowed_signers, args.fleet)
        else:
            values = install(
                artifact,
                args.box,
                args.allowed_signers,
                args.root,
                args.operator_entry,
                args.fleet,
                allow_downgrade=args.allow_downgrade,
                retry_failed=args.retry_failed,
                images=args.images,
            )
        out = {"box": values["box"], "release": values["release"], "sequence": values["sequence"], "bundle": values["bundle"]}
        if args.command == "install":
            # Compose must be given the release folder itself, never the `current` link: with the
            # link, every release has the same bind-mount paths, the configuration hash does not
            # change, and `up` keeps the old containers on the old files (tests/test_rollout_live.py).
            out["project"] = os.path.realpath(os.path.join(args.root, "current"))
        print(json.dumps(out, sort_keys=True))
        return 0
    except FailedBefore as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3  # the pull script tells this from a refusal: nothing to do until a newer release
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {getattr(exc, 'filename', '') or args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
