"""What a release signs: a short statement naming the fleet, the box, the release, its sequence
(the order: a lower one than the current release's is a downgrade, refused unless
--allow-downgrade) and the sha256 of the bundle archive and of the artifact's config; the names
and digests it may hold; and Refused, which every check of the box agent raises.
"""

from __future__ import annotations

import hashlib
import re

NAMESPACE = "slm-deploy-release"
STATEMENT_HEADER = "slm-deploy release statement v2"
# v1 statements carried no release order: a box refuses them (a replayed old artifact could not be
# told from a new one; outside review F4).
STATEMENT_KEYS = ("fleet", "box", "release", "sequence", "bundle", "config")
SEQUENCE = re.compile(r"^(0|[1-9][0-9]{0,17})$")  # decimal, canonical (no leading zeros), < 10**18
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # slm_deploy.fleet.BOX_ID_PATTERN
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_SMALL = 1024 * 1024  # manifests, config, statement, signature; the box's own JSON files
MAX_ARCHIVE_MEMBERS = 10000


class Refused(Exception):
    """The artifact is not one this box may install; nothing on the box changed."""


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
