"""Finding and reading a script directory's files as Alembic would load them: only regular
files inside the project, each read once per version (size and mtime), never more than a limit
of bytes (environments/core/syntax_check.py compiles them to find syntax errors)."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import TypeVar

from environments.core.revision_headers import (
    NeedsParser,
    RevisionFile,
    read_revision_source,
    scan_header,
)
from environments.core.script_config import ScriptConfig

T = TypeVar("T")


@dataclass(frozen=True)
class ScriptProblem:
    """A file (or the directory as a whole) that could not be read as Alembic would need."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _is_revision_file(name: str) -> bool:
    """Alembic's rule, `(?!\\.\\#|__init__)(.*\\.py)$`, without a regex per file."""
    return name.endswith(".py") and not name.startswith((".#", "__init__")) and "\n" not in name


_by_name = operator.attrgetter("name")


def list_revision_files(
    config: ScriptConfig, refused: list[tuple[str, str]] | None = None
) -> list[tuple[str, int, int]]:
    """The files Alembic would load, in its order, each once, with their size and mtime.

    Only regular files inside the project are listed: a FIFO or a device (reading one would
    hang or never end) and a link leading out of the project are left out, each with the
    reason appended to `refused`. Only directories are resolved (a file reached twice through
    links to the same folder is listed once); resolving every file would cost more than reading
    it.
    """
    refused = [] if refused is None else refused
    inside = _project_roots(config)
    seen_dirs: set[str] = set()
    seen_links: set[str] = set()
    found: list[tuple[str, int, int]] = []
    for location in config.version_locations:
        pending = [os.path.realpath(location)]
        while pending:
            directory = pending.pop(0)
            if directory in seen_dirs or not os.path.isdir(directory):
                continue
            seen_dirs.add(directory)
            subdirs = []
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=_by_name)
            for entry in entries:
                if entry.is_dir():
                    if entry.name != "__pycache__":
                        real = os.path.realpath(entry.path)
                        if _within(real, inside):
                            subdirs.append(real)
                        elif config.recursive:
                            refused.append((entry.path, _outside(real)))
                elif _is_revision_file(entry.name):
                    if entry.is_symlink():
                        real = os.path.realpath(entry.path)
                        # Alembic loads a file reached twice only once
                        if real in seen_links or os.path.dirname(real) in seen_dirs:
                            continue
                        seen_links.add(real)
                        if not _within(real, inside):
                            refused.append((entry.path, _outside(real)))
                            continue
                    try:
                        stat = entry.stat()
                    except OSError:
                        continue
                    if not S_ISREG(stat.st_mode):
                        refused.append((entry.path, _NOT_A_FILE))
                        continue
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
            if config.recursive:
                pending[:0] = subdirs
    return found


_NOT_A_FILE = (
    "is not a regular file (a pipe, a device or a socket); Retort does not open it. Remove it "
    "from the version directory."
)


def _project_roots(config: ScriptConfig) -> tuple[str, ...]:
    """Where a project's revision files may live: its folder and its version locations."""
    roots = [config.script_location.parent, *config.version_locations]
    return tuple(os.path.realpath(root) for root in roots)


def _within(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _outside(real: str) -> str:
    return f"links to {real}, outside the project; Retort does not follow it."


class FileCache(dict):
    """Results computed from a file, kept while its size and modification time stay the same."""

    def holds(self, path: Path | str, size: int, mtime: int) -> bool:
        """Whether a result for this version of the file is kept."""
        cached = self.get(path)
        return cached is not None and cached[0] == size and cached[1] == mtime

    def get_or_compute(self, path: Path, size: int, mtime: int, compute: Callable[[], T]) -> T:
        if self.holds(path, size, mtime):
            return self[path][2]
        result = compute()
        self[path] = (size, mtime, result)
        return result


_file_cache = FileCache()


def read_file(
    path: str, size: int, mtime: int, max_bytes: int = 1_000_000
) -> RevisionFile | ScriptProblem:
    def read() -> RevisionFile | ScriptProblem:
        try:
            return read_header(path, size, max_bytes)
        except ValueError as exc:
            return ScriptProblem(os.path.basename(path), str(exc))
        except OSError as exc:
            return ScriptProblem(os.path.basename(path), f"cannot be read: {exc.strerror}")

    return _file_cache.get_or_compute(path, size, mtime, read)


_PREFIX = 8192


def read_header(path: str, size: int, max_bytes: int = 1_000_000) -> RevisionFile:
    """Headers sit at the top of a revision file: scan its first bytes, the rest only if needed
    (and never more than `max_bytes`)."""
    # non-blocking: a file swapped for a pipe since it was listed must not hang the read
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        prefix = os.read(fd, _PREFIX)
    finally:
        os.close(fd)
    if len(prefix) < _PREFIX and size <= _PREFIX:
        return read_revision_source(prefix, path)
    try:
        return scan_header(prefix, path, complete=False)
    except NeedsParser:
        if size > max_bytes:
            raise ValueError(
                f"{_too_large(size, max_bytes)}, and its header is not plain enough to read "
                f"from its first {_PREFIX // 1024} KiB; the file is left out"
            ) from None
        return read_revision_source(Path(path).read_bytes(), path)


def _too_large(size: int, max_bytes: int) -> str:
    return f"is {size / 1_000_000:.1f} MB, over Retort's limit of {max_bytes / 1_000_000:g} MB"


def too_large(size: int, max_bytes: int) -> str | None:
    """The sentence for a file over the size limit (None when within it)."""
    if size <= max_bytes:
        return None
    return (
        f"{_too_large(size, max_bytes)} (RETORT_MAX_REVISION_BYTES): only its header was read; "
        "its code is not checked, analysed or shown"
    )
