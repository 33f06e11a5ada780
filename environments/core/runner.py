"""Run the alembic command of a project in a subprocess.

The database URL travels in an environment variable (the project's env.py reads it), never on the
command line where `ps` would show it, and never in the output Retort keeps.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from environments.core.versions import redact

DEFAULT_COMMAND = ("python", "-m", "alembic", "-c", "alembic.ini")


class RunnerError(Exception):
    """The alembic process could not be started or did not finish in time."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr interleaved, or stderr alone with `separate_stdout`
    stdout: str = ""  # only with `separate_stdout`: e.g. the SQL of `alembic ... --sql`

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def resolve_command(command: Sequence[str], python: str) -> list[str]:
    """`python` at the front of a command means the interpreter Retort runs under."""
    parts = list(command)
    if parts and parts[0] in {"python", "python3"}:
        parts[0] = python
    return parts


def _die_with_parent() -> None:
    """In the child: be killed if the worker that started us dies (kill -9 included).

    Otherwise a migration would run on, unsupervised, after its worker is gone and its job has
    been declared interrupted. Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
) -> RunResult:
    """Run `command + args`, stream its output line by line, kill its group on timeout.

    With `separate_stdout`, stdout is kept apart (returned whole, not streamed) and only stderr
    is streamed: alembic writes `--sql` output to stdout and its log to stderr.
    """
    argv = resolve_command(command, python) + list(args)
    env = {**os.environ, **(extra_env or {}), url_env_var: url, "PYTHONUNBUFFERED": "1"}
    try:
        process = subprocess.Popen(
            argv,
            cwd=working_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        raise RunnerError(f"Could not start {argv[0]!r}: {exc.strerror}") from None
    lines: list[str] = []
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    stdout_parts: list[str] = []

    def drain_stdout() -> None:
        assert process.stdout is not None
        stdout_parts.append(process.stdout.read())

    reader = threading.Thread(target=drain_stdout, daemon=True) if separate_stdout else None
    streamed = process.stderr if separate_stdout else process.stdout
    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        if reader is not None:
            reader.start()
        assert streamed is not None
        for raw in streamed:
            line = redact(raw.rstrip("\n"), url)
            lines.append(line)
            if on_line is not None:
                on_line(line)
        if reader is not None:
            reader.join()
        process.wait()
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise RunnerError(f"alembic did not finish within {timeout:g} seconds and was stopped.")
    return RunResult(
        exit_code=process.returncode,
        output="\n".join(lines),
        stdout=redact("".join(stdout_parts), url),
    )
