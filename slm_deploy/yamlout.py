"""A small, fast, deterministic YAML writer for generated files (plain data only).

PyYAML's representer costs ~2.5 ms per compose file; fleets of thousands of boxes need better.
Output is block-style YAML that any YAML 1.1 or 1.2 parser reads back to the same data: strings
are written plain only when they cannot be mistaken for anything else (no spaces, no leading
digit or indicator, no YAML 1.1 boolean or null word), otherwise as JSON strings (valid YAML
double-quoted scalars); multi-line strings become literal blocks. Keys keep insertion order.
"""

from __future__ import annotations

import re
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z/_.][A-Za-z0-9/_.:@=,+-]*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ".nan", ".inf", "-.inf"})
# Not printable in YAML, or a line break to YAML but not to JSON (NEL, LS, PS).
_NOT_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_BLOCK_OK = re.compile(r"^[^\s].*$", re.DOTALL)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


@lru_cache(maxsize=16384)
def _string(value: str) -> str:
    if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED and not value.endswith(":"):
        return value
    return _quoted(value)


@lru_cache(maxsize=4096)
def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN_KEY.fullmatch(text) and text.lower() not in _RESERVED else _quoted(text)


def _quoted(text: str) -> str:
    """A JSON string is a YAML double-quoted scalar; YAML also refuses some raw characters JSON keeps."""
    return _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", encode_basestring(text))


def _block(value: str, indent: str) -> str | None:
    """A literal block scalar for a multi-line string, or None when one would not round-trip."""
    if "\n" not in value or not _BLOCK_OK.match(value) or any(line != line.rstrip() for line in value.split("\n")):
        return None
    if value.endswith("\n\n") or _CONTROL.search(value) or _NOT_PRINTABLE.search(value):
        return None
    chomp = "" if value.endswith("\n") else "-"
    body = value[:-1] if chomp == "" else value
    lines = [(indent + line) if line else "" for line in body.split("\n")]
    return f"|{chomp}\n" + "\n".join(lines)


def _emit(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _emit_entry(f"{indent}{_key(key)}:", item, indent, out)
    elif isinstance(value, list):
        for item in value:
            _emit_entry(f"{indent}-", item, indent, out)
    else:
        out.append(indent + _scalar(value))


def _emit_entry(prefix: str, item: Any, indent: str, out: list[str]) -> None:
    child = indent + "  "
    if isinstance(item, dict) and item:
        if prefix.endswith("-"):
            start = len(out)
            _emit(item, child, out)
            out[start] = f"{prefix} {out[start][len(child) :]}"
        else:
            out.append(prefix)
            _emit(item, child, out)
    elif isinstance(item, list) and item:
        out.append(prefix)
        _emit(item, child, out)
    elif isinstance(item, dict):
        out.append(f"{prefix} {{}}")
    elif isinstance(item, list):
        out.append(f"{prefix} []")
    elif isinstance(item, str) and (block := _block(item, child)) is not None:
        out.append(f"{prefix} {block}")
    else:
        out.append(f"{prefix} {_scalar(item)}")


def dump(data: Any, header: str = "") -> str:
    out: list[str] = []
    _emit(data, "", out)
    return header + "\n".join(out) + "\n"
