"""Child processes, started one way for every tool Retort runs: alembic, pg_dump, pg_restore,
psql.

Each child
- runs in a session of its own, so a timeout kills its whole process group (anything the tool
  started goes with it);
- dies with the worker that started it, even a worker killed with SIGKILL: util-linux's
  `setpriv --pdeathsig KILL` sets PR_SET_PDEATHSIG and execs the tool (a `preexec_fn` would do
  the same, but is unsafe in a process with threads, and a worker has its heartbeat thread);
  otherwise a migration or a dump would run on unsupervised after its job was declared
  interrupted;
- has every line it writes redacted of the database URL's password before anyone sees it.

`ProcessGroup` runs one or more children together (pg_restore piped into psql) and hands their
stderr lines to the caller's thread; `run` is the one-process case with streamed output
(alembic, when it is not forked warm: see runner.py).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from environments.core.database_urls import redact, redact_urls


class StartError(Exception):
    """A child could not be started: `program` is missing, or the system refused (`reason`)."""

    def __init__(self, program: str, reason: str) -> None:
        super().__init__(f"Could not start {program!r}: {reason}")
        self.program = program
        self.reason = reason


def dies_with_parent(argv: list[str]) -> list[str]:
    """The command, made to be killed when the process that starts it dies (kill -9 included).
    Without setpriv (not Linux, or util-linux missing): the command as is."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def findable(program: str, working_dir: str | Path | None = None) -> bool:
    """The program exists: a path (relative to where it runs), or a name on PATH."""
    if os.sep in program:
        return (Path(working_dir or ".") / program).exists()
    return shutil.which(program) is not None


def scrub(line: str, url: str | None) -> str:
    """A line as Retort may keep and show it: no password of `url`, nor of any URL in it."""
    return redact_urls(redact(line, url)) if url else redact_urls(line)


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# --- several children at once ---------------------------------------------------------------


@dataclass
class ProcessResult:
    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)  # stderr, redacted
    stdout: str = ""  # with stdout="capture"

    @property
    def error_lines(self) -> list[str]:
        """The lines from the first error on: the error and its DETAIL/HINT."""
        lines = self.lines
        for index, line in enumerate(lines):
            lowered = line.lower()
            if "error:" in lowered or "fatal:" in lowered:
                return lines[index:]
        return []


class ProcessGroup:
    """Child processes run together: their stderr lines reach `emit` on the caller's thread
    (where the worker may write them to its database), and a deadline kills every process
    group, so nothing a tool started outlives a timeout."""

    def __init__(
        self, emit: Callable[[str], None], deadline: float, *, url: str | None = None
    ) -> None:
        self.emit = emit
        self.deadline = deadline
        self.url = url
        self.results: dict[str, ProcessResult] = {}
        self.timed_out = False
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._processes: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._stdout: dict[str, list[bytes]] = {}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # On an exception in between (a failed start, an interrupt) nothing is left running.
        if exc_type is not None:
            for process in self._processes.values():
                kill_group(process)
        for thread in self._threads:
            thread.join()
        for label, process in self._processes.items():
            try:
                process.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:  # closed its output but never exited
                self.timed_out = True
                kill_group(process)
                process.wait()
            result = self.results[label]
            result.exit_code = process.returncode
            result.stdout = b"".join(self._stdout.get(label, [])).decode("utf-8", "replace")
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        label: str,
        stdout: Literal["discard", "capture", "pipe"] = "discard",
        stdin: bool = False,
    ) -> subprocess.Popen:
        """Start `argv`; `stdout="pipe"` leaves reading it to the caller. Raises StartError."""
        argv = list(argv)
        if not findable(argv[0]):
            raise StartError(argv[0], "not found")
        try:
            process = subprocess.Popen(
                dies_with_parent(argv),
                env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if stdout == "discard" else subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartError(argv[0], exc.strerror or str(exc)) from None
        self._processes[label] = process
        self.results[label] = ProcessResult()
        stderr, out = process.stderr, process.stdout
        assert stderr is not None
        self._add_thread(lambda: self._read_lines(label, stderr))
        if stdout == "capture":
            assert out is not None
            chunks = self._stdout.setdefault(label, [])
            self._add_thread(lambda: chunks.extend(iter(out.read1, b"")))
        return process

    def add_worker(self, work: Callable[[], None]) -> None:
        """Run `work` beside the processes; pump() waits for it like for a reader."""
        self._add_thread(work)

    def _add_thread(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            finally:
                self._queue.put(None)

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _read_lines(self, label: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._queue.put((label, scrub(line, self.url)))

    def pump(self) -> None:
        """Pass lines on until every reader is done; at the deadline, kill everything."""
        running = len(self._threads)
        while running:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 and not self.timed_out:
                self.timed_out = True
                for process in self._processes.values():
                    kill_group(process)
            try:
                item = self._queue.get(timeout=max(remaining, 0.05) if not self.timed_out else 1)
            except queue.Empty:
                continue
            if item is None:
                running -= 1
                continue
            label, line = item
            self.results[label].lines.append(line)
            self.emit(line)

    def kill(self, process: subprocess.Popen) -> None:
        kill_group(process)


# --- one child, its output streamed ---------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr interleaved, or stderr alone with `separate_stdout`
    stdout: str = ""  # only with `separate_stdout`: e.g. the SQL of `alembic ... --sql`
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    working_dir: str | Path,
    timeout: float,
    url: str | None = None,
    on_line: Callable[[str], None] | None = None,
    separate_stdout: bool = False,
) -> RunResult:
    """Run `argv` in `working_dir`, stream its output line by line (redacted of `url`), kill
    its group at the timeout. Raises StartError when it cannot be started.

    With `separate_stdout`, stdout is kept apart (returned whole, not streamed) and only stderr
    is streamed: alembic writes `--sql` output to stdout and its log to stderr."""
    argv = list(argv)
    if not argv or not findable(argv[0], working_dir):
        raise StartError(argv[0] if argv else "(empty command)", "not found")
    try:
        process = subprocess.Popen(
            dies_with_parent(argv),
            cwd=working_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise StartError(argv[0], exc.strerror or str(exc)) from None
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        kill_group(process)

    streamed = process.stderr if separate_stdout else process.stdout
    assert streamed is not None and process.stdout is not None
    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        lines, stdout = follow_output(
            streamed, process.stdout if separate_stdout else None, url=url, on_line=on_line
        )
        process.wait()
    finally:
        timer.cancel()
    return RunResult(
        exit_code=process.returncode,
        output="\n".join(lines),
        stdout=stdout,
        timed_out=timed_out.is_set(),
    )


def follow_output(
    streamed: IO[str],
    stdout: IO[str] | None,
    *,
    url: str | None,
    on_line: Callable[[str], None] | None,
) -> tuple[list[str], str]:
    """A child's output until it closes it: `streamed` line by line, each redacted of `url`
    and handed to `on_line`; `stdout`, when kept apart, read whole beside it. Returns the
    lines and the redacted stdout ("" when not kept apart)."""
    parts: list[str] = []
    reader = threading.Thread(target=lambda: parts.append(stdout.read()), daemon=True)
    if stdout is not None:
        reader.start()
    lines: list[str] = []
    for raw in streamed:
        line = redact(raw.rstrip("\n"), url)
        lines.append(line)
        if on_line is not None:
            on_line(line)
    if stdout is not None:
        reader.join()
    return lines, redact("".join(parts), url)
