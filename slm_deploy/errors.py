"""The one error type users see: `error: FILE: FIELD: what is wrong`, exit 2."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


class InputError(Exception):
    """Bad input or a plan that cannot fit. The CLI prints it as one line and exits 2."""

    def __init__(self, source: str, field: str, message: str) -> None:
        super().__init__(f"{source}: {field}: {message}" if field else f"{source}: {message}")
        self.source = source
        self.field = field
        self.message = message


def format_location(loc: Sequence[int | str]) -> str:
    """`("boxes", 2, "hardware", "gpu")` -> `boxes[2].hardware.gpu`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def from_validation_error(source: str, exc: ValidationError, prefix: Sequence[int | str] = ()) -> InputError:
    """The first pydantic error as an InputError, its location relative to the file's root."""
    first = exc.errors(include_url=False)[0]
    # Pydantic names the union branch or validator in the location; keep only real keys.
    loc = [p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    return InputError(source, format_location([*prefix, *loc]), message)
