"""One JSON object from bytes a peer sent (a registry's manifest, a server's stream event): the
caller names what the bytes were meant to be, this says what they are instead."""

from __future__ import annotations

import json
from typing import Any


class NotAJsonObject(ValueError):
    """str() is what the bytes are instead, to follow "... is": "not JSON" or "not a JSON object"."""


def json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise NotAJsonObject("not JSON") from None
    if not isinstance(value, dict):
        raise NotAJsonObject("not a JSON object")
    return value
