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

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from environments.core import processes
from environments.core.database_urls import redact
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


def warm_eligible(argv: Sequence[str], env: dict[str, str]) -> bool:
    """The command is this interpreter's `-m alembic`, with the import path this process has:
    what a warm parent forked from this process's interpreter would run as well."""
    return (
        sys.platform.startswith("linux")
        and len(argv) >= 3
        and argv[0] == sys.executable
        and argv[1:3] == ["-m", "alembic"]
        and env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")
        and env.get("PYTHONHOME") == os.environ.get("PYTHONHOME")
    )


# --- the warm parent, one per process that runs alembic ----------------------------------------


class _WarmParent:
    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                processes.dies_with_parent(
                    [sys.executable, "-u", str(WARM_PARENT), str(theirs.fileno())]
                ),
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.control = mine
        self.owner = os.getpid()

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def close(self) -> None:
        self.control.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()


_warm_parent: _WarmParent | None = None
_warm_lock = threading.Lock()


def _warm() -> _WarmParent | None:
    """This process's warm parent, started on first use (a forked process starts its own)."""
    global _warm_parent
    with _warm_lock:
        if _warm_parent is not None and not _warm_parent.usable():
            if _warm_parent.owner == os.getpid():
                _warm_parent.close()
            _warm_parent = None
        if _warm_parent is None:
            try:
                _warm_parent = _WarmParent()
            except OSError:
                return None
        return _warm_parent


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
    """`python -m alembic *args` forked warm; None when no warm parent would take it (the
    caller then starts it cold). Nothing has run when it returns None."""
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
        for fd in {out_read, out_write, err_write} | ({err_read} if err_read else set()):
            os.close(fd)
        answers.close()
        return None
    finally:
        answer_end.close()
    os.close(out_write)
    if separate_stdout:
        os.close(err_write)
    with answers, answers.makefile("r") as replies:
        answers.settimeout(WARM_START_SECONDS)
        try:
            pid = json.loads(replies.readline())["pid"]
        except (OSError, ValueError, KeyError):
            # the warm parent died before forking: nothing ran
            for fd in (out_read, err_read):
                if fd is not None:
                    os.close(fd)
            return None
        answers.settimeout(None)
        return _follow(pid, replies, out_read, err_read, timeout=timeout, url=url, on_line=on_line)


def _follow(
    pid: int,
    replies,
    out_read: int,
    err_read: int | None,
    *,
    timeout: float,
    url: str | None,
    on_line: Callable[[str], None] | None,
) -> RunResult:
    """Stream a warm child's output until it ends; kill its group at the timeout."""
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)

    stdout_parts: list[str] = []

    def drain_stdout() -> None:
        with open(out_read, encoding="utf-8", errors="replace") as stream:
            stdout_parts.append(stream.read())

    reader = threading.Thread(target=drain_stdout, daemon=True) if err_read is not None else None
    streamed = err_read if err_read is not None else out_read
    lines: list[str] = []
    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        if reader is not None:
            reader.start()
        with open(streamed, encoding="utf-8", errors="replace") as stream:
            for raw in stream:
                line = redact(raw.rstrip("\n"), url)
                lines.append(line)
                if on_line is not None:
                    on_line(line)
        if reader is not None:
            reader.join()
        try:
            exit_code = int(json.loads(replies.readline())["exit"])
        except (OSError, ValueError, KeyError):
            exit_code = -signal.SIGKILL  # the warm parent died, and its child with it
    finally:
        timer.cancel()
    return RunResult(
        exit_code=exit_code,
        output="\n".join(lines),
        stdout=redact("".join(stdout_parts), url),
        timed_out=timed_out.is_set(),
    )


__all__ = [
    "DEFAULT_COMMAND",
    "RunResult",
    "RunnerError",
    "resolve_command",
    "run_alembic",
    "warm_eligible",
]
