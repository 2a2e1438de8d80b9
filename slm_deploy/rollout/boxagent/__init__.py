"""The box's side of a release: verify a signed bundle artifact, install it beside the previous one,
switch, roll back, and report. Python standard library plus `ssh-keygen` only (issue 25).

This package is copied to each box (by the rollout playbook, or by hand for the pull variant) and
runs there with the box's own python3 (`python3 /srv/slm-deploy/bin/slm-box ...`: __main__.py);
`slm-deploy verify --artifact` imports the same code, so the check a box makes is the check the
tests make. Its modules import nothing but the standard library and each other, relatively, so the
same files work as slm_deploy.rollout.boxagent here and as the top-level package boxagent on a box
(tests/test_rollout.py guards that), and keep to Python 3.9 syntax at run time (no `match`, no
`tarfile` filters: Debian 11 and Ubuntu 22.04 boxes have 3.9 and 3.10).

One module per concern, each importing only those above it:
  statement   what a release signs (fleet, box, release, sequence, digests); Refused
  signature   the statement's SSH signature, checked with the box's ssh-keygen
  artifact    the OCI artifact, from a layout archive; its verification for this box
  registry    the pull variant: the artifact from an OCI registry, with its login
  unpack      the bundle's files into a release folder; an offline box's images archive
  boxroot     the release root's links, marks and statements
  metrics     the release state as node-exporter textfile metrics (the fleet view)
  releases    install, switch, roll back
  cli         the command line (verify, install, rollback, gate)
"""

from .artifact import (
    ARTIFACT_TYPE,
    BUNDLE_TYPE,
    CONFIG_TYPE,
    INDEX_TYPE,
    MANIFEST_TYPE,
    SIGNATURE_TYPE,
    STATEMENT_TYPE,
    Artifact,
    read_layout,
)
from .boxroot import DEFAULT_ROOT
from .cli import main
from .metrics import METRICS_DIR, METRICS_FILE, record_state
from .registry import fetch, read_credentials
from .releases import FailedBefore, install, rollback
from .signature import check_openssh, verify_signature
from .statement import DIGEST, NAME, NAMESPACE, RELEASE, SEQUENCE, Refused, parse_statement, principal, sha256, statement_text
from .unpack import DOCKER_ENV, load_images, unpack

__all__ = [
    "ARTIFACT_TYPE",
    "BUNDLE_TYPE",
    "CONFIG_TYPE",
    "DEFAULT_ROOT",
    "DIGEST",
    "DOCKER_ENV",
    "INDEX_TYPE",
    "MANIFEST_TYPE",
    "METRICS_DIR",
    "METRICS_FILE",
    "NAME",
    "NAMESPACE",
    "RELEASE",
    "SEQUENCE",
    "SIGNATURE_TYPE",
    "STATEMENT_TYPE",
    "Artifact",
    "FailedBefore",
    "Refused",
    "check_openssh",
    "fetch",
    "install",
    "load_images",
    "main",
    "parse_statement",
    "principal",
    "read_credentials",
    "read_layout",
    "record_state",
    "rollback",
    "sha256",
    "statement_text",
    "unpack",
    "verify_signature",
]
