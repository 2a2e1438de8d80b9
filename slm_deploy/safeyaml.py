"""Reading files a user (or an attacker) wrote: one place that bounds what a YAML input may cost.

Every input file (fleet, stack file) is read with `read_input` and parsed with `load`:
- only regular files, at most MAX_INPUT_BYTES (a FIFO would hang, /dev/zero would exhaust memory);
- UTF-8 only (a UTF-16 file or stray bytes are named, not decoded into garbage);
- no NUL or other control characters (libyaml's own message for them names no file);
- no duplicate keys (YAML says keys are unique; PyYAML silently keeps the last one);
- no alias bombs: the document, with every alias expanded, has at most MAX_NODES nodes;
- nesting at most MAX_DEPTH deep (deeper structures reach Python's recursion limit downstream);
- numbers finite and below MAX_MAGNITUDE (inf, nan, 1e308 and 5000-digit integers are no setting).
Each problem is an InputError naming the file and the line.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from slm_deploy.errors import InputError

MAX_INPUT_BYTES = 8 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_MAGNITUDE = 1e15
MAX_INT_DIGITS = 16
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f\ufffe\uffff]")
_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


def file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(
    fd: int,
    source: str,
    limit: int,
    not_regular: str = "not a regular file",
    too_large: str = "too large ({size} bytes; the limit is {limit})",
) -> None:
    """Refuse what `fd` opens unless it is a regular file of at most `limit` bytes, asked of the open
    descriptor before anything is read (a name checked first could be swapped for a FIFO after).
    `not_regular` and `too_large` are what the caller calls such a file in its error."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(source, "", f"{not_regular} ({file_kind(info.st_mode)})")
    if info.st_size > limit:
        raise InputError(source, "", too_large.format(size=info.st_size, limit=limit))


def read_bytes(path: Path, source: str, limit: int = MAX_INPUT_BYTES, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; checked on the open descriptor, so a
    FIFO is never waited on and a device never read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        check_regular(fd, source, limit)
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise InputError(source, "", f"too large (more than {limit} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(source, "", f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text without control characters, or an InputError naming the line."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError(source, "", "UTF-16/UTF-32 text; save the file as UTF-8")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(source, f"line {line}", f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    match = CONTROL.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise InputError(source, f"line {line}", f"control character U+{ord(match.group()):04X} is not allowed")
    return text


def read_input(path: Path, source: str, limit: int = MAX_INPUT_BYTES) -> str:
    return decode_text(read_bytes(path, source, limit), source)


class _Problem(Exception):
    def __init__(self, line: int, message: str, expensive: bool = False) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.expensive = expensive


class TooExpensive(InputError):
    """A document whose expansion or nesting exceeds the bounds: any other YAML reader (checkov,
    compose, validators) would hang or recurse on it, so it must not be handed on."""


class _StrictLoader(_BASE):  # type: ignore[valid-type,misc]
    unique_keys = True

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if self.unique_keys:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    raise _Problem(key_node.start_mark.line + 1, "a mapping key must be a plain value") from None
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _Problem(line, f"duplicate key {key!r} (first at line {first})")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = re.sub(r"[^0-9a-fA-F]", "", str(node.value))
        if len(digits) > MAX_INT_DIGITS:
            raise _Problem(node.start_mark.line + 1, f"number with {len(digits)} digits is out of range")
        value: int = super().construct_yaml_int(node)
        _bounded(value, node)
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        _bounded(value, node)
        return value


def _bounded(value: float, node: yaml.Node) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _Problem(node.start_mark.line + 1, f"{node.value!r} is not a finite number")
    if abs(value) >= MAX_MAGNITUDE:
        raise _Problem(node.start_mark.line + 1, f"{node.value!r} is out of range")


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)


class _LenientLoader(_StrictLoader):
    """For review: documents of any origin; duplicate keys are yamllint's finding, not a crash."""

    unique_keys = False


def _check_size(root: yaml.Node) -> None:
    """Expanded node count and depth, computed once per distinct node (aliases share nodes)."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > MAX_NODES:
                raise _Problem(node.start_mark.line + 1, f"more than {MAX_NODES} values once aliases are expanded", True)
            if depths[key] > MAX_DEPTH:
                raise _Problem(node.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep", True)
            continue
        if key in sizes:
            continue
        if key in active:
            raise _Problem(node.start_mark.line + 1, "an alias refers to the node that contains it", True)
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_all(text: str, source: str, strict: bool = True) -> list[Any]:
    """Every document of `text` (None documents dropped), or an InputError naming the line."""
    loader = (_StrictLoader if strict else _LenientLoader)(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_size(node)
            document = loader.construct_document(node)
            if document is not None:
                documents.append(document)
    except _Problem as exc:
        raise (TooExpensive if exc.expensive else InputError)(source, f"line {exc.line}", exc.message) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(source, where, f"not valid YAML: {problem}") from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise InputError(source, "", f"not valid YAML: {exc.__class__.__name__}") from None
    finally:
        loader.dispose()
    return documents


def load(text: str, source: str) -> Any:
    """One document (None when empty); a second document is an error, not silently dropped."""
    documents = load_all(text, source)
    if len(documents) > 1:
        raise InputError(source, "", "expected one YAML document, found several")
    return documents[0] if documents else None


def load_data(text: str) -> Any:
    """Our own data (catalog files, a lock we wrote): PyYAML's safe loader in C (libyaml), about
    ten times faster than the pure-Python one, for the same data. Hostile input goes through load."""
    try:
        return yaml.load(text, Loader=_BASE)
    except yaml.YAMLError:
        return yaml.safe_load(text)  # a broken file: the pure-Python parser's message, as before
