"""What an image's profile (catalog/images.yaml `profiles`) asks of the container that runs it,
the same for both targets: the compose bundle and the Kubernetes pod spec are built from it, and
the profile rules (SLM-COMPOSE-014 and friends, SLM-K8S-016) read each target back through
`ContainerView` and check it against the same facts. A fact about an image is written once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from slm_deploy.catalog import Catalog, ImageProfile, load_catalog


@dataclass(frozen=True)
class ContainerView:
    """One container as either target runs it. `entrypoint`/`command` None: the image's own
    (compose `entrypoint`/`command`, Kubernetes `command`/`args`; setting the entrypoint drops the
    image's command in both)."""

    name: str
    image: str
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    exec_mounts: tuple[str, ...] = ()  # writable mounts where exec is allowed
    where: str = "service"  # "service" (compose) or "container" (Kubernetes), for messages


def profile_for(image: str, catalog: Catalog | None = None) -> ImageProfile | None:
    """The profile of the image a container runs (None for images the catalog does not pin). A
    locked reference (repository:tag@sha256:...) is the same image as its tag."""
    catalog = catalog or load_catalog()
    bare = image.split("@", 1)[0]
    for image_id, entry in catalog.images.items():
        if entry.ref.split("@", 1)[0] == bare and image_id in catalog.profiles:
            return catalog.profiles[image_id]
    return None


def argv(profile: ImageProfile, entrypoint: Sequence[str] | None, command: Sequence[str] | None) -> list[str]:
    """What the container executes: an entrypoint set by the target also drops the image's command."""
    if command is None:
        command = () if entrypoint else profile.command
    return [*(entrypoint if entrypoint else profile.entrypoint), *command]


def runs(profile: ImageProfile, entrypoint: Sequence[str] | None, command: Sequence[str] | None, program: str) -> bool:
    """Whether the container starts PROGRAM (a path or name) of its image, directly or from a shell line."""
    line = " ".join(str(a) for a in argv(profile, entrypoint, command))
    return re.search(rf"(^|[\s/]){re.escape(program.rsplit('/', 1)[-1])}(\s|$)", line) is not None


def cap_name(cap: str) -> str:
    return cap.upper().removeprefix("CAP_")


def exec_capabilities(profile: ImageProfile, entrypoint: Sequence[str] | None, command: Sequence[str] | None) -> list[str]:
    """The capabilities a container must keep under `drop ALL` so the kernel lets it exec the
    programs it runs: a binary's file capabilities must be in the bounding set (capabilities(7),
    "safety checking for capability-dumb binaries")."""
    needed: set[str] = set()
    for path, caps in profile.file_capabilities.items():
        if runs(profile, entrypoint, command, path):
            needed |= {cap_name(c) for c in caps.split("=")[0].split(",")}
    return sorted(needed)


def scratch_dirs(profile: ImageProfile) -> list[str]:
    """Folders the image's environment points its start-up writes to (Caddy's XDG_CONFIG_HOME and
    XDG_DATA_HOME): under a read-only root each needs a small writable scratch mount."""
    return sorted(
        {
            d
            for d in profile.environment.values()
            if d.startswith("/") and any(w.path.startswith(d + "/") for w in profile.writes_at_start)
        }
    )


def profile_problems(view: ContainerView, catalog: Catalog | None = None) -> list[str]:
    """Every way VIEW breaks what its image's profile says the image needs."""
    profile = profile_for(view.image, catalog)
    if profile is None:
        return []
    who = f"{view.where} {view.name}"
    problems = []
    if "ALL" in view.cap_drop:
        kept = {cap_name(c) for c in view.cap_add}
        for path, caps in sorted(profile.file_capabilities.items()):
            if not runs(profile, view.entrypoint, view.command, path):
                continue  # the container runs another program of the image
            needed = {cap_name(c) for c in caps.split("=")[0].split(",")}
            if not needed <= kept:
                problems.append(
                    f"{who}: {path} in {view.image} carries the file capability {caps}; "
                    f"with capabilities dropped (ALL) and without adding {sorted(needed - kept)} the kernel refuses to exec it"
                )
    main = (profile.entrypoint or profile.command or ("",))[0]
    if not runs(profile, view.entrypoint, view.command, main):
        return problems  # e.g. a one-shot download in the same image
    problems += [
        f"{who}: {view.image} needs {key} set when it runs as a uid without a passwd entry"
        for key in profile.needs_environment
        if not view.environment.get(key)
    ]
    for key in profile.exec_caches:
        path = view.environment.get(key, "")
        if not any(path.startswith(m.rstrip("/") + "/") or path == m.rstrip("/") for m in view.exec_mounts):
            problems.append(
                f"{who}: {key} ({path or 'unset'}) must be on an exec-capable writable mount: "
                "the compiled kernels written there are loaded as shared objects"
            )
    return problems


def capability_reason(profile: ImageProfile, caps: Sequence[str]) -> str:
    """Why a container keeps CAPS: the one sentence both targets (and every referee's exception
    format) carry. No '=' in it: checkov's skip annotations split on the first one."""
    files = ", ".join(f"{path} ({spec.replace('=', ' ')})" for path, spec in sorted(profile.file_capabilities.items()))
    return (
        f"{', '.join(caps)}: the image's {files} carries it as a file capability, and the kernel refuses to exec "
        "a binary whose file capabilities are not in the bounding set (caddy-docker #396); nothing else is added"
    )
