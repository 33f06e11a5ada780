"""Celery tasks: thin wrappers that fetch by id and call one service."""

from celery import shared_task

from environments import (
    approvals,
    audit_chain,
    discovery,
    dispatch,
    drift,
    execution,
    notify,
    planning,
    proofs,
    read_requests,
    reads,
    rollout_coordinator,
    rollout_plans,
    round_trips,
)
from environments.models import Environment, Project


@shared_task
def environment_refresh(environment_id: int) -> str | None:
    environment = Environment.objects.select_related("project").filter(pk=environment_id).first()
    if environment is None:
        return None
    return reads.environment_read(environment=environment).status


@shared_task
def environments_refresh(environment_ids: list[int]) -> int:
    """A batch of reads the scheduled refresh sent (environments deleted since are skipped)."""
    environments = list(
        Environment.objects.select_related("project").filter(pk__in=environment_ids)
    )
    indexes: reads.Indexes = {}  # each project's scripts, loaded once for the batch
    read = len(reads.environments_read(environments=environments, indexes=indexes))
    for index, _ in indexes.values():
        if index is not None:
            index.problems  # noqa: B018 - compiles changed files here, not in a page request
    return read


@shared_task
def environments_refresh_due() -> int:
    """Celery beat's tick: send the reads that are due, in batches."""
    return read_requests.reads_send_due()


@shared_task
def discoveries_run() -> int:
    """Celery beat's tick: ask every discovery's server for its tenants."""
    return discovery.discoveries_run()


@shared_task
def rollout_plan(rollout_id: int) -> str | None:
    rollout = rollout_plans.rollout_plan(rollout_id=rollout_id)
    return rollout.status if rollout else None


@shared_task
def rollout_advance(rollout_id: int) -> str | None:
    """One step of a rollout's coordinator (a job of it ended, it started or resumed)."""
    rollout = rollout_coordinator.rollout_advance(rollout_id=rollout_id)
    return rollout.status if rollout else None


@shared_task
def rollouts_advance() -> int:
    """Celery beat's tick: every rollout with work to do, and expired rollout requests."""
    return rollout_coordinator.rollouts_advance()


@shared_task
def audit_verify() -> bool:
    """Walk the whole audit chain; the audit page shows the result."""
    return audit_chain.audit_verify_full().ok


@shared_task(acks_late=False, max_retries=0)
def job_run(job_id: int) -> str | None:
    """At most once: acknowledged on receipt, never retried; a redelivery finds it taken."""
    job = execution.job_run(job_id=job_id)
    return job.status if job else None


@shared_task
def job_preview_sql(job_id: int) -> str | None:
    job = planning.job_preview_sql(job_id=job_id)
    return job.sql_status if job else None


@shared_task
def jobs_dispatch() -> list[int]:
    """Send again every queued job no worker has taken (the broker lost or refused it)."""
    return dispatch.jobs_dispatch()


@shared_task
def jobs_reap() -> list[int]:
    return execution.jobs_reap()


@shared_task
def jobs_expire() -> list[int]:
    return approvals.jobs_expire()


@shared_task(ignore_result=True)
def notifications_send(project_id: int | None = None) -> int:
    """Deliver a project's webhook outbox (none given: a task for each project with messages
    waiting); a dead receiver costs its own project's task its timeout, never a job."""
    return notify.notifications_send(project_id)


@shared_task
def drift_check(project_id: int) -> bool:
    """Check one project for drift now (a person asked, on the drift page)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return False
    drift.drift_record(project=project)
    return True


@shared_task
def job_prove(job_id: int) -> bool:
    """Compare a finished job's environment with the schema its revisions build."""
    return proofs.job_prove(job_id=job_id) is not None


@shared_task
def round_trips_run(project_id: int) -> bool:
    """Run a project's round-trip tests on scratch databases (a person asked, on its page)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return False
    round_trips.round_trips_record(project=project)
    return True


@shared_task
def drift_check_all() -> int:
    """Check every project for drift; audit what appeared and what cleared."""
    for project in Project.objects.all():
        drift.drift_record(project=project)
    return Project.objects.count()
