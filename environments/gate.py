"""The CI gate's read (`manage.py migration_status`): every environment asked about read now,
stored like a worker's read, with its project's heads verdict.

The common case — each database holds exactly its project's script heads and the scripts have
not changed since a full read — is answered without Alembic or SQLAlchemy: the scripts'
answers come from their digest (environments/script_digests.py) and the version tables are
read with the driver alone (environments/core/quick_versions.py). A database that could not be
connected to is worded by the same code a full read uses. Anything else — a database behind,
unknown revisions, no version table, changed scripts, someone holding the migration lock —
takes the full read (environments/overviews.py), with Alembic's answers and its words.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from environments import reads, script_digests
from environments.core import quick_versions
from environments.core.database_urls import redact
from environments.core.heads import HeadsVerdict
from environments.core.status import EnvironmentState, Status
from environments.core.versions import classify
from environments.models import Environment, Project
from environments.models.registry import UrlUnavailable
from environments.overviews import EnvironmentCard, heads_dict, overview_build


@dataclass
class GateOverview:
    """A project as the gate prints it: its heads verdict and the cards of its environments
    (the fields of `overviews.ProjectOverview` the gate reads)."""

    project: Project
    heads: HeadsVerdict | None
    cards: list[EnvironmentCard]

    def heads_dict(self) -> dict[str, object]:
        return heads_dict(self.heads)


def gate_read(
    *, projects: Sequence[Project], environments: Sequence[Environment]
) -> list[GateOverview]:
    """Read `environments` now and store what was found; one overview per project."""
    quick = quick_read(projects, environments)
    if quick is not None:
        return quick
    built = overview_build(projects=projects, refresh=True, environments=environments)
    return [GateOverview(overview.project, overview.heads, overview.cards) for overview in built]


def quick_read(
    projects: Sequence[Project], environments: Sequence[Environment]
) -> list[GateOverview] | None:
    """The gate's answer without Alembic, stored like a full read's, when every project's
    digest holds and every environment is at its script heads or could not be connected to;
    None (nothing stored) otherwise. The databases are read side by side, RETORT_READ_WORKERS
    at a time, within the full read's deadline (`_read_side_by_side`)."""
    answers = {}
    for project in projects:
        answer = script_digests.digest_answer(project)
        if answer is None:
            return None
        answers[project.pk] = answer
    try:  # what each read needs, looked up here: the threads touch no model
        targets = [
            _Target.of(environment, answers[environment.project_id]) for environment in environments
        ]
    except UrlUnavailable:
        return None
    states = _read_side_by_side(targets)
    if states is None or any(state is None for state in states):
        return None
    found = {environment.pk: state for environment, state in zip(environments, states, strict=True)}
    rows = reads.reads_store(environments, found) if environments else {}
    by_project: dict[int, list[EnvironmentCard]] = {project.pk: [] for project in projects}
    for environment in environments:
        row = rows[environment.pk]
        by_project[environment.project_id].append(EnvironmentCard(environment, row, row=row))
    return [
        GateOverview(project, answers[project.pk].verdict, by_project[project.pk])
        for project in projects
    ]


def _read_side_by_side(targets: list[_Target]) -> list[EnvironmentState | None] | None:
    """Each target's quick state, RETORT_READ_WORKERS at a time; None when any has not
    answered within the connect timeout and a grace (as `status.read_many` allows a read)
    times the rounds the slots need — the full read then words it."""
    if not targets:
        return []
    timeout = settings.RETORT_CONNECT_TIMEOUT
    workers = max(1, min(settings.RETORT_READ_WORKERS, len(targets)))
    rounds = -(-len(targets) // workers)
    pool = concurrent.futures.ThreadPoolExecutor(workers, "retort-gate")
    try:
        futures = [pool.submit(_quick_state, target) for target in targets]
        _, late = concurrent.futures.wait(futures, timeout=rounds * (timeout + 0.5))
        if late:
            return None
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Target:
    url: str
    version_table: str
    version_table_schema: str | None
    answer: script_digests.Answer

    @classmethod
    def of(cls, environment: Environment, answer: script_digests.Answer) -> _Target:
        return cls(
            environment.get_url(),
            environment.project.version_table or "alembic_version",
            environment.version_table_schema,
            answer,
        )


def _quick_state(target: _Target) -> EnvironmentState | None:
    """The environment's state when the quick read can tell it plainly: at the script heads
    (current), or not reachable at all; None: read it the full way."""
    started = time.perf_counter()
    try:
        heads = quick_versions.read_heads(
            target.url,
            version_table=target.version_table,
            version_table_schema=target.version_table_schema,
            timeout=settings.RETORT_CONNECT_TIMEOUT,
        )
    except quick_versions.ConnectFailed as failed:
        return _unreachable(target.url, failed.error, started)
    except Exception:  # noqa: BLE001 - Unsure, or anything unforeseen: the full read says it
        return None
    answer = target.answer
    if not answer.current_at_heads or heads != tuple(sorted(answer.heads)):
        return None
    return EnvironmentState(
        status=Status.CURRENT, heads=heads, script_heads=answer.heads, duration_ms=_since(started)
    )


def _unreachable(url: str, error: BaseException, started: float) -> EnvironmentState:
    """A connection that failed, in the words of a full read (which would fail the same way).
    Kept only when every other database is answered quickly too; otherwise the full read reads
    them all again, this one included."""
    kind, message = classify(error)
    return EnvironmentState(
        status=Status(kind.value), error=redact(message, url), duration_ms=_since(started)
    )


def _since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
