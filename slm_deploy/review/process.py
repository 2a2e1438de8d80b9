"""Running validators so that an interrupted review leaves no process behind (issue 22).

Every external program runs in a process group of its own; checkov, which forks a pool of
workers, runs in a forked child that leads its own group. When the review is interrupted
(Ctrl-C, or SIGTERM, which the CLI turns into KeyboardInterrupt) the whole group is killed, so a
worker blocked on a pipe nobody reads can no longer keep the review alive."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
# A review of one stack previews it here, loading Pulumi and so gRPC, and then forks checkov's
# child. gRPC's fork handlers would log "Other threads are currently calling into gRPC, skipping
# fork() handlers" on stderr for that fork; checkov never talks gRPC, so the handlers are off.
# Read when gRPC starts, hence set on import, before any preview.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def single_threaded() -> bool:
    """Whether this process runs one thread, native ones included (gRPC starts its own when Pulumi's
    runtime is imported, pulumi.runtime.proto). A fork copies only the calling thread: a child that
    then needs a lock another thread held waits forever (a review's preview child hung so)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc: what Python can see
        return "grpc" not in sys.modules and threading.active_count() == 1


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


HELD = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait (and come after) while a child is forked or the children are
    killed: a signal between fork() and the child's own handlers would run the review's clean-up
    in the child; one in the middle of the clean-up would leave the rest of the children running."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # read only: nothing to undo if a handler raises here
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ChildFailed(Exception):
    """The isolated function raised, or its process died before answering."""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


ToolCall = tuple[Sequence[str], "Path | None", "Mapping[str, str] | None"]  # args, cwd, env


def _start(call: ToolCall) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    args, cwd, env = call
    try:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own group, so its children die with it
        )
    except OSError as exc:
        return subprocess.CompletedProcess(list(args), 127, "", f"{args[0]}: cannot start ({exc.strerror or exc})")


def run_tools(calls: Sequence[ToolCall], at_once: int = 1) -> Iterator[subprocess.CompletedProcess[str]]:
    """Each call's program (args, cwd, env) with its output captured (one that cannot start
    answers 127), answered in the calls' order, up to AT_ONCE of them running at once: a review
    runs a validator once per file, and Compose, promtool or hadolint spend most of a run
    starting up. The ones after the one being read run on, their output kept in their pipes.
    However this ends (an interrupt, a caller that stops reading), none is left running."""
    running: list[tuple[Sequence[str], subprocess.Popen[str] | subprocess.CompletedProcess[str]]] = []

    def oldest() -> subprocess.CompletedProcess[str]:
        answer = _collect(*running[0])
        running.pop(0)  # only once collected: until then the clean-up below still holds it
        return answer

    try:
        for call in calls:
            # Held: Ctrl-C inside Popen (it waits for the exec) would lose a program that runs.
            # The program inherits the held mask; it is only ever stopped with SIGKILL.
            with signals_held():
                running.append((call[0], _start(call)))
            if len(running) >= max(1, at_once):
                yield oldest()
        while running:
            yield oldest()
    finally:
        if running:
            with signals_held():  # a second Ctrl-C must not leave the rest running
                started = [proc for _, proc in running if isinstance(proc, subprocess.Popen)]
                for proc in started:
                    _kill_group(proc.pid)
                for proc in started:  # wait, not communicate: a grandchild that left the group may hold the pipes
                    proc.wait()
                    for pipe in (proc.stdout, proc.stderr):
                        if pipe is not None:
                            pipe.close()


def _collect(
    args: Sequence[str], proc: subprocess.Popen[str] | subprocess.CompletedProcess[str]
) -> subprocess.CompletedProcess[str]:
    if isinstance(proc, subprocess.CompletedProcess):
        return proc
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    _kill_group(proc.pid)  # anything it left running in the background
    return subprocess.CompletedProcess(list(args), proc.returncode, stdout, stderr)


