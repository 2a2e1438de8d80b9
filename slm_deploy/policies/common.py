"""Facts several rule families share: what names a secret, what counts as a pinned image."""

from __future__ import annotations

import re

SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_KEY|CREDENTIALS?)$", re.IGNORECASE)
# A variable that names where a secret is (a file, a path), not the secret itself.
REFERENCE_SUFFIXES = ("_FILE", "_PATH")
MOVING_TAGS = ("latest", "main", "master", "nightly", "stable")


def unpinned(image: str) -> str | None:
    """Why an image reference is not pinned ("untagged", "moving tag"), or None when it is."""
    if "@sha256:" in image:
        return None
    tail = image.rsplit("/", 1)[-1]
    if ":" not in tail:
        return "untagged"
    if tail.rsplit(":", 1)[1] in MOVING_TAGS:
        return "moving tag"
    return None


def unlocked(image: str) -> bool:
    """An image reference without a digest: the tag can move under it (`slm-deploy lock`)."""
    return "@sha256:" not in image
