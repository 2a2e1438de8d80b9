"""Ctrl-C and SIGTERM that a library swallowed. The CLI turns both into KeyboardInterrupt, so every
clean-up runs; but the exception is raised wherever the main thread happens to be, and Pulumi's SDK
catches BaseException while it works out each resource's source position
(pulumi/runtime/resource.py `_get_source_position_for_frame`, run for every frame of every
registration), and a signal landing there is lost. The signal is therefore also recorded here, and
checked where the work can stop cleanly."""

from __future__ import annotations

_received: list[int] = []


def received(signum: int) -> None:
    _received.append(signum)


def check() -> None:
    """Raise the KeyboardInterrupt of a signal whose own exception was swallowed."""
    if _received:
        raise KeyboardInterrupt
