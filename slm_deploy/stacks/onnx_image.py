"""`slm-deploy image onnx STACK --out DIR`: the build context of each onnx model's server image.

No registry publishes a Foundry Local server, so a cluster runs the user's own image. It is the edge
bundle's, rendered by the same code (runtimes.onnx_runtime): the Dockerfile on the locked python
base with hash-pinned wheels, onnx/requirements.txt and the launcher. DIR/<model>/ is what
`docker buildx build --platform linux/amd64` takes; DIR/images.yaml lists the stack's `models[].image` references in the images
file format, for `slm-deploy lock --images DIR/images.yaml` once they are pushed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from slm_deploy import yamlout
from slm_deploy.errors import InputError
from slm_deploy.runtimes import onnx_runtime
from slm_deploy.spec import Runtime
from slm_deploy.stackfile import PROJECT, load_stack_file, project_values, read_config
from slm_deploy.stacks.k8s.servers import server_image_id
from slm_deploy.supply.lock import locked_catalog

IMAGES_HEADER = (
    "# The stack's onnx server images, for `slm-deploy lock --images images.yaml` once they are built\n"
    "# and pushed for linux/amd64 (the wheels are x86_64 only), from any machine:\n"
    "#   docker buildx build --platform linux/amd64 -t IMAGE --push <model>/\n"
)


def _values(stack: str, root: Path) -> tuple[dict[str, object], str]:
    config, _, source = load_stack_file(stack, root)
    return project_values(config), source


def build_contexts(stack: str, root: Path) -> dict[str, str]:
    """Relative path -> text of every file to write (no I/O besides reading the stack and the lock)."""
    values, source = _values(stack, root)
    env = read_config(stack, values, source)
    catalog = locked_catalog(root)
    files: dict[str, str] = {}
    images = []
    for planned in env.models:
        if Runtime(planned.plan.runtime) is not Runtime.ONNX:
            continue
        spec = onnx_runtime((planned.plan,), catalog, False, planned.spec.name)
        assert spec.dockerfile is not None
        files[f"{planned.spec.name}/Dockerfile"] = spec.dockerfile
        for path, text in sorted(spec.files.items()):
            files[f"{planned.spec.name}/{path}"] = text
        assert planned.spec.image is not None  # plan_environment requires it for runtime onnx
        repository, tag = planned.spec.image.rsplit(":", 1)
        images.append({"id": server_image_id(planned.spec.name), "repository": repository, "tag": tag})
    if not images:
        raise InputError(source, f"{PROJECT}:models", "no model on runtime onnx: nothing to build")
    files["images.yaml"] = yamlout.dump({"images": images}, IMAGES_HEADER)
    return files


def write_contexts(files: dict[str, str], out: Path) -> None:
    """All or nothing, into a folder that does not exist yet (or is empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(str(out), "", "exists and is not an empty folder; name a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
