"""Workflows over the registry: read environments, build the overview, apply a config file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from environments.audit import audit_record
from environments.core import status as core_status
from environments.core.heads import HeadsVerdict
from environments.core.revision_files import ScriptProblem
from environments.core.scripts import ScriptIndex
from environments.models import DriftState, Environment, Job, Project, Snapshot


@dataclass
class RevisionLine:
    revision: str
    message: str
    known: bool = True


@dataclass
class EnvironmentCard:
    environment: Environment
    snapshot: Snapshot | None
    heads: list[RevisionLine] = field(default_factory=list)
    drift: list[dict] = field(default_factory=list)  # the last scheduled drift check's


@dataclass
class ProjectOverview:
    project: Project
    index: ScriptIndex | None
    index_error: str | None
    cards: list[EnvironmentCard]

    @property
    def problems(self) -> list[ScriptProblem]:
        return self.index.problems if self.index else []

    @property
    def multiple_heads(self) -> tuple[str, ...]:
        return self.index.heads if self.index and self.index.has_multiple_heads else ()

    @property
    def heads(self) -> HeadsVerdict | None:
        """Whether the scripts' heads are as the project intends; None when unreadable."""
        if self.index is None or self.index.revision_map is None:
            return None
        return self.project.heads_verdict(self.index)

    def heads_dict(self) -> dict[str, object]:
        """The heads verdict as the CI gate and the status API print it."""
        verdict = self.heads
        return {
            "multiple_heads": bool(self.multiple_heads),
            "heads_expected": verdict.expected if verdict else None,
            "heads_reason": verdict.sentence if verdict else "",
        }

    @property
    def fatal(self) -> str | None:
        return self.index_error or (self.index.fatal if self.index else None)


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


def _card(
    environment: Environment,
    snapshot: Snapshot | None,
    index: ScriptIndex | None,
    drift: DriftState | None = None,
):
    heads = []
    if snapshot is not None:
        for head in snapshot.heads:
            revision = index.revisions.get(head) if index else None
            heads.append(
                RevisionLine(head, revision.message if revision else "", revision is not None)
            )
    found = drift.involving(environment.slug) if drift is not None else []
    return EnvironmentCard(environment=environment, snapshot=snapshot, heads=heads, drift=found)


def overview_build(*, projects: Iterable[Project], refresh: bool = True) -> list[ProjectOverview]:
    """Every project with its environments in promotion order, read now (or as last read)."""
    projects = list(projects)
    environments = [env for project in projects for env in project.environments.all()]
    indexes: Indexes = {project.pk: project.load_scripts() for project in projects}
    if refresh:
        snapshots = environments_read(environments=environments, indexes=indexes)
    else:
        snapshots = Snapshot.objects.latest_of(environments)
    drift = {d.project_id: d for d in DriftState.objects.filter(project__in=projects)}
    overviews = []
    for project in projects:
        index, error = indexes[project.pk]
        state = drift.get(project.pk)
        cards = [
            _card(env, snapshots.get(env.pk), index, state) for env in project.environments.all()
        ]
        overviews.append(ProjectOverview(project, index, error, cards))
    return overviews


def environment_card(*, environment: Environment, refresh: bool) -> EnvironmentCard:
    snapshot = (
        environment_read(environment=environment) if refresh else environment.latest_snapshot()
    )
    index, _ = environment.project.load_scripts()
    drift = DriftState.objects.filter(project=environment.project_id).first()
    return _card(environment, snapshot, index, drift)


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


@dataclass
class RevisionRow:
    revision: str
    message: str
    create_date: str | None
    branch_labels: tuple[str, ...]
    down_revisions: tuple[str, ...]
    filename: str

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1


@dataclass
class ReadRun:
    """Consecutive reads that found the same thing, shown as one row: the newest of them, how
    many there were and when the first was."""

    latest: Snapshot
    count: int = 1
    since: datetime | None = None  # the oldest read's checked_at

    def same_as(self, snapshot: Snapshot) -> bool:
        latest = self.latest
        return (
            snapshot.status == latest.status
            and list(snapshot.heads) == list(latest.heads)
            and len(snapshot.pending) == len(latest.pending)
            and snapshot.error == latest.error
        )


def read_runs(snapshots: Iterable[Snapshot], *, limit: int = 20) -> list[ReadRun]:
    """Snapshots, newest first, with each run of identical reads folded into one row."""
    runs: list[ReadRun] = []
    for snapshot in snapshots:
        if runs and runs[-1].same_as(snapshot):
            runs[-1].count += 1
            runs[-1].since = snapshot.checked_at
            continue
        if len(runs) == limit:
            break
        runs.append(ReadRun(snapshot, 1, snapshot.checked_at))
    return runs


@dataclass
class EnvironmentDetail:
    pending: list[RevisionRow]
    applied: list[RevisionRow]
    recent: list[ReadRun]
    index_error: str | None
    problems: list[ScriptProblem]
    index: ScriptIndex | None = None  # what the page read the scripts as, for its job form


def _rows(index: ScriptIndex, ids: Iterable[str]) -> list[RevisionRow]:
    rows = []
    for revision_id in ids:
        revision = index.revisions.get(revision_id)
        if revision is not None:
            rows.append(
                RevisionRow(
                    revision=revision.revision,
                    message=revision.message,
                    create_date=revision.create_date,
                    branch_labels=revision.branch_labels,
                    down_revisions=revision.down_revisions,
                    filename=revision.path.name,
                )
            )
    return rows


def environment_detail_build(*, card: EnvironmentCard) -> EnvironmentDetail:
    """Pending revisions in apply order and the applied history, newest first."""
    environment, snapshot = card.environment, card.snapshot
    index, error = environment.project.load_scripts()
    pending: list[RevisionRow] = []
    applied: list[RevisionRow] = []
    if index is not None and index.revision_map is not None and snapshot is not None:
        pending = _rows(index, snapshot.pending)
        known_heads = [head for head in snapshot.heads if index.knows(head)]
        if not snapshot.unknown and known_heads:
            applied = _rows(index, index.applied(known_heads))
    recent = read_runs(environment.snapshots.order_by("-checked_at", "-id")[:500])
    return EnvironmentDetail(
        pending=pending,
        applied=applied,
        recent=recent,
        index_error=error or (index.fatal if index else None),
        problems=index.problems if index else [],
        index=index,
    )
