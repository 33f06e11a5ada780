"""Run the alembic command of a project in a subprocess (`core/processes.py`: its own process
group, killed at the timeout and with its worker).

The database URL travels in an environment variable (the project's env.py reads it), never on the
command line where `ps` would show it, and never in the output Retort keeps.

When the command is this interpreter's `-m alembic`, the process is forked from a warm parent
that has alembic and SQLAlchemy imported already (`core/warm_alembic.py`) instead of starting a
new interpreter: the same command in a process of its own, without half a second of imports.
The first run in a process starts the warm parent; if it cannot be used, the run starts cold.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from environments.core import processes
from environments.core.processes import RunResult

DEFAULT_COMMAND = ("python", "-m", "alembic", "-c", "alembic.ini")
WARM_PARENT = Path(__file__).with_name("warm_alembic.py")
WARM_START_SECONDS = 30.0


class RunnerError(Exception):
    """The alembic process could not be started or did not finish in time."""


def resolve_command(command: Sequence[str], python: str) -> list[str]:
    """`python` at the front of a command means the interpreter Retort runs under."""
    parts = list(command)
    if parts and parts[0] in {"python", "python3"}:
        parts[0] = python
    return parts


def run_alembic(
    command: Sequence[str],
    args: Sequence[str],
    *,
    url: str,
    url_env_var: str = "DATABASE_URL",
    working_dir: str | Path,
    timeout: float = 600.0,
    python: str = "python3",
    on_line: Callable[[str], None] | None = None,
    extra_env: dict[str, str] | None = None,
    separate_stdout: bool = False,
    warm: bool = True,
) -> RunResult:
    """Run `command + args`, stream its output line by line, kill its group on timeout.

    With `separate_stdout`, stdout is kept apart (returned whole, not streamed) and only stderr
    is streamed: alembic writes `--sql` output to stdout and its log to stderr. `warm=False`
    always starts a new interpreter.
    """
    argv = resolve_command(command, python) + list(args)
    env = {**os.environ, **(extra_env or {}), url_env_var: url, "PYTHONUNBUFFERED": "1"}
    options = {"timeout": timeout, "url": url, "on_line": on_line}
    result = None
    try:
        if warm and warm_eligible(argv, env):
            result = _warm_run(argv[3:], env, working_dir, separate_stdout, **options)
        if result is None:
            result = processes.run(
                argv, env=env, working_dir=working_dir, separate_stdout=separate_stdout, **options
            )
    except processes.StartError as exc:
        raise RunnerError(f"Could not start {exc.program!r}: {exc.reason}.") from None
    if result.timed_out:
        raise RunnerError(f"alembic did not finish within {timeout:g} seconds and was stopped.")
    return result


# Variables that shape an interpreter when it starts: a warm parent started under other values
# would not run alembic as a new interpreter under the run's values would.
START_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONWARNINGS",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONNOUSERSITE",
    "PYTHONSAFEPATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
)
EXIT_GRACE_SECONDS = 10.0


def warm_eligible(argv: Sequence[str], env: dict[str, str]) -> bool:
    """The command is this interpreter's `-m alembic`, under the start-up variables (import
    path, encoding, locale) this process has: what a warm parent started from this process
    would run as well. Relative PYTHONPATH entries (found from the working directory) go cold."""
    path = env.get("PYTHONPATH", "")
    return (
        sys.platform.startswith("linux")
        and len(argv) >= 3
        and argv[0] == sys.executable
        and argv[1:3] == ["-m", "alembic"]
        and all(env.get(name) == os.environ.get(name) for name in START_VARIABLES)
        and all(os.path.isabs(entry) for entry in path.split(os.pathsep) if entry)
    )


# --- the warm parent, one per process that runs alembic ----------------------------------------


class _WarmParent:
    """The warm parent's process and the socket its runs are asked on. It is started by a
    thread of its own that lives as long as it does: the kernel's parent-death signal follows
    the *thread* that started a process, and the run that happened to start it may be on a
    thread that ends before the worker does."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started: dict[str, subprocess.Popen | OSError] = {}
        ready = threading.Event()
        # -P: nothing beside this file is importable; the child puts the run's directory first
        argv = [sys.executable, "-P", "-u", str(WARM_PARENT), str(theirs.fileno())]

        def keep() -> None:
            try:
                started["process"] = subprocess.Popen(
                    processes.dies_with_parent(argv),
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                started["error"] = exc
            finally:
                theirs.close()
                ready.set()
            process = started.get("process")
            if isinstance(process, subprocess.Popen):
                process.wait()

        try:
            threading.Thread(target=keep, name="retort-warm-alembic", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had
            mine.close()
            theirs.close()
            raise OSError(str(exc)) from None
        ready.wait()
        if "error" in started:
            mine.close()
            raise started["error"]
        self.process = started["process"]
        self.control = mine
        self.owner = os.getpid()

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def kill_run(self, pid: int) -> None:
        """Kill a run's process group: asked of the parent, which knows the pid is its child's."""
        with contextlib.suppress(OSError):
            self.control.send(json.dumps({"kill": pid}).encode())

    def close(self) -> None:
        """Stop the warm parent; its runs die with it."""
        self.control.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()


_warm_parent: _WarmParent | None = None
_warm_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked process starts its own warm parent (the lock may have been held mid-fork)."""
    global _warm_parent, _warm_lock
    _warm_parent, _warm_lock = None, threading.Lock()


def _close_at_exit() -> None:
    """At this process's end, hang up on its warm parent (which then ends too)."""
    if _warm_parent is not None and _warm_parent.owner == os.getpid():
        _warm_parent.control.close()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_close_at_exit)


def _warm() -> _WarmParent | None:
    """This process's warm parent, started on first use."""
    global _warm_parent
    with _warm_lock:
        if _warm_parent is not None and not _warm_parent.usable():
            _warm_parent.close()
            _warm_parent = None
        if _warm_parent is None:
            try:
                _warm_parent = _WarmParent()
            except OSError:
                return None
        return _warm_parent


def _close_all(*fds: int | None) -> None:
    for fd in {fd for fd in fds if fd is not None}:
        os.close(fd)


def _warm_run(
    args: Sequence[str],
    env: dict[str, str],
    working_dir: str | Path,
    separate_stdout: bool,
    *,
    timeout: float,
    url: str | None,
    on_line: Callable[[str], None] | None,
) -> RunResult | None:
    """`python -m alembic *args` forked warm; None when no warm parent took it (nothing ran:
    the caller starts it cold). Raises RunnerError when it cannot be known whether it ran."""
    if not Path(working_dir).is_dir():
        return None  # the cold start says why in its own words
    parent = _warm()
    if parent is None:
        return None
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe() if separate_stdout else (None, out_write)
    answers, answer_end = socket.socketpair()
    request = {"args": list(args), "cwd": os.path.abspath(working_dir), "env": env}
    try:
        socket.send_fds(
            parent.control,
            [json.dumps(request).encode()],
            [out_write, err_write, answer_end.fileno()],
        )
    except OSError:
        _close_all(out_read, out_write, err_read, err_write)
        answers.close()
        return None
    finally:
        answer_end.close()
    _close_all(out_write, err_write)
    with answers, answers.makefile("r") as replies:
        answers.settimeout(WARM_START_SECONDS)
        try:
            first = json.loads(replies.readline() or "{}")
        except TimeoutError:
            _close_all(out_read, err_read)
            # It may have forked without saying so: stop it, and its child with it, rather
            # than start the run a second time.
            parent.close()
            raise RunnerError(
                f"alembic's warm parent did not answer within {WARM_START_SECONDS:g} seconds "
                "and was stopped; the run was not started again."
            ) from None
        except (OSError, ValueError):
            first = {}
        if "pid" not in first:
            # No pid: it died, or could not fork, before giving its child the go.
            _close_all(out_read, err_read)
            return None
        answers.settimeout(None)
        streams = (out_read, err_read)
        return _follow(parent, first["pid"], answers, replies, streams, timeout, url, on_line)


def _follow(
    parent: _WarmParent,
    pid: int,
    answers: socket.socket,
    replies,
    streams: tuple[int, int | None],
    timeout: float,
    url: str | None,
    on_line: Callable[[str], None] | None,
) -> RunResult:
    """Stream a warm child's output until it ends; kill its group at the timeout."""
    out_read, err_read = streams
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        parent.kill_run(pid)

    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        with contextlib.ExitStack() as files:
            out, err = (
                files.enter_context(open(fd, encoding="utf-8", errors="replace"))
                if fd is not None
                else None
                for fd in (out_read, err_read)
            )
            streamed, kept = (err, out) if err is not None else (out, None)
            lines, stdout = processes.follow_output(streamed, kept, url=url, on_line=on_line)
        answers.settimeout(max(deadline - time.monotonic(), 0) + EXIT_GRACE_SECONDS)
        exit_code = _exit_code(parent, replies)
    except BaseException:
        stop()  # nothing goes on unwatched
        raise
    finally:
        timer.cancel()
    return RunResult(
        exit_code=exit_code,
        output="\n".join(lines),
        stdout=stdout,
        timed_out=timed_out.is_set(),
    )


def _exit_code(parent: _WarmParent, replies) -> int:
    """The child's exit status, as its parent reports it; a parent that does not report it
    in time is stopped (its child with it) and the run counts as killed."""
    try:
        return int(json.loads(replies.readline())["exit"])
    except TimeoutError:
        parent.close()
    except (OSError, ValueError, KeyError):
        pass  # the warm parent died, and its child with it
    return -signal.SIGKILL


__all__ = [
    "DEFAULT_COMMAND",
    "RunResult",
    "RunnerError",
    "resolve_command",
    "run_alembic",
    "warm_eligible",
]
