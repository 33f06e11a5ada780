"""Reading environments: each environment's version table read (in parallel, each within its
own timeout), stored as a Snapshot, and a change of revisions audited with the job that
explains it; old reads pruned; the CI gate's exit code from a set of reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from environments.audit import audit_record
from environments.core import status as core_status
from environments.core.scripts import ScriptIndex
from environments.models import Environment, Job, Snapshot


def _target(environment: Environment, index: ScriptIndex | None, error: str | None):
    project = environment.project
    return core_status.Target(
        key=environment.pk,
        url=environment.get_url,
        index=index,
        version_table=project.version_table or "alembic_version",
        version_table_schema=project.version_table_schema or None,
        index_error=error,
    )


Indexes = dict[int, tuple[ScriptIndex | None, str | None]]


def environments_read(
    *,
    environments: Sequence[Environment],
    indexes: Indexes | None = None,
    keep_alive: float | None = None,
) -> dict[int, Snapshot]:
    """Read every environment in parallel and store one snapshot per read.

    `keep_alive`: seconds each server database's connection stays open for the next read
    (default `RETORT_READ_KEEPALIVE`; 0 closes it now)."""
    indexes = {} if indexes is None else indexes
    targets = []
    for environment in environments:
        project = environment.project
        if project.pk not in indexes:
            indexes[project.pk] = project.load_scripts()
        targets.append(_target(environment, *indexes[project.pk]))
    states = core_status.read_many(
        targets,
        timeout=settings.RETORT_CONNECT_TIMEOUT,
        workers=settings.RETORT_READ_WORKERS,
        keep_alive=settings.RETORT_READ_KEEPALIVE if keep_alive is None else keep_alive,
    )
    snapshots = [_snapshot(environment, states[environment.pk]) for environment in environments]
    changed = _revision_changes(snapshots, _last_reads([e.pk for e in environments]))
    with transaction.atomic():
        if changed:
            _record_revision_changes(changed)
        Snapshot.objects.bulk_create(snapshots)
    return {snapshot.environment.pk: snapshot for snapshot in snapshots}


_READ_FAILURES = [s.value for s in core_status.Status if s.is_read_failure]


def _last_reads(environment_ids: Sequence[int]) -> dict[int, Snapshot]:
    """Each environment's latest successful read (environments never read: absent)."""
    latest = (
        Snapshot.objects.filter(environment=OuterRef("pk"))
        .exclude(status__in=_READ_FAILURES)
        .order_by("-checked_at", "-id")
    )
    rows = (
        Environment.objects.filter(pk__in=environment_ids)
        .annotate(last_id=Subquery(latest.values("pk")[:1]))
        .exclude(last_id=None)
        .values_list("pk", "last_id")
    )
    ids = dict(rows)
    snapshots = Snapshot.objects.only("pk", "heads", "checked_at").in_bulk(ids.values())
    return {env_id: snapshots[snapshot_id] for env_id, snapshot_id in ids.items()}


def _revision_changes(
    snapshots: Sequence[Snapshot], previous: dict[int, Snapshot]
) -> list[Snapshot]:
    """Reads that found other heads than the environment's previous successful read."""
    changed = []
    for snapshot in snapshots:
        before = previous.get(snapshot.environment.pk)
        if snapshot.is_read_failure or before is None:
            continue
        if sorted(before.heads) != sorted(snapshot.heads):
            changed.append(snapshot)
    return changed


def _explaining_job(environment: Environment, since) -> Job | None:
    """The Retort job that ran on this environment since its previous read, if any."""
    return (
        Job.objects.filter(environment=environment, started_at__isnull=False)
        .filter(Q(started_at__gte=since) | Q(status=Job.Status.RUNNING) | Q(finished_at__gte=since))
        .order_by("-started_at")
        .first()
    )


def _record_revision_changes(changed: list[Snapshot]) -> None:
    """One `revision_changed` event per change, plus `out_of_band_change` when no Retort job
    explains it. Runs inside the transaction that stores the snapshots; the environments are
    locked and their previous reads looked up again, so two overlapping reads record a change
    once."""
    locked = [snapshot.environment.pk for snapshot in changed]
    list(Environment.objects.select_for_update().filter(pk__in=locked).values_list("pk"))
    previous = _last_reads(locked)
    for snapshot in changed:
        environment = snapshot.environment
        before = previous.get(environment.pk)
        if before is None or sorted(before.heads) == sorted(snapshot.heads):
            continue  # an overlapping read recorded it first
        job = _explaining_job(environment, before.checked_at)
        details = {"status": snapshot.status, "checked_at": snapshot.checked_at.isoformat()}
        actions = ["revision_changed"] if job else ["revision_changed", "out_of_band_change"]
        for action in actions:
            audit_record(
                action=action,
                environment=environment,
                job_id=job.pk if job else None,
                from_revisions=before.heads,
                to_revisions=snapshot.heads,
                details=details,
                system_actor="reader",
            )


def _snapshot(environment: Environment, state: core_status.EnvironmentState) -> Snapshot:
    return Snapshot(
        environment=environment,
        checked_at=state.checked_at,
        status=state.status.value,
        heads=list(state.heads),
        script_heads=list(state.script_heads),
        pending=list(state.pending),
        unknown=list(state.unknown),
        error=state.error or "",
        duration_ms=state.duration_ms,
    )


def snapshots_prune(*, keep_days: float) -> int:
    """Delete reads older than `keep_days`, always keeping each environment's latest."""
    cutoff = timezone.now() - timedelta(days=keep_days)
    latest = (
        Snapshot.objects.filter(environment=OuterRef("environment"))
        .order_by("-checked_at", "-id")
        .values("pk")[:1]
    )
    old = Snapshot.objects.filter(checked_at__lt=cutoff).exclude(pk=Subquery(latest))
    deleted, _ = old.delete()
    return deleted


def environment_read(*, environment: Environment, keep_alive: float | None = None) -> Snapshot:
    return environments_read(environments=[environment], keep_alive=keep_alive)[environment.pk]


def exit_code_for(snapshots: Iterable[Snapshot], *, unexpected_heads: bool) -> int:
    """0 all current, 1 something to do, 2 something could not be read (CI gates on it).

    Several heads fail the gate only when they are not intended (`Project.heads_verdict`):
    a project of independent branches at heads passes."""
    statuses = [snapshot.status_enum for snapshot in snapshots]
    if any(status.is_read_failure for status in statuses):
        return 2
    if unexpected_heads or any(status is not core_status.Status.CURRENT for status in statuses):
        return 1
    return 0
