"""Where a database stands against its script directory, and reading many at once.

Alembic and SQLAlchemy are imported when a state is worked out or a database read, not with
this module: the models import its `Status`."""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from environments.core.versions import Failure, VersionRead, read_versions

if TYPE_CHECKING:
    from environments.core.scripts import ScriptIndex


class Status(StrEnum):
    CURRENT = "current"
    BEHIND = "behind"
    UNKNOWN_REVISION = "unknown_revision"
    UNINITIALIZED = "uninitialized"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    ERROR = "error"

    @property
    def is_read_failure(self) -> bool:
        return self in {Status.UNREACHABLE, Status.AUTH_FAILED, Status.ERROR}


@dataclass(frozen=True)
class EnvironmentState:
    """One read of one environment."""

    status: Status
    heads: tuple[str, ...] = ()
    script_heads: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    error: str | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: int = 0
    lock_holder: dict | None = None  # someone else holds the migration lock (versions.py)


@dataclass(frozen=True)
class Target:
    """What is needed to read one environment. `url` is a callable so secrets load late."""

    key: object
    url: Callable[[], str]
    index: ScriptIndex | None
    version_table: str = "alembic_version"
    version_table_schema: str | None = None
    index_error: str | None = None


def evaluate(
    index: ScriptIndex | None, read: VersionRead, *, index_error: str | None = None
) -> EnvironmentState:
    """Compare what a database holds with what its scripts declare."""
    state = _evaluate(index, read, index_error)
    return replace(state, lock_holder=read.lock_holder) if read.lock_holder else state


def _evaluate(
    index: ScriptIndex | None, read: VersionRead, index_error: str | None
) -> EnvironmentState:
    if read.failure is not None:
        return EnvironmentState(status=Status(read.failure.value), error=read.message)
    if read.heads is None:
        script_heads = index.heads if index is not None else ()
        return EnvironmentState(
            status=Status.UNINITIALIZED,
            script_heads=script_heads,
            error="The database has no version table: Alembic has never run here "
            "(or it uses another version table name).",
        )
    from alembic.script.revision import RevisionError

    heads = read.heads
    if index is None or index.revision_map is None:
        reason = index_error or (index.fatal if index is not None else None)
        return EnvironmentState(
            status=Status.ERROR,
            heads=heads,
            error=f"The script directory cannot be read: {reason}",
        )
    unknown = tuple(head for head in heads if not index.knows(head))
    if unknown:
        return EnvironmentState(
            status=Status.UNKNOWN_REVISION,
            heads=heads,
            script_heads=index.heads,
            unknown=unknown,
            error=_unknown_message(unknown),
        )
    try:
        pending = index.pending(heads)
    except RevisionError as exc:
        return EnvironmentState(
            status=Status.ERROR,
            heads=heads,
            script_heads=index.heads,
            error=f"Alembic cannot plan an upgrade from {', '.join(heads) or 'base'}: {exc}"
            + _duplicates_sentence(index),
        )
    return EnvironmentState(
        status=Status.BEHIND if pending else Status.CURRENT,
        heads=heads,
        script_heads=index.heads,
        pending=pending,
    )


def _duplicates_sentence(index: ScriptIndex) -> str:
    if not index.duplicates:
        return ""
    named = "; ".join(
        f"{revision} in {', '.join('/'.join(path.split('/')[-2:]) for path in paths)}"
        for revision, paths in sorted(index.duplicates.items())
    )
    return (
        f". The scripts declare the same revision in more than one file ({named}); alembic "
        "refuses to plan until one of them is removed."
    )


def _unknown_message(unknown: Sequence[str]) -> str:
    names = ", ".join(unknown)
    noun = "revision" if len(unknown) == 1 else "revisions"
    return (
        f"The database holds {noun} {names} that the script directory does not have: "
        "the code is older than the database, or the revision file was deleted."
    )


def read_one(target: Target, *, timeout: float) -> EnvironmentState:
    started = time.perf_counter()
    try:
        url = target.url()
    except LookupError as exc:
        read = VersionRead(failure=Failure.ERROR, message=str(exc))
    else:
        read = read_versions(
            url,
            version_table=target.version_table,
            version_table_schema=target.version_table_schema,
            timeout=timeout,
        )
    state = evaluate(target.index, read, index_error=target.index_error)
    elapsed = int((time.perf_counter() - started) * 1000)
    return replace(state, duration_ms=elapsed)


def read_many(
    targets: Sequence[Target],
    *,
    timeout: float,
    workers: int = 16,
    grace: float = 0.5,
) -> dict[object, EnvironmentState]:
    """Read every target, `workers` at a time; a dead database costs its own read slot its
    own timeout, never the others theirs.

    Each read has `timeout + grace` from the moment it starts (not from the call: a read
    waiting for a free slot is not late); one that has not answered by then is reported as
    unreachable and left to finish (or time out) in the background. Reads stuck past their
    deadline keep their slots, so the whole call is bounded too: once every read could have
    had its turn, whatever has not answered (started or not) is reported unreachable.
    """
    if not targets:
        return {}
    results: dict[object, EnvironmentState] = {}
    started: dict[object, float] = {}
    late_after = timeout + grace
    slots = max(1, min(workers, len(targets)))
    give_up_at = time.monotonic() + math.ceil(len(targets) / slots) * late_after + grace

    def read(target: Target) -> EnvironmentState:
        started[target.key] = time.monotonic()
        return read_one(target, timeout=timeout)

    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=slots, thread_name_prefix="retort-read"
    )
    try:
        futures = {pool.submit(read, target): target for target in targets}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                results[futures[future].key] = future.result()
            now = time.monotonic()
            for future in list(pending):
                target = futures[future]
                began = started.get(target.key)
                if now > give_up_at or (began is not None and now - began > late_after):
                    pending.discard(future)
                    results[target.key] = EnvironmentState(
                        status=Status.UNREACHABLE,
                        script_heads=target.index.heads if target.index else (),
                        error=f"Cannot reach the database: no answer within {timeout:g} seconds.",
                        duration_ms=int(late_after * 1000),
                    )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results
