"""Reading environments, on the workers: each environment's version table read (in parallel,
each within its own timeout) and stored on its one `CurrentState` row, in place, only if newer
than what the row holds. A read that finds another status or other heads writes a
`StateChange`; one that finds other revisions than the last successful read is audited with
the job that explains it (environments/read_requests.py sends the workers the reads that are
due, and a person's Refresh); pages only render what was stored. The CI gate's exit code
comes from a set of states."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from environments import script_digests
from environments.audit import audit_record
from environments.core import status as core_status
from environments.models import CurrentState, Environment, Job, StateChange

if TYPE_CHECKING:
    from environments.core.scripts import ScriptIndex
    from environments.core.versions import VersionRead

logger = logging.getLogger(__name__)


def _target(environment: Environment, index: ScriptIndex | None, error: str | None):
    project = environment.project
    return core_status.Target(
        key=environment.pk,
        url=environment.get_url,
        index=index,
        version_table=project.version_table or "alembic_version",
        version_table_schema=environment.version_table_schema,
        index_error=error,
    )


Indexes = dict[int, tuple["ScriptIndex | None", str | None]]


def environments_read(
    *,
    environments: Sequence[Environment],
    indexes: Indexes | None = None,
) -> dict[int, CurrentState]:
    """Read every environment, RETORT_READ_WORKERS at a time, and store what each found."""
    indexes = {} if indexes is None else indexes
    targets = []
    for environment in environments:
        project = environment.project
        if project.pk not in indexes:
            indexes[project.pk] = project.load_scripts(syntax=False)  # states need no compile
        targets.append(_target(environment, *indexes[project.pk]))
    found = core_status.read_many(
        targets,
        timeout=settings.RETORT_CONNECT_TIMEOUT,
        workers=settings.RETORT_READ_WORKERS,
    )
    read_projects = {environment.project_id: environment.project for environment in environments}
    for project_id, project in read_projects.items():
        script_digests.digest_store(project, indexes[project_id][0])  # for the CI gate
    return reads_store(environments, found)


# what a stored read writes: every field of the row but its key and the refresh's own mark
_STORED = [
    field.name
    for field in CurrentState._meta.concrete_fields
    if field.name not in {"environment", "queued_at"}
]


def reads_store(
    environments: Sequence[Environment], found: dict[int, core_status.EnvironmentState]
) -> dict[int, CurrentState]:
    """Store each environment's read on its state row, in place, unless the row already holds
    a newer one (reads may land out of order); write a change row where the status or the
    heads changed, and audit a change of revisions. The rows are locked while this runs, so
    two overlapping reads record a change once."""
    ids = sorted(environment.pk for environment in environments)
    with transaction.atomic():
        CurrentState.objects.ensure(ids)
        states = {
            state.environment_id: state
            for state in CurrentState.objects.select_for_update()
            .filter(environment_id__in=ids)
            .order_by("environment_id")
        }
        updated, changes, revisions = [], [], []
        for environment in environments:
            state, read = states[environment.pk], found[environment.pk]
            state.environment = environment
            if state.checked_at is not None and state.checked_at >= read.checked_at:
                continue  # a newer read landed first
            change = _change(environment, state, read)
            if change is not None:
                changes.append(change)
                if _revisions_changed(state, read):
                    revisions.append((change, state.known_at))
            _apply(state, read, changed=change is not None)
            updated.append(state)
        for change, since in revisions:
            _explain(change, since)
        CurrentState.objects.bulk_update(updated, _STORED, batch_size=500)
        StateChange.objects.bulk_create(changes, batch_size=500)
    return {environment.pk: states[environment.pk] for environment in environments}


def _change(
    environment: Environment, state: CurrentState, read: core_status.EnvironmentState
) -> StateChange | None:
    """The change this read makes to `state`, or None if it finds what the state holds. A
    change of revisions is measured from the last successful read (a failed read says nothing
    about them)."""
    same = state.checked_at is not None and (
        state.status == read.status.value and _same_heads(state.heads, read.heads)
    )
    if same:
        return None
    return StateChange(
        environment=environment,
        at=read.checked_at,
        from_status=state.status,
        status=read.status.value,
        from_heads=list(state.known_heads),  # what was known before, whatever failed since
        heads=list(read.heads),
        pending=len(read.pending),
        error=read.error or "",
    )


def _revisions_changed(state: CurrentState, read: core_status.EnvironmentState) -> bool:
    """The read succeeded and found other heads than the last read that succeeded before it."""
    return (
        not read.status.is_read_failure
        and state.known_at is not None
        and not _same_heads(state.known_heads, read.heads)
    )


def _same_heads(stored, found) -> bool:
    """The same revisions, whatever order the version table returned them in."""
    return sorted(stored) == sorted(found)


def _apply(state: CurrentState, read: core_status.EnvironmentState, *, changed: bool) -> None:
    state.checked_at = read.checked_at
    state.status = read.status.value
    state.heads = list(read.heads)
    state.script_heads = list(read.script_heads)
    state.pending = list(read.pending)
    state.unknown = list(read.unknown)
    state.error = read.error or ""
    state.duration_ms = read.duration_ms
    state.migration_lock = read.lock_holder
    state.requested_at = None  # a Refresh asked before is answered (whatever the clocks say)
    if changed:
        state.changed_at = read.checked_at
    if not read.status.is_read_failure:
        state.known_heads, state.known_at = list(read.heads), read.checked_at


def _explaining_job(environment: Environment, since) -> Job | None:
    """The Retort job that ran on this environment since its previous read, if any."""
    return (
        Job.objects.filter(environment=environment, started_at__isnull=False)
        .filter(Q(started_at__gte=since) | Q(status=Job.Status.RUNNING) | Q(finished_at__gte=since))
        .order_by("-started_at")
        .first()
    )


def _explain(change: StateChange, since) -> None:
    """One `revision_changed` event, plus `out_of_band_change` when no Retort job explains
    it; the change row names the job, or says it was made outside Retort."""
    environment = change.environment
    job = _explaining_job(environment, since)
    change.job, change.out_of_band = job, job is None
    details = {"status": change.status, "checked_at": change.at.isoformat()}
    actions = ["revision_changed"] if job else ["revision_changed", "out_of_band_change"]
    for action in actions:
        audit_record(
            action=action,
            environment=environment,
            job_id=job.pk if job else None,
            from_revisions=change.from_heads,
            to_revisions=change.heads,
            details=details,
            system_actor="reader",
        )


def environment_read(*, environment: Environment) -> CurrentState:
    return environments_read(environments=[environment])[environment.pk]


def environment_read_store(
    *, environment: Environment, read: VersionRead, checked_at, duration_ms: int = 0
) -> CurrentState:
    """Store a version table a worker has just read itself (a job, on its locked session) as
    the environment's read at `checked_at`, without connecting again."""
    index, error = environment.project.load_scripts()
    state = core_status.evaluate(index, read, index_error=error)
    state = replace(state, checked_at=checked_at, duration_ms=duration_ms)
    return reads_store([environment], {environment.pk: state})[environment.pk]


def exit_code_for(states: Iterable[CurrentState], *, unexpected_heads: bool) -> int:
    """0 all current, 1 something to do, 2 something could not be read (CI gates on it).

    Several heads fail the gate only when they are not intended (`Project.heads_verdict`):
    a project of independent branches at heads passes."""
    statuses = [state.status_enum for state in states]
    if any(status.is_read_failure for status in statuses):
        return 2
    if unexpected_heads or any(status is not core_status.Status.CURRENT for status in statuses):
        return 1
    return 0
