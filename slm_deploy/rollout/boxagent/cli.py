"""The box agent's command line: verify, install, rollback, gate. One JSON line on stdout; errors
are one line on stderr, exit 2 (exit 3: a release that failed here before, not installed again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .artifact import read_layout
from .boxroot import DEFAULT_ROOT
from .metrics import GATE_RESULTS, record_state
from .registry import fetch
from .releases import FailedBefore, install, rollback
from .statement import Refused


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
