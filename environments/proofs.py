"""Proof after every run: once an upgrade or downgrade succeeded, a worker compares the live
schema with the schema its revision should have — the one the project's own migrations build
on a scratch database (`expected.py`) — and records what differs on the job and in the audit
trail ("after the upgrade, prod lacks column orders.note that its migrations create"). A
migration that did something else on this database than it does from scratch — a step that
depends on the data, a change made by hand meanwhile — is found the moment it happens.

It runs as a task of its own after the job has ended, so a job (and a rollout's wave) never
waits for it; RETORT_PROOF_AFTER_RUN=false turns it off.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from environments import dispatch, expected
from environments.core import schema as core_schema
from environments.models import Job, UrlUnavailable
from environments.transitions import job_audit


def proof_send(job: Job) -> None:
    if job.proof_expected:
        dispatch.send("job_prove", job.pk)


def job_prove(*, job_id: int) -> Job | None:
    """Compare the job's environment as it is now with the schema of the revisions the job
    left it at; store the result on the job, and audit a difference."""
    job = Job.objects.select_related("environment__project").filter(pk=job_id).first()
    if job is None or not job.proof_expected or job.proof:
        return job
    environment = job.environment
    heads = list(job.result_heads or [])
    found: dict = {"checked_at": timezone.now().isoformat(), "heads": heads}
    try:
        url = environment.get_url()
        live = core_schema.read_schema(
            url, schema=environment.schema or None, timeout=settings.RETORT_CONNECT_TIMEOUT
        )
        built = expected.build(environment=environment, heads=heads, dialect=live.dialect)
    except (UrlUnavailable, core_schema.SchemaReadError, expected.ExpectedSchemaError) as exc:
        found["error"] = f"The schema could not be checked: {exc}"
    else:
        if built.error:
            found["error"] = f"The schema its migrations build could not be built: {built.error}"
        else:
            differences = expected.compare_with_expected(environment, built, live)
            found["differences"] = [
                f"after the {job.kind}, {difference.detail}" for difference in differences
            ]
    Job.objects.filter(pk=job.pk).update(proof=found)
    job.proof = found
    if found.get("differences"):
        job_audit(
            job,
            "job_proof_failed",
            system_actor="worker",
            details={"differences": found["differences"]},
        )
    return job
