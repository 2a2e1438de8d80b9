"""How the box agent reaches a box and stays right there: the files `rollout` writes for it, the
playbook's tasks that put them on the box, and the pull variant's script and systemd units.

The agent is the slm_deploy/rollout/boxagent package. A box gets the folder slm-box/: the package as
slm-box/boxagent/ and its __main__.py on top, so `python3 /srv/slm-deploy/bin/slm-box ...` runs it
with the box's own python3 (Python runs a folder's __main__.py with the folder on sys.path[0]).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from slm_deploy.rollout import boxagent

AGENT = Path(boxagent.__file__).parent  # the package's folder; on a box, slm-box/boxagent/
AGENT_DIR = "slm-box"  # `python3 slm-box ...` runs slm-box/__main__.py
EARLIER_AGENT = "slm-box.py"  # the one-file agent of the releases before the package


def agent_files() -> list[tuple[str, Path]]:
    """The box agent as a box gets it: (path inside the slm-box folder, source file), sorted. The
    package's modules go to boxagent/, its __main__.py only to the top, where `python3 slm-box` looks
    for it; compiled files (__pycache__) stay behind: a box compiles for its own python3."""
    modules = sorted(path for path in AGENT.glob("*.py") if path.name != "__main__.py")
    return [("__main__.py", AGENT / "__main__.py"), *((f"{AGENT.name}/{path.name}", path) for path in modules)]


def copy_agent(folder: Path) -> list[Path]:
    """Write the slm-box folder afresh (a module dropped from the package does not linger)."""
    if folder.exists():
        shutil.rmtree(folder)
    written = []
    for rel, source in agent_files():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        written.append(path)
    return written


def agent_tasks(agent: str) -> list[dict[str, Any]]:
    """The playbook's tasks that leave exactly the shipped agent at AGENT (a path on the box):
    ansible.builtin.copy adds and overwrites but never deletes, and sets `directory_mode` only on
    the folders it creates, so the folder's mode is set on every run and whatever an earlier release
    left in it is removed (compiled files aside: the box's python3 writes those, and never loads one
    without its source). The one-file agent goes only once the new one is in place."""
    expected = [f"{agent}/{rel}" for rel, _ in agent_files()] + [f"{agent}/{AGENT.name}"]
    return [
        {
            "name": "Box agent folder",
            "ansible.builtin.file": {"path": agent, "state": "directory", "mode": "0755"},
        },
        {
            "name": "Box agent",
            # `src` ends in a slash: the folder's contents into `dest`; `directory_mode` is what
            # the folders it creates get, `mode` each file.
            "ansible.builtin.copy": {"src": f"files/{AGENT_DIR}/", "dest": agent, "mode": "0644", "directory_mode": "0755"},
        },
        {
            "name": "Box agent: what earlier releases left in its folder",
            "ansible.builtin.find": {"paths": agent, "recurse": True, "file_type": "any", "hidden": True},
            "register": "slm_agent_found",
        },
        {
            "name": "Box agent: remove it",
            "ansible.builtin.file": {"path": "{{ item }}", "state": "absent"},
            "loop": "{{ slm_agent_found.files | map(attribute='path') | reject('search', '/__pycache__(/|$)')"
            " | difference(slm_agent_expected) | sort }}",
            "vars": {"slm_agent_expected": expected},
        },
        {
            "name": "Earlier box agent",
            "ansible.builtin.file": {"path": f"{agent.rsplit('/', 1)[0]}/{EARLIER_AGENT}", "state": "absent"},
        },
    ]


PULL_SCRIPT = """\
#!/bin/sh
# The pull variant (boxes behind NAT, issue 25): fetch this box's release tag, verify the signature
# and manifest, install it beside the previous one, bring it up, and roll back when it does not come
# up healthy. Run by slm-deploy-pull.timer; SLM_BOX, SLM_FLEET and SLM_REGISTRY come from /etc/slm-deploy/pull.env.
# SLM_REGISTRY_AUTH_FILE (optional): a docker config.json or user:password, mode 0600, for a
# private registry.
set -eu
ROOT=/srv/slm-deploy
AGENT="$ROOT/bin/{agent}"
rc=0
python3 "$AGENT" install --box "$SLM_BOX" --allowed-signers "$ROOT/allowed_signers" \\
  --registry "$SLM_REGISTRY:$SLM_BOX" --root "$ROOT" --fleet "$SLM_FLEET" \\
  ${{SLM_REGISTRY_AUTH_FILE:+--registry-auth "$SLM_REGISTRY_AUTH_FILE"}}{operator} || rc=$?
# 3: this release failed here before and was rolled back; it stays off until a newer release is
# promoted or the operator runs the install with --retry-failed (not every tick, forever).
if [ "$rc" -eq 3 ]; then exit 0; fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
# The release folder itself, not the `current` link: through the link every release has the same
# bind-mount paths and `up` would keep the old containers on the old files.
up() {{ (cd "$(readlink -f "$ROOT/current")" && docker compose up -d --wait --remove-orphans); }}
if ! up; then
  failed="$(readlink -f "$ROOT/current")"
  if python3 "$AGENT" rollback --root "$ROOT" --failed "did not come up healthy (docker compose up --wait)"; then
    up
  else
    (cd "$failed" && docker compose down)  # the box's first release: nothing to go back to
  fi
  exit 1
fi
"""

PULL_SERVICE = """\
[Unit]
Description=slm-deploy: fetch, verify and apply this box's release
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
EnvironmentFile=/etc/slm-deploy/pull.env
ExecStart=/srv/slm-deploy/bin/slm-deploy-pull.sh
"""

PULL_TIMER = """\
[Unit]
Description=slm-deploy: check for this box's release every 15 minutes

[Timer]
OnBootSec=5min
OnUnitActiveSec=15min
RandomizedDelaySec=10min

[Install]
WantedBy=timers.target
"""
