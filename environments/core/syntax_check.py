"""Syntax errors in revision files: each file compiled (never run) once per version.

Compiling is Python's own parser, and it costs more than reading every header: about 60 µs a
file, against 20 µs. So a history of many files is compiled on two cores while its headers
are read (`sweep_start`, `Sweep.finish`): a forked child compiles from the first file
forwards as the parent reads the headers; the parent then compiles from the last file
backwards until the two meet. Each claims a file before compiling it in a map both share, so
no file is left out (at the meeting point one may be compiled twice, which is harmless). The
child sends only the problems it found and "done"; a child that died before saying "done" has
its files compiled again by the parent. What either found fills the per-file cache that
`check_syntax` reads, so the index's `problems` finds every verdict made.

No Django here.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
from collections.abc import Sequence

from environments.core.revision_files import FileCache, ScriptProblem

_syntax_cache = FileCache()

# below this many files to compile, a fork costs more than it saves
SWEEP_FROM = 200
_FREE, _CHILD, _PARENT = 0, 1, 2


def compile_problem(path: str) -> ScriptProblem | None:
    """The file's syntax error, in words (None: it compiles)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never hang on a file made a pipe
        try:
            source = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        finally:
            os.close(fd)
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" on line {exc.lineno}" if exc.lineno else ""
        return ScriptProblem(
            os.path.basename(path),
            f"syntax error{where}: {exc.msg} — alembic cannot load the scripts until it is fixed",
        )
    except (ValueError, OSError) as exc:
        return ScriptProblem(os.path.basename(path), f"cannot be compiled: {exc}")
    return None


def check_syntax(path: str, size: int, mtime: int) -> ScriptProblem | None:
    """Compile (never run) a file whose header was read by the fast scan, once per version."""
    return _syntax_cache.get_or_compute(path, size, mtime, lambda: compile_problem(path))


class Sweep:
    """The files of one index build being compiled by a child and, later, by the parent."""

    def __init__(self, files: Sequence[tuple[str, int, int]]) -> None:
        self.files = list(files)
        self.claims = mmap.mmap(-1, len(self.files))  # shared with the child: who took each
        self.reader, writer = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:  # no process to be had (a limit): the caller compiles as asked
            os.close(self.reader)
            os.close(writer)
            self.claims.close()
            raise
        if self.pid == 0:  # the child: compile forwards, report, leave without cleaning up
            code = 1
            try:
                os.close(self.reader)
                self._child(writer)
                code = 0
            finally:
                os._exit(code)
        os.close(writer)

    def _child(self, writer: int) -> None:
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # the parent's handlers are not ours
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        with os.fdopen(writer, "w") as out:
            for position, (path, _, _) in enumerate(self.files):
                if self.claims[position] != _FREE:
                    break  # the parent came this far
                self.claims[position] = _CHILD
                problem = compile_problem(path)
                if problem is not None:
                    out.write(json.dumps([position, problem.path, problem.message]) + "\n")
            out.write("done\n")

    def finish(self) -> None:
        """Compile backwards until meeting the child, then take its verdicts; every file of
        the sweep has one in the cache afterwards (what the child did not report as done is
        compiled here)."""
        found: dict[int, ScriptProblem] = {}
        collecting = done = False
        try:
            for position in range(len(self.files) - 1, -1, -1):
                if self.claims[position] != _FREE:
                    break
                self.claims[position] = _PARENT
                self._keep(position, compile_problem(self.files[position][0]))
            collecting = True
            done = self._collect(found)
        finally:
            if not collecting:  # interrupted: a child blocked on a full pipe gets EPIPE, leaves
                os.close(self.reader)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            claims = bytes(self.claims)
            self.claims.close()
        for position, (path, _, _) in enumerate(self.files):
            if claims[position] == _CHILD:
                self._keep(position, found.get(position) if done else compile_problem(path))

    def _collect(self, found: dict[int, ScriptProblem]) -> bool:
        """The child's problems, until its "done" (False: it never said it, or said something
        unreadable)."""
        with os.fdopen(self.reader) as results:
            for line in results:
                if line == "done\n":
                    return True
                try:
                    position, name, message = json.loads(line)
                except ValueError:
                    return False
                found[position] = ScriptProblem(name, message)
        return False

    def _keep(self, position: int, problem: ScriptProblem | None) -> None:
        path, size, mtime = self.files[position]
        _syntax_cache[path] = (size, mtime, problem)


def _cores() -> int:
    """The cores this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def sweep_start(files: Sequence[tuple[str, int, int]], max_bytes: int) -> Sweep | None:
    """Start compiling these files on a second core, when there are enough not compiled yet
    (None: each is compiled when first asked about, in this process)."""
    if not hasattr(os, "fork") or _cores() < 2:
        return None
    wanted = [
        (path, size, mtime)
        for path, size, mtime in files
        if size <= max_bytes and not _syntax_cache.holds(path, size, mtime)
    ]
    if len(wanted) < SWEEP_FROM:
        return None
    try:
        return Sweep(wanted)
    except OSError:  # no process or pipe to be had: compile as asked
        return None