class Isolated(Generic[T]):
    """func(*args) in a forked child leading its own process group, started now and answered by
    result(); its answer comes back pickled. Whatever the child forks (checkov's workers) is in
    that group and killed with it, by result() once answered and by cancel() at any time."""

    def __init__(self, func: Callable[..., T], *args: Any) -> None:
        self._fork(func, args, None)

    @classmethod
    def warmed(cls, prepare: Callable[[], object], func: Callable[..., T]) -> Isolated[T]:
        """A child that runs prepare() now (slow imports, while this process does other work) and
        func(*args) once send(*args) hands it the arguments. Forked only from a process with one
        thread, like any fork here; an error in prepare() is func's to raise again."""
        job: Isolated[T] = cls.__new__(cls)
        job._fork(func, None, prepare)
        return job

    def _fork(self, func: Callable[..., T], args: tuple[Any, ...] | None, prepare: Callable[[], object] | None) -> None:
        read_end, write_end = os.pipe()
        request_read, request_write = os.pipe() if args is None else (-1, -1)
        try:
            with signals_held():  # a signal held here comes on leaving: this object is whole by then
                pid = os.fork()
                if pid == 0:  # the child: never returns, never runs the parent's clean-up
                    os.close(read_end)
                    if request_write >= 0:
                        os.close(request_write)
                    _child(write_end, func, args, request_read, prepare)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.setpgid(pid, pid)  # both sides set it: no window where a signal finds no group
                os.close(write_end)
                if request_read >= 0:
                    os.close(request_read)
                self.pid = pid
                self.answers = os.fdopen(read_end, "rb")
                self.request = os.fdopen(request_write, "wb") if request_write >= 0 else None
                self.done = False  # reaped
                self.closed = False  # reaped, its group killed once after, its pipes closed
        except BaseException:
            if hasattr(self, "closed"):  # interrupted as the signals were let through: no child left behind
                self.cancel()
            raise

    def send(self, *args: Any) -> Isolated[T]:
        """Hand a warmed child its arguments; it starts on them now. Returns the job."""
        if self.request is None or self.request.closed:
            raise RuntimeError("this child was given its arguments at its start")
        data = pickle.dumps(args)
        # Length first: children forked after this one hold the pipe too, so no EOF comes. An
        # OSError: it died while warming, which result() reports.
        with contextlib.suppress(OSError):
            self.request.write(len(data).to_bytes(8, "big") + data)
        with contextlib.suppress(OSError):
            self.request.close()
        return self

    def result(self) -> T:
        try:
            data = self.answers.read()
            _, status = os.waitpid(self.pid, 0)
            self.done = True
        finally:
            self.cancel()
        if not data:
            raise ChildFailed(f"ended without an answer (wait status {status})")
        kind, value = pickle.loads(data)
        if kind != "ok":
            raise ChildFailed(str(value))
        return value  # type: ignore[no-any-return]

    def kill(self) -> None:
        """Kill the child's whole group now; cancel() reaps it."""
        if not self.closed:
            _kill_group(self.pid)

    def cancel(self) -> None:
        """Kill the child's whole group (a worker that outlived its pool, or all of them when the
        review is interrupted) and reap the child. Once done, never again: the group id may be
        another process's by then. Interrupted half-way, it is done whole the next time."""
        if self.closed:
            return
        with signals_held():
            _kill_group(self.pid)
            if not self.done:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                self.done = True
            self.closed = True
        self.answers.close()
        if self.request is not None:
            with contextlib.suppress(OSError):
                self.request.close()


def _child(
    write_end: int,
    func: Callable[..., Any],
    args: tuple[Any, ...] | None,
    request: int = -1,
    prepare: Callable[[], object] | None = None,
) -> None:
    status = 0
    try:
        os.setpgid(0, 0)
        # What it or its workers print (multiprocessing prints a worker's traceback) is not the
        # review's output: a failure comes back as the answer, and becomes a finding.
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)  # held by the parent around the fork
        if args is None:  # a warmed child: prepare, then wait for the arguments
            if prepare is not None:
                with contextlib.suppress(Exception):
                    prepare()
            with os.fdopen(request, "rb") as incoming:
                size = int.from_bytes(incoming.read(8) or b"\0", "big")
                data = incoming.read(size) if size else b""
            if len(data) != size or not size:  # the parent closed without sending: nothing to do
                os._exit(0)
            args = pickle.loads(data)
        try:
            answer: tuple[str, Any] = ("ok", func(*args))
        except Exception as exc:  # reported by the parent as one line
            answer = ("error", f"{exc.__class__.__name__}: {str(exc)[:200]}")
        with os.fdopen(write_end, "wb") as out:
            out.write(pickle.dumps(answer))
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def run_isolated(func: Callable[..., T], *args: Any) -> T:
    return Isolated(func, *args).result()
