"""Pulumi's queue of outputs to await, with a constant-time remove, for the offline preview.

pulumi 3.x keeps every Output's future in `runtime.settings.SETTINGS.outputs`, a deque:
`output.py` (Output.__init__) appends each one and its done-callback removes it again, catching
the ValueError of one already taken; `runtime/stack.py` (wait_for_rpcs) pops from the left and
appends back what is not done; `runtime/mocks.py` clears it. A deque's remove is linear, so a
program with N outputs spent O(N^2) there: 0.7 s of the prod stack's 3.5 s preview. This queue
answers the same calls in constant time, in the same order.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any


class OutputQueue:
    """A deque's order and answers, with the removal of an item in constant time. An item may be in
    it twice, as in the deque (Output.secret wraps an existing future, and ensure_future returns it
    as it is). Not a dict itself: Pulumi's ContextProperty (`_utils.py`) hands back the property,
    not the value, when the value is a dict."""

    def __init__(self) -> None:
        self._order: OrderedDict[int, Any] = OrderedDict()  # position -> item, oldest first
        self._positions: dict[Any, deque[int]] = {}  # item -> its positions, oldest first
        self._next = 0

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._order.values())

    def append(self, item: Any) -> None:
        self._order[self._next] = item
        self._positions.setdefault(item, deque()).append(self._next)
        self._next += 1

    def remove(self, item: Any) -> None:
        """The oldest occurrence, as deque.remove; ValueError when absent (output.py catches it)."""
        positions = self._positions.get(item)
        if not positions:
            raise ValueError(item)
        del self._order[positions.popleft()]
        if not positions:
            del self._positions[item]

    def popleft(self) -> Any:
        if not self._order:
            raise IndexError("pop from an empty queue")
        _, item = self._order.popitem(last=False)
        positions = self._positions[item]
        positions.popleft()  # the oldest position of all is this item's oldest
        if not positions:
            del self._positions[item]
        return item

    def clear(self) -> None:
        self._order.clear()
        self._positions.clear()
