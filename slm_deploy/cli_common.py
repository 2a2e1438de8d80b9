"""What every `slm-deploy` command shares: one `error:` line for bad input, paths, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from slm_deploy.errors import InputError, from_validation_error

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def clear_errors(func: F) -> F:
    """Every bad input becomes one `error:` line and exit 2; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except ValidationError as exc:
            fail(str(from_validation_error("arguments", exc)))
        except OSError as exc:  # a disk or path problem not caught nearer: still one line (issue 10)
            where = exc.filename if exc.filename is not None else "output"
            fail(f"{where}: {exc.strerror or exc.__class__.__name__}")
        except RecursionError:
            fail("input: nested too deeply")

    return wrapper  # type: ignore[return-value]


class NonEmptyPath(click.Path):
    """A path that may not be empty: click would turn `--out ''` into Path('.'), the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; name a folder or file", param, ctx)
        return super().convert(value, param, ctx)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def choice(enum: type[Any]) -> click.Choice[str]:
    return click.Choice([e.value for e in enum], case_sensitive=False)
