"""The release statement's SSH signature, checked with the box's own `ssh-keygen -Y verify`.

Why ssh-keygen: an SSH signature (`ssh-keygen -Y sign/verify`, OpenSSH 8.1+, the SSHSIG format)
verifies offline with the openssh-client every Linux box already has; an allowed_signers file names
the release keys with `namespaces=` and `valid-after=`/`valid-before=` options, which is the key
rotation: add the new key's line, sign with the new key, remove the old line
(ssh-keygen(1) "ALLOWED SIGNERS"; the windows need OpenSSH 8.7+, see check_openssh). Ed25519
signatures are deterministic, so the same bundle signed with the same key is byte-identical.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from .statement import NAMESPACE, Refused, principal

OPENSSH_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")
WINDOW_OPTION = re.compile(r"(^|[\s,])valid-(after|before)=", re.IGNORECASE)
MIN_OPENSSH = (8, 1)
WINDOWS_OPENSSH = (8, 7)


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
