"""Run the alembic command of a project in a subprocess.

The database URL travels in an environment variable (the project's env.py reads it), never on the
command line where `ps` would show it, and never in the output Retort keeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
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


def _findable(program: str, working_dir: str | Path) -> bool:
    """The program exists: a path (relative to where it runs), or a name on PATH."""
    if os.sep in program:
        return (Path(working_dir) / program).exists()
    return shutil.which(program) is not None


def _dies_with_parent(argv: list[str]) -> list[str]:
    """The command, made to be killed if the worker that started it dies (kill -9 included).

    Otherwise a migration would run on, unsupervised, after its worker is gone and its job has
    been declared interrupted. util-linux's `setpriv --pdeathsig` sets PR_SET_PDEATHSIG and
    execs the command (a `preexec_fn` would do the same, but is unsafe in a process with
    threads, and the worker has its heartbeat thread). Without setpriv: the command as is.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


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
    if not argv or not _findable(argv[0], working_dir):
        raise RunnerError(f"Could not start {argv[0] if argv else '(empty command)'!r}: not found.")
    argv = _dies_with_parent(argv)
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
