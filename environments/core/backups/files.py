"""The files of backups: a partial file beside the final name, published only once checked and
never over another backup; sizes, digests, and durable renames."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from environments.core.backups.common import BackupError


def check_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise BackupError(
            f"A backup name must be a plain file name without folders; {name!r} is not."
        )


def partial_file(dest_dir: Path, final: Path) -> Path:
    """An empty 0600 file beside `final`, named so no one takes it for a finished backup."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"Cannot create the backup folder {dest_dir}: {exc.strerror}.") from None
    if final.exists():
        raise BackupError(
            f"A backup named {final.name} already exists in {dest_dir}; Retort never overwrites "
            "a backup."
        )
    try:
        handle, name = tempfile.mkstemp(dir=dest_dir, prefix=f".{final.name}.", suffix=".partial")
    except OSError as exc:
        raise BackupError(
            f"Cannot write into the backup folder {dest_dir}: {exc.strerror}."
        ) from None
    os.close(handle)
    return Path(name)


def publish(partial: Path, final: Path) -> None:
    """Give the checked file its final name, never replacing a file that appeared meanwhile."""
    fsync(partial)
    try:
        os.link(partial, final)
    except FileExistsError:
        raise BackupError(
            f"A backup named {final.name} appeared in {final.parent} while this one was being "
            "written; Retort never overwrites a backup."
        ) from None
    except OSError:  # a filesystem without hard links
        if final.exists():
            raise BackupError(f"A backup named {final.name} already exists.") from None
        os.replace(partial, final)
    else:
        partial.unlink()
    fsync_dir(final.parent)


def size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: it lives in the directory, not in the file."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def remove_partials(folder: Path, name: str) -> list[Path]:
    """Delete what a backup named `name` left half-written in `folder` (its worker was killed
    before it could clean up); returns what was removed."""
    removed = []
    for partial in Path(folder).glob(f".{name}.*.partial"):
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
            removed.append(partial)
    return removed
