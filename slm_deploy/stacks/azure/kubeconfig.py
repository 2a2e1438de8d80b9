"""The kubeconfig `listManagedClusterUserCredentials` returns, made non-interactive.

With Entra ID and local accounts off, its user runs `kubelogin get-token` in device-code mode,
which waits for a human at a browser and hangs CI. We rewrite the exec plugin to the configured
login mode (kubelogin's `convert-kubeconfig -l MODE`, done here so the runner needs no extra step)
and set AAD_LOGIN_METHOD too (https://azure.github.io/kubelogin/concepts/login-modes.html).
"""

from __future__ import annotations

from typing import Any

import yaml

# Arguments each mode does not take: azurecli and msi read the identity from the CLI / IMDS; the
# client id in the AKS kubeconfig is the Azure CLI's public client, wrong for spn/workloadidentity.
_DROP = {"azurecli": {"--client-id", "--environment"}, "msi": {"--client-id", "--environment"}}
_DROP_DEFAULT = {"--client-id"}
_FLAGS_WITHOUT_VALUE: set[str] = set()


def _rewrite_args(args: list[str], mode: str) -> list[str]:
    drop = _DROP.get(mode, _DROP_DEFAULT)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in drop or arg in {"--login", "-l"}:
            i += 1 if arg in _FLAGS_WITHOUT_VALUE else 2
            continue
        out.append(arg)
        i += 1
    return [*out, "--login", mode]


def non_interactive_kubeconfig(text: str, mode: str) -> str:
    config: dict[str, Any] = yaml.safe_load(text) or {}
    for user in config.get("users") or []:
        exec_ = (user.get("user") or {}).get("exec")
        if not exec_ or "kubelogin" not in str(exec_.get("command", "")):
            continue
        exec_["args"] = _rewrite_args([str(a) for a in exec_.get("args") or []], mode)
        env = [e for e in exec_.get("env") or [] if e.get("name") != "AAD_LOGIN_METHOD"]
        exec_["env"] = [*env, {"name": "AAD_LOGIN_METHOD", "value": mode}]
        exec_["interactiveMode"] = "Never"
    return yaml.safe_dump(config, sort_keys=True)
