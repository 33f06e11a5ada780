"""Run the alembic command of a project in a subprocess (`core/processes.py`: its own process
group, killed at the timeout and with its worker).

The database URL travels in an environment variable (the project's env.py reads it), never on the
command line where `ps` would show it, and never in the output Retort keeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from environments.core import processes
from environments.core.processes import RunResult

DEFAULT_COMMAND = ("python", "-m", "alembic", "-c", "alembic.ini")


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
) -> RunResult:
    """Run `command + args`, stream its output line by line, kill its group on timeout.

    With `separate_stdout`, stdout is kept apart (returned whole, not streamed) and only stderr
    is streamed: alembic writes `--sql` output to stdout and its log to stderr.
    """
    argv = resolve_command(command, python) + list(args)
    env = {**os.environ, **(extra_env or {}), url_env_var: url, "PYTHONUNBUFFERED": "1"}
    try:
        result = processes.run(
            argv,
            env=env,
            working_dir=working_dir,
            timeout=timeout,
            url=url,
            on_line=on_line,
            separate_stdout=separate_stdout,
        )
    except processes.StartError as exc:
        raise RunnerError(f"Could not start {exc.program!r}: {exc.reason}.") from None
    if result.timed_out:
        raise RunnerError(f"alembic did not finish within {timeout:g} seconds and was stopped.")
    return result


__all__ = ["DEFAULT_COMMAND", "RunResult", "RunnerError", "resolve_command", "run_alembic"]
