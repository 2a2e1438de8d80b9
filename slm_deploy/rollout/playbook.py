"""`slm-deploy rollout FLEET`: an Ansible inventory and playbook that roll one signed release out in
waves (issue 25). Ansible is the engine; this writes its input and reads its reports.

Waves are the fleet's rings (slm_deploy.fleet.waves), played as one play whose `serial` is the list
of ring sizes, hosts listed ring by ring, so Ansible's batches are exactly the rings; a batch in
which more than `max_fail_percentage` of its boxes fail ends the play, and no later ring is touched
(Ansible "Controlling playbook execution: strategies and more", serial and max_fail_percentage).

On each box: copy the box agent (the slm_deploy/rollout/boxagent package, as the folder slm-box:
see slm_deploy/rollout/shipping.py) and the release keys, copy the box's OCI layout archive, let
the agent verify and install it beside the previous release, create missing secrets
(init-secrets.sh only creates what is missing), `docker compose up --wait` through
community.docker.docker_compose_v2, then the health gate: `slm-deploy smoke` from the controller
against the box's gateway, then the plan gate on the box (slm_deploy/rollout/planguard.py, copied as
slm-plan-gate.py): the model server's own start-up figures against the bundle's plan.json, within
its stated tolerance. Any failure rolls the box back to the previous release (and brings that
up), records it, and fails the host so that the wave's threshold counts it. A JSON report per box is
written on the controller either way; `slm-deploy fleet status` reads them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from slm_deploy.bundle.swap import OPERATOR_ENTRIES
from slm_deploy.errors import InputError
from slm_deploy.fleet import Fleet, waves
from slm_deploy.rollout import planguard
from slm_deploy.rollout.shipping import AGENT_DIR, PULL_SCRIPT, PULL_SERVICE, PULL_TIMER, agent_tasks, copy_agent
from slm_deploy.yamlout import dump

PLAN_GATE = Path(planguard.__file__)
# How long the plan gate waits for the model server's start-up lines after the smoke gate passed
# (the smoke requests have loaded the model: Ollama loads on the first request).
PLAN_GATE_WAIT_SECONDS = 120
UNREACHABLE = "the box stopped answering during the rollout (Ansible: unreachable), or the run was cut off: its state is unknown"


def inventory(fleet: Fleet, hosts: dict[str, dict[str, Any]], artifacts: str = "artifacts", out: str = ".") -> dict[str, Any]:
    """The fleet's boxes, ring by ring. Defaults are group variables, which a box's own variables
    (from --hosts) override; play variables would win over both (Ansible variable precedence)."""
    groups: dict[str, Any] = {}
    ordered: dict[str, Any] = {}
    for ring, boxes in waves(fleet):
        groups[f"ring_{ring.replace('-', '_')}"] = {"hosts": {b.id: None for b in boxes}}
        for box in boxes:
            ordered[box.id] = {
                "ansible_host": box.id,
                "slm_gateway_port": box.options.gateway_port,
                **hosts.get(box.id, {}),
                "slm_ring": ring,
            }
    unknown = sorted(set(hosts) - set(ordered))
    if unknown:
        raise InputError("--hosts", unknown[0], "not a box of this fleet")
    defaults = {
        "slm_root": "/srv/slm-deploy",
        "slm_deploy": "slm-deploy",
        "slm_artifacts": artifacts,
        # Absolute: `fetch` resolves a relative dest against the playbook, `command` against the
        # working directory; run from anywhere, both must name the same folder.
        "slm_reports": f"{out}/reports",
        "slm_work": f"{out}/work",
    }
    return {"all": {"children": {"slm_fleet": {"vars": defaults, "hosts": ordered, "children": groups}}}}


def _gate_command() -> str:
    # slm_gate_host / slm_gate_connect_to: when the controller reaches the box's gateway under
    # another name or through another address (a VPN, a load balancer), as `smoke --connect-to`.
    return (
        "{{ slm_deploy }} smoke https://{{ slm_gate_host | default(ansible_host) }}:{{ slm_gateway_port }} "
        "--api-key-file {{ slm_work }}/{{ inventory_hostname }}/api_key "
        "--cacert {{ slm_work }}/{{ inventory_hostname }}/tls_cert.pem --requests 2 --max-tokens 8 "
        "{{ ('--connect-to ' + slm_gate_connect_to) if slm_gate_connect_to is defined else '' }}"
    )


def _plan_gate_command(plan_gate: str) -> str:
    # --since: the `current` link, which the box agent's install re-creates (boxagent.boxroot.set_link), so
    # its mtime is when this release was installed. A model server whose container is older was not
    # restarted by this release (its service did not change), and its start-up lines may have
    # rotated out of the log: the gate then says "not checked" rather than roll a healthy box back.
    return (
        f"python3 {plan_gate} --project {{{{ slm_project }}}} --wait {PLAN_GATE_WAIT_SECONDS} "
        "--since {{ slm_root }}/current "
        "{{ ('--docker-host ' + slm_docker_host) if slm_docker_host is defined else '' }}"
    )


def playbook(fleet: Fleet, release: str) -> list[dict[str, Any]]:
    sizes = [len(boxes) for _, boxes in waves(fleet)]
    agent = f"{{{{ slm_root }}}}/bin/{AGENT_DIR}"
    plan_gate = "{{ slm_root }}/bin/slm-plan-gate.py"
    install = (
        f"python3 {agent} install --box {{{{ inventory_hostname }}}} --fleet {fleet.name} "
        f"--allowed-signers {{{{ slm_root }}}}/allowed_signers "
        f"--layout {{{{ slm_root }}}}/incoming/{release}.oci.tar --root {{{{ slm_root }}}}"
        + "".join(f" --operator-entry {entry}" for entry in OPERATOR_ENTRIES)
    )
    compose_up = {
        "community.docker.docker_compose_v2": {
            "project_src": "{{ slm_project }}",
            "state": "present",
            "remove_orphans": True,
            "wait": True,
            "wait_timeout": fleet.rollout.wait_seconds,
            "docker_host": "{{ slm_docker_host | default(omit) }}",
        }
    }
    report = {
        "ansible.builtin.copy": {
            "dest": "{{ slm_reports }}/{{ inventory_hostname }}.json",
            "mode": "0644",
            "content": (
                "{{ {'box': inventory_hostname, 'ring': slm_ring, 'release': slm_release, "
                "'installed': slm_installed | default(false), 'gate': slm_gate | default('not run'), "
                "'smoke': slm_smoke_gate | default('not run'), 'plan': slm_plan_gate | default('not run'), "
                "'plan_detail': slm_plan_detail | default(''), "
                "'rolled_back': slm_rolled_back | default(false), 'error': slm_error | default('')} "
                "| to_nice_json(sort_keys=true) }}\n"
            ),
        },
        "delegate_to": "localhost",
        "become": False,
    }
    # Written before the box is touched and overwritten by the final report: a box that stops
    # answering is removed from the play by Ansible (no rescue, no report; strategy/__init__.py
    # `is_unreachable`), so this is what `fleet status` then shows for it (outside review F1).
    started = {
        "name": "Report: started (kept if the box stops answering)",
        "ansible.builtin.copy": {
            "dest": "{{ slm_reports }}/{{ inventory_hostname }}.json",
            "mode": "0644",
            "content": (
                "{{ {'box': inventory_hostname, 'ring': slm_ring, 'release': slm_release, 'installed': false, "
                "'gate': 'unreachable', 'rolled_back': false, 'error': '" + UNREACHABLE + "'} "
                "| to_nice_json(sort_keys=true) }}\n"
            ),
        },
        "delegate_to": "localhost",
        "become": False,
    }
    wave = "groups['ring_' + slm_ring | replace('-', '_')] | intersect(ansible_play_hosts_all)"  # this box's ring
    tasks: list[dict[str, Any]] = [
        started,
        {
            "name": "Rollout",
            "block": [
                {
                    "name": "Folders",
                    "ansible.builtin.file": {"path": "{{ item }}", "state": "directory", "mode": "0755"},
                    "loop": ["{{ slm_root }}/bin", "{{ slm_root }}/incoming"],
                },
                *agent_tasks(agent),
                {
                    "name": "Plan gate",
                    "ansible.builtin.copy": {"src": "files/slm-plan-gate.py", "dest": plan_gate, "mode": "0755"},
                },
                {
                    "name": "Release keys",
                    "ansible.builtin.copy": {
                        "src": "files/allowed_signers",
                        "dest": "{{ slm_root }}/allowed_signers",
                        "mode": "0644",
                    },
                },
                {
                    "name": "Release artifact",
                    "ansible.builtin.copy": {
                        "src": "{{ slm_artifacts }}/{{ inventory_hostname }}.oci.tar",
                        "dest": f"{{{{ slm_root }}}}/incoming/{release}.oci.tar",
                        "mode": "0644",
                    },
                },
                {
                    "name": "Verify the signature and manifest, install beside the previous release",
                    "ansible.builtin.command": install,
                    "register": "slm_install",
                    "changed_when": True,
                },
                {
                    "name": "Installed",
                    "ansible.builtin.set_fact": {
                        "slm_installed": True,
                        "slm_project": "{{ (slm_install.stdout | from_json).project }}",
                    },
                },
                {
                    "name": "Secrets (only missing ones are created)",
                    "ansible.builtin.command": {"cmd": "sh ./init-secrets.sh", "chdir": "{{ slm_project }}"},
                    "changed_when": False,
                },
                {"name": "Up, waiting for every healthcheck", **compose_up},
                {
                    "name": "Gate credentials",
                    "ansible.builtin.fetch": {
                        "src": "{{ slm_project }}/{{ item.src }}",
                        "dest": "{{ slm_work }}/{{ inventory_hostname }}/{{ item.dest }}",
                        "flat": True,
                    },
                    "loop": [
                        {"src": "secrets/api_key", "dest": "api_key"},
                        {"src": "gateway/tls_cert.pem", "dest": "tls_cert.pem"},
                    ],
                    "no_log": True,
                },
                {"name": "Gates reached", "ansible.builtin.set_fact": {"slm_smoke_gate": "failed"}},
                {
                    "name": "Health gate: smoke against the gateway",
                    "ansible.builtin.command": _gate_command(),
                    "delegate_to": "localhost",
                    "become": False,
                    "register": "slm_smoke",
                    "changed_when": False,
                },
                {"name": "Smoke passed", "ansible.builtin.set_fact": {"slm_smoke_gate": "passed", "slm_plan_gate": "failed"}},
                {
                    "name": "Health gate: the model server's start-up report against the plan",
                    "ansible.builtin.command": _plan_gate_command(plan_gate),
                    "register": "slm_plan_run",
                    "changed_when": False,
                    "failed_when": False,
                },
                {
                    "name": "Plan gate result",
                    "ansible.builtin.set_fact": {
                        "slm_plan_gate": (
                            "{{ (slm_plan_run.stdout_lines | last | default('{}') | from_json).result | default('failed') }}"
                        ),
                        "slm_plan_detail": (
                            "{{ slm_plan_run.stdout_lines | select('search', ': (failed|not checked): ') | join('; ') }}"
                        ),
                    },
                },
                {
                    "name": "Plan gate passed",
                    "ansible.builtin.fail": {
                        "msg": (
                            "plan gate: {{ slm_plan_detail or (slm_plan_run.stderr | default('') | truncate(300)) or 'failed' }}"
                        )
                    },
                    "when": "slm_plan_run.rc != 0",
                },
                {"name": "Gate passed", "ansible.builtin.set_fact": {"slm_gate": "passed"}},
                {
                    "name": "Gate result in the box's release metrics (fleet view)",
                    "ansible.builtin.command": f"python3 {agent} gate --root {{{{ slm_root }}}} --result passed",
                    "failed_when": False,  # a metric that cannot be written never rolls back a release that passed
                    "changed_when": False,
                },
            ],
            "rescue": [
                {
                    "name": "Record the failure",
                    "ansible.builtin.set_fact": {
                        "slm_gate": "{{ 'failed' if slm_installed | default(false) else 'not run' }}",
                        "slm_error": (
                            "{{ (ansible_failed_result.stderr | default(ansible_failed_result.msg | default(''))) "
                            "| string | truncate(400) }}"
                        ),
                    },
                },
                {
                    # before the rollback: the failed release's result stays visible beside the
                    # rolled-back state (slm_release_gate_passed{release=...} 0)
                    "name": "Gate result in the box's release metrics (fleet view)",
                    "ansible.builtin.command": f"python3 {agent} gate --root {{{{ slm_root }}}} --result failed",
                    "when": "slm_installed | default(false)",
                    "failed_when": False,
                    "changed_when": False,
                },
                {
                    "name": "Roll back to the previous release",
                    "ansible.builtin.command": f"python3 {agent} rollback --root {{{{ slm_root }}}}",
                    "when": "slm_installed | default(false)",
                    "register": "slm_rollback",
                    "failed_when": False,
                    "changed_when": True,
                },
                {
                    "name": "The previous release's folder",
                    "ansible.builtin.set_fact": {"slm_project": "{{ (slm_rollback.stdout | from_json).project }}"},
                    "when": "slm_installed | default(false) and slm_rollback.rc | default(1) == 0",
                },
                {
                    "name": "Bring the previous release up",
                    **compose_up,
                    "when": "slm_installed | default(false) and slm_rollback.rc | default(1) == 0",
                },
                {
                    "name": "Rolled back",
                    "ansible.builtin.set_fact": {
                        "slm_rolled_back": "{{ slm_rollback.rc | default(1) == 0 }}",
                        "slm_failed": True,
                    },
                },
            ],
        },
        {"name": "Report", **report},
        # Unreachable boxes count against the wave like failed ones. Ansible does not count them:
        # the linear strategy compares only its failed hosts with max_fail_percentage
        # (plugins/strategy/linear.py, ansible-core 2.19, `len(self._tqm._failed_hosts) /
        # iterator.batch_size`), and the playbook executor stops only when every host of the batch
        # is failed or unreachable (executor/playbook_executor.py, `len(batch) == failed_hosts_count`).
        # Here every box of the wave that is still in play knows which of the wave's boxes left it.
        {
            "name": "The wave's verdict (failed and unreachable boxes)",
            "ansible.builtin.set_fact": {
                "slm_wave_lost": f"{{{{ {wave} | difference(ansible_play_batch) }}}}",
                "slm_wave_size": f"{{{{ {wave} | length }}}}",
                "slm_wave_failed": (
                    "{{ ansible_play_batch | map('extract', hostvars) | selectattr('slm_failed', 'defined') "
                    "| selectattr('slm_failed') | list | length }}"
                ),
            },
        },
        # The box is failed only now, after every box of the wave has finished and reported: the
        # linear strategy checks max_fail_percentage after each task (ansible/ansible#32255), so a
        # failure raised inside the block would cut the wave's other boxes off between two steps.
        # When unreachable boxes tip the wave over the threshold, every box still in play fails, so
        # that Ansible stops before the next wave.
        {
            "name": "Fail this box (counts against the wave)",
            "ansible.builtin.fail": {
                "msg": (
                    "{{ slm_error if slm_failed | default(false) else 'the wave stops: ' + slm_wave_lost | join(', ') "
                    "+ ' unreachable, ' + slm_wave_failed | string + ' failed, of ' + slm_wave_size | string + ' boxes' }}"
                )
            },
            "when": (
                "slm_failed | default(false) or (slm_wave_lost | length > 0 and "
                "(slm_wave_lost | length + slm_wave_failed | int) * 100 > "
                f"{fleet.rollout.max_fail_percentage} * slm_wave_size | int)"
            ),
        },
    ]
    return [
        {
            "name": f"Roll out {fleet.name} release {release}",
            "hosts": "slm_fleet",
            "serial": sizes,
            "max_fail_percentage": fleet.rollout.max_fail_percentage,
            "gather_facts": False,
            "become": True,
            "vars": {"slm_release": release},
            "tasks": tasks,
        }
    ]


def write_rollout(
    out: Path, fleet: Fleet, release: str, artifacts: Path, allowed_signers: Path, hosts: dict[str, dict[str, Any]]
) -> list[Path]:
    if not allowed_signers.is_file():
        raise InputError(str(allowed_signers), "", "no allowed_signers file (the release public keys the boxes trust)")
    missing = [b.id for b in fleet.boxes if not (artifacts / f"{b.id}.oci.tar").is_file()]
    if missing:
        raise InputError(str(artifacts), "", f"no {missing[0]}.oci.tar: run `slm-deploy publish --layout {artifacts}` first")
    plays = playbook(fleet, release)
    files = {
        "inventory.yml": dump(inventory(fleet, hosts, str(artifacts.resolve()), str(out.resolve()))),
        # Ansible's default of 5 boxes at a time would make a 10,000-box wave take days.
        "ansible.cfg": "[defaults]\nforks = 50\n",
        "playbook.yml": dump(plays),
        "pull/slm-deploy-pull.sh": PULL_SCRIPT.format(
            agent=AGENT_DIR, operator="".join(f" \\\n  --operator-entry {e}" for e in OPERATOR_ENTRIES)
        ),
        "pull/slm-deploy-pull.service": PULL_SERVICE,
        "pull/slm-deploy-pull.timer": PULL_TIMER,
    }
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    (out / "files").mkdir(parents=True, exist_ok=True)
    copy_agent(out / "files" / AGENT_DIR)
    shutil.copyfile(PLAN_GATE, out / "files" / "slm-plan-gate.py")
    shutil.copyfile(allowed_signers, out / "files" / "allowed_signers")
    (out / "reports").mkdir(exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    (out / "work").chmod(0o700)  # the boxes' API keys, fetched for the gate
    return written
