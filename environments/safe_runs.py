"""Safe runs on PostgreSQL: the timeouts a run gets (`core/run_limits.py`), from the
environment's policy and what its revisions ask for, read statically. The plan shows them
(an approval binds to them) and the worker hands them to alembic's connection."""

from __future__ import annotations

import os

from environments.core import run_limits
from environments.core.scripts import ScriptIndex
from environments.models import Environment, Job, UrlUnavailable
from environments.models.registry import backend_of
from environments.revision_analysis import revision_limits


class LimitsUnreadable(Exception):
    """A revision declares a timeout Retort cannot read: the sentence names it."""


def applies_to(environment: Environment) -> bool:
    """Timeouts are PostgreSQL's: only its runs get them."""
    try:
        return backend_of(environment.get_url()) == "postgresql"
    except UrlUnavailable:
        return False


def limits_for(
    environment: Environment, index: ScriptIndex | None, revisions: list[str]
) -> run_limits.RunLimits | None:
    """The run's timeouts (None: not a PostgreSQL run). Raises LimitsUnreadable."""
    if not applies_to(environment):
        return None
    asks: list[run_limits.Ask] = []
    for revision_id in revisions:
        revision = index.revisions.get(revision_id) if index is not None else None
        if revision is None:
            continue
        found = revision_limits(revision)
        if isinstance(found, str):
            raise LimitsUnreadable(
                f"Revision {revision_id} ({revision.path.name}) asks for a timeout Retort "
                f"cannot read: {found.split(': ', 1)[-1]}. Write e.g. "
                '`retort_lock_timeout = "30s"` or `# retort: statement_timeout=off`.'
            )
        asks += found
    return run_limits.run_limits(
        environment.lock_timeout_seconds,
        environment.statement_timeout_seconds,
        asks,
        attempts=environment.lock_attempts,
        backoff=environment.lock_retry_seconds,
    )


def job_limits(job: Job, index: ScriptIndex | None) -> run_limits.RunLimits | None:
    """What the job's plan says (as approved); for a job planned without them (a rollout's
    target), what the policy and the revisions say now. Raises LimitsUnreadable."""
    if job.run_limits:
        return run_limits.RunLimits.from_json(job.run_limits)
    if job.kind == Job.Kind.RESTORE:
        return None
    return limits_for(job.environment, index, list(job.revisions))


def application_name(job: Job) -> str:
    """The application_name of alembic's sessions in a job's run (PGAPPNAME): how Retort
    finds them in pg_stat_activity to say who they wait for."""
    return f"retort job #{job.pk}"


def alembic_env(limits: run_limits.RunLimits | None, job: Job) -> dict[str, str]:
    """The variables alembic runs with: PGOPTIONS (kept from the worker's environment) with
    the run's timeouts, a check every 2 s that alembic is still there (libpq clients:
    psycopg2, psycopg) — a backend otherwise runs a long statement to its end after its
    client (and worker) died, holding its locks and transaction open that long — and
    `retort.job`, which the env.py recipe for the shared migration lock reads (Retort's own
    run holds that lock already); the sessions are named after the job."""
    options = [
        os.environ.get("PGOPTIONS", ""),
        "-c client_connection_check_interval=2000",
        f"-c retort.job={job.pk}",
    ]
    if limits is not None:
        options.append(limits.pgoptions())
    return {
        "PGOPTIONS": " ".join(part for part in options if part),
        "PGAPPNAME": application_name(job),
    }


def review_refusal(job: Job) -> str:
    """Why the environment's policy does not run this plan, for what its lock review found
    (`lock_review_blocks`); "" when it does."""
    threshold = job.environment.lock_review_blocks
    found = job.lock_findings_at(threshold)
    if not found:
        return ""
    worst = "a danger" if threshold == "danger" else "a warning or worse"
    return (
        f"{job.environment.name}'s policy does not run a plan whose lock review finds "
        f"{worst}: {_named(found)}. Spell the step the safer way, or acknowledge a finding "
        "the team has weighed with `# retort-allow: <rule>` on its line, and plan again."
    )


def review_extra(job: Job) -> str:
    """Why this plan needs one approval more than its environment's (`lock_review_approval`);
    "" when it does not."""
    found = job.lock_findings_at(job.environment.lock_review_approval)
    if not found:
        return ""
    return (
        f"This plan needs one approval more than {job.environment.name}'s usual "
        f"{job.environment.required_approvals}, for what its lock review found: {_named(found)}."
    )


def _named(found: list[dict]) -> str:
    named = "; ".join(
        f"{finding['rule']} in {finding['revision']} (line {finding['line']}"
        f"{' of its SQL' if finding.get('engine') == 'sql' else ''})"
        for finding in found[:5]
    )
    return named + (f" and {len(found) - 5} more" if len(found) > 5 else "")
