"""Proof after every run: once an upgrade succeeded, the live schema is compared with the one
its revisions build on a scratch database; a difference is a finding on the job and an audit
event (real PostgreSQL, real alembic). The revision here does something else on a database
with rows than from scratch — what a revision changed between planning and running, a step
that depends on the data or a change made by hand all look like to the proof."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg2
import pytest

from environments import execution, proofs
from environments.models import AuditEvent, Job
from tests.conftest import at_r1, requested
from tests.conftest import orders_prod as prod

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_upgrade_that_skipped_a_column_is_found_by_the_proof_and_audited(
    orders_project, users, client_alice
):
    r2 = next((Path(orders_project.alembic_ini).parent / "migrations/versions").glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            '    op.add_column("orders", sa.Column("note", sa.String(100)))',
            "    count = sa.text('SELECT count(*) FROM orders')\n"
            "    offline = op.get_context().as_sql  # the SQL preview\n"
            "    rows = 0 if offline else op.get_bind().execute(count).scalar()\n"
            "    if rows == 0:  # the note is skipped where there are orders\n"
            '        op.add_column("orders", sa.Column("note", sa.String(100)))',
        )
    )
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    with contextlib.closing(psycopg2.connect(environment.get_url())) as db, db.cursor() as cur:
        cur.execute("INSERT INTO orders (id) VALUES (1), (2)")
        db.commit()
    job = requested(environment, users["alice"], target="r2")
    execution.job_run(job_id=job.pk)
    assert Job.objects.get(pk=job.pk).status == "succeeded"

    proofs.job_prove(job_id=job.pk)  # the worker's task after the job

    job.refresh_from_db()
    assert job.proof["differences"] == [
        "after the upgrade, prod lacks column orders.note that its migrations create"
    ]
    event = AuditEvent.objects.get(action="job_proof_failed", job_id=job.pk)
    assert event.details["differences"] == job.proof["differences"]
    page = client_alice.get(job.get_absolute_url()).content.decode()
    assert "Proof after the run:</strong> the schema is not the one its revisions build." in page
    assert "after the upgrade, prod lacks column orders.note that its migrations create" in page


def test_an_upgrade_that_did_what_its_revisions_say_is_proven(orders_project, users):
    environment = prod(orders_project)
    at_r1(environment, users["alice"])
    job = requested(environment, users["alice"], target="r2")
    execution.job_run(job_id=job.pk)

    proofs.job_prove(job_id=job.pk)

    job.refresh_from_db()
    assert job.proof["differences"] == [] and "error" not in job.proof
    assert not AuditEvent.objects.filter(action="job_proof_failed").exists()
