"""Pulumi's queue of outputs to await, with a constant-time remove, for the offline preview.

pulumi 3.x keeps every Output's future in `runtime.settings.SETTINGS.outputs`, a deque:
`output.py` (Output.__init__) appends each one and its done-callback removes it again, catching
the ValueError of one already taken; `runtime/stack.py` (wait_for_rpcs) pops from the left and
appends back what is not done; `runtime/mocks.py` clears it. A deque's remove is linear, so a
program with N outputs spent O(N^2) there: 0.7 s of the prod stack's 3.5 s preview. This queue
answers the same calls in constant time, in the same order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any


class OutputQueue:
    """An insertion-ordered set with the deque methods Pulumi calls. Not a dict itself: Pulumi's
    ContextProperty (`_utils.py`) hands back the property, not the value, when the value is a dict."""

    def __init__(self) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def append(self, item: Any) -> None:
        self._items[item] = None

    def remove(self, item: Any) -> None:
        if self._items.pop(item, self) is self:
            raise ValueError(item)  # as deque.remove: output.py catches it for an output already taken

    def popleft(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty queue")
        return self._items.popitem(last=False)[0]

    def clear(self) -> None:
        self._items.clear()
