"""Images a stack names itself (`models[].image`, runtime onnx), pinned by the same lock as the catalog's.

No registry publishes a Foundry Local server: the user builds it from `slm-deploy image onnx`, pushes
it, lists it in an images file and locks it (`slm-deploy lock --images FILE`). Here each such image
joins the catalog as `model-<name>`, as `repository:tag@sha256:...`, or the stack is refused.
"""

from __future__ import annotations

from pathlib import Path

from slm_deploy.catalog import Catalog, Image
from slm_deploy.environment import PROJECT, Environment
from slm_deploy.errors import InputError
from slm_deploy.spec import CpuArch
from slm_deploy.stacks.k8s.servers import server_image_id
from slm_deploy.supply import lock as locking


def pin_model_images(catalog: Catalog, env: Environment, directory: Path | None, allow_unlocked: bool | None = None) -> Catalog:
    """CATALOG plus each model's own image, pinned by the lock that applies in DIRECTORY."""
    wanted = [(i, m) for i, m in enumerate(env.spec.models) if m.image is not None]
    if not wanted:
        return catalog
    path = locking.find(directory)
    lock = locking.load(path)
    allow = locking.allow_unlocked_from_env() if allow_unlocked is None else allow_unlocked
    source = f"Pulumi.{env.stack}.yaml"
    images = dict(catalog.images)
    for i, model in wanted:
        assert model.image is not None
        repository, tag = model.image.rsplit(":", 1)
        image = Image(id=server_image_id(model.name), repository=repository, tag=tag)
        field = f"{PROJECT}:models[{i}].image"
        entry = lock.images.get(locking.image_key(repository, tag))
        if entry is None and not allow:
            raise InputError(
                source,
                field,
                f"{model.image} is not in {path}: build and push it (`slm-deploy image onnx`), list it in an images "
                "file and run `slm-deploy lock --images FILE` (or preview with --allow-unlocked)",
            )
        if entry is not None:
            image = image.model_copy(update={"digest": entry.digest, "locked": entry})
            # Foundry Local's native library is linux-x64 only (onnx_models.yaml server.platforms).
            locking.require_platform(image, CpuArch.AMD64, source, field, f"models[{i}] runs on amd64 nodes")
        images[image.id] = image
    return catalog.model_copy(update={"images": images})
