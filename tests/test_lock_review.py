"""Lock-aware review: each rule (squawk's id) fires on a revision written for it, and does not
fire on the safe spelling of the same step — over the file's op.* calls and over the SQL
alembic renders for it."""

from __future__ import annotations

import html
import re
import sqlite3
import textwrap

import pytest

from environments import approvals, execution
from environments.core.findings.lock_sql import sql_lock_findings
from environments.core.findings.locks import RULES, lock_findings
from environments.models import Environment, Job
from environments.transitions import Refused
from tests.conftest import at_r1, planned
from tests.conftest import orders_prod as prod

HEADER = '''"""a revision"""
from alembic import op
import sqlalchemy as sa

revision = "abc123"
down_revision = "prev01"


def upgrade():
'''

CASES = [
    (
        "adding-required-field",
        'op.add_column("orders", sa.Column("qty", sa.Integer(), nullable=False))',
        'op.add_column("orders", sa.Column("qty", sa.Integer(), nullable=False, '
        'server_default="0"))',
    ),
    (
        "adding-not-nullable-field",
        'op.alter_column("orders", "note", nullable=False)',
        'op.alter_column("orders", "note", nullable=True)',
    ),
    (
        "changing-column-type",
        'op.alter_column("orders", "note", type_=sa.Text())',
        'op.alter_column("orders", "note", comment="what the customer wrote")',
    ),
    (
        "require-concurrent-index-creation",
        'op.create_index("ix_orders_note", "orders", ["note"])',
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_orders_note", "orders", ["note"], '
        "postgresql_concurrently=True)",
    ),
    (
        "require-concurrent-index-deletion",
        'op.drop_index("ix_orders_note", table_name="orders")',
        "with op.get_context().autocommit_block():\n"
        '    op.drop_index("ix_orders_note", table_name="orders", postgresql_concurrently=True)',
    ),
    (
        "ban-concurrent-index-creation-in-transaction",
        'op.create_index("ix_orders_note", "orders", ["note"], postgresql_concurrently=True)',
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_orders_note", "orders", ["note"], '
        "postgresql_concurrently=True)",
    ),
    (
        "adding-foreign-key-constraint",
        'op.create_foreign_key("fk_orders_customer", "orders", "customers", '
        '["customer_id"], ["id"])',
        'op.create_foreign_key("fk_orders_customer", "orders", "customers", '
        '["customer_id"], ["id"], postgresql_not_valid=True)',
    ),
    (
        "constraint-missing-not-valid",
        'op.create_check_constraint("ck_qty", "orders", "qty > 0")',
        'op.create_check_constraint("ck_qty", "orders", "qty > 0", postgresql_not_valid=True)',
    ),
    (
        "disallowed-unique-constraint",
        'op.create_unique_constraint("uq_orders_ref", "orders", ["ref"])',
        'op.create_table("refs", sa.Column("ref", sa.Text()))\n'
        'op.create_unique_constraint("uq_refs_ref", "refs", ["ref"])',
    ),
    (
        "adding-serial-primary-key-field",
        'op.create_primary_key("pk_orders", "orders", ["id"])',
        'op.create_table("refs", sa.Column("id", sa.Integer()))\n'
        'op.create_primary_key("pk_refs", "refs", ["id"])',
    ),
    (
        "renaming-column",
        'op.alter_column("orders", "note", new_column_name="remark")',
        'op.add_column("orders", sa.Column("remark", sa.Text()))',
    ),
    (
        "renaming-table",
        'op.rename_table("orders", "purchases")',
        'op.create_table("purchases", sa.Column("id", sa.Integer()))',
    ),
    (
        "ban-drop-column",
        'op.drop_column("orders", "note")',
        'op.create_table("scratch", sa.Column("note", sa.Text()))\n'
        'op.drop_column("scratch", "note")',
    ),
    (
        "ban-drop-table",
        'op.drop_table("orders")',
        'op.create_table("orders_archive", sa.Column("id", sa.Integer()))',
    ),
]


def revision_file(body: str) -> str:
    return HEADER + textwrap.indent(body, "    ") + "\n\n\ndef downgrade():\n    pass\n"


def test_every_rule_has_a_case():
    assert {rule for rule, _, _ in CASES} == set(RULES)


@pytest.mark.parametrize(("rule", "firing", "safe"), CASES, ids=[c[0] for c in CASES])
def test_a_rule_fires_on_its_step_and_not_on_the_safe_spelling(rule, firing, safe):
    found = lock_findings(revision_file(firing))
    assert [finding.rule for finding in found] == [rule]
    finding = found[0]
    assert finding.function == "upgrade" and finding.line >= 10
    sentence = finding.sentence()
    assert sentence.startswith(f"{rule}: ")
    assert f"takes {RULES[rule].lock}" in sentence and "Safer: " in sentence
    assert rule not in [finding.rule for finding in lock_findings(revision_file(safe))]


def test_a_finding_names_the_line_table_lock_and_safer_spelling():
    source = revision_file(
        'op.add_column("orders", sa.Column("note", sa.Text()))\n'
        'op.create_index("ix_orders_note", "orders", ["note"])'
    )

    [finding] = lock_findings(source)

    assert finding.sentence() == (
        "require-concurrent-index-creation: builds index ix_orders_note without CONCURRENTLY: "
        "writes to the table wait until it is built (line 11; takes SHARE on orders). Safer: "
        "op.create_index(…, postgresql_concurrently=True) inside "
        "`with op.get_context().autocommit_block():`."
    )
    assert (finding.line, finding.table, finding.lock) == (11, "orders", "SHARE")


def test_steps_in_a_batch_alter_table_are_reviewed_with_their_table():
    source = revision_file(
        'with op.batch_alter_table("orders") as batch_op:\n'
        '    batch_op.drop_column("note")\n'
        '    batch_op.alter_column("qty", type_=sa.BigInteger())'
    )

    found = lock_findings(source)

    assert [(f.rule, f.table, f.obj) for f in found] == [
        ("ban-drop-column", "orders", "orders.note"),
        ("changing-column-type", "orders", "orders.qty"),
    ]


def test_a_finding_acknowledged_in_the_file_is_kept_but_marked():
    source = revision_file(
        "# retort-allow: ban-drop-column  (the app stopped reading it in 4.1)\n"
        'op.drop_column("orders", "note")\n'
        'op.drop_column("orders", "legacy")  # retort-allow: renaming-column'
    )

    found = lock_findings(source)

    assert [(f.obj, f.acknowledged, f.severity) for f in found] == [
        ("orders.note", True, "acknowledged"),
        ("orders.legacy", False, "warning"),
    ]
    assert found[0].sentence().endswith("Acknowledged in the file.")


def test_downgrade_steps_are_reviewed_as_the_downgrades():
    source = HEADER + '    pass\n\n\ndef downgrade():\n    op.drop_table("orders")\n'

    [finding] = lock_findings(source)

    assert (finding.function, finding.rule) == ("downgrade", "ban-drop-table")


# --- the rendered SQL ---------------------------------------------------------------------------

SQL = """BEGIN;

-- Running upgrade  -> r1

CREATE TABLE refs (
    id SERIAL NOT NULL,
    ref VARCHAR(20) NOT NULL
);

CREATE INDEX ix_refs_ref ON refs (ref);

-- Running upgrade r1 -> r2

ALTER TABLE orders ADD COLUMN qty INTEGER NOT NULL;

ALTER TABLE orders ADD COLUMN note TEXT DEFAULT 'none; really' NOT NULL;

CREATE INDEX ix_orders_qty ON orders (qty);

ALTER TABLE orders ADD CONSTRAINT fk_ref FOREIGN KEY(ref_id) REFERENCES refs (id);

ALTER TABLE orders ADD CONSTRAINT ck_qty CHECK (qty > 0) NOT VALID;

ALTER TABLE "Order Lines" ALTER COLUMN price TYPE NUMERIC(12, 2);

ALTER TABLE orders ALTER COLUMN qty DROP NOT NULL;

ALTER TABLE orders RENAME TO purchases;

CREATE INDEX CONCURRENTLY ix_orders_note ON orders (note);

COMMIT;

CREATE INDEX CONCURRENTLY ix_orders_ref ON orders (ref_id);

BEGIN;

-- Running upgrade r2 -> r3

DROP INDEX ix_orders_old;

ALTER TABLE orders DROP COLUMN legacy;

DROP TABLE archive;

UPDATE alembic_version SET version_num='r3' WHERE alembic_version.version_num = 'r2';

COMMIT;
"""


def test_the_rendered_sql_is_reviewed_statement_by_statement_with_its_revision_and_line():
    found = [(revision, f.rule, f.obj, f.line) for revision, f in sql_lock_findings(SQL, "upgrade")]

    assert found == [
        ("r2", "adding-required-field", "orders.qty", 14),
        ("r2", "require-concurrent-index-creation", "ix_orders_qty", 18),
        ("r2", "adding-foreign-key-constraint", "fk_ref", 20),
        ("r2", "changing-column-type", "Order Lines.price", 24),
        ("r2", "renaming-table", "orders", 28),
        ("r2", "ban-concurrent-index-creation-in-transaction", "ix_orders_note", 30),
        ("r3", "require-concurrent-index-deletion", "ix_orders_old", 40),
        ("r3", "ban-drop-column", "orders.legacy", 42),
        ("r3", "ban-drop-table", "archive", 44),
    ]


# --- on a plan, with the environment's policy (real PostgreSQL and SQLite, real alembic) ------


@pytest.mark.django_db(transaction=True)
def test_a_postgresql_plan_shows_each_lock_finding_with_its_lock_and_safer_spelling(
    index_on_orders, users, client_alice
):
    environment = prod(index_on_orders)
    at_r1(environment, users["alice"])

    job = planned(environment, users["alice"], target="r2")

    locks = [f for f in job.findings if f["kind"] == "lock"]
    assert [(f["rule"], f["engine"], f["table"], f["lock"]) for f in locks] == [
        ("require-concurrent-index-creation", "op", "orders", "SHARE"),
        ("constraint-missing-not-valid", "sql", "orders", "ACCESS EXCLUSIVE"),
    ]
    page = client_alice.get(job.get_absolute_url()).content.decode()
    assert (
        "require-concurrent-index-creation: builds index ix_orders_note without CONCURRENTLY: "
        "writes to the table wait until it is built (line 19; takes SHARE on orders). Safer: "
        "op.create_index(…, postgresql_concurrently=True) inside "
        "`with op.get_context().autocommit_block():`." in html.unescape(page)
    )
    assert re.search(
        r"constraint-missing-not-valid: adds check constraint ck_orders_id without NOT VALID: "
        r"every row is checked while the table is locked \(line \d+ of its SQL; takes ACCESS "
        r"EXCLUSIVE on orders\)\. Safer: postgresql_not_valid=True",
        html.unescape(page),
    )
    # a SQLite environment of the same project gets no lock review
    dev = Environment.objects.get(project=index_on_orders, slug="dev")
    sqlite3.connect(dev.get_url().removeprefix("sqlite:///")).close()
    sqlite_job = planned(dev, users["alice"], target="r2")
    assert not [f for f in sqlite_job.findings if f["kind"] == "lock"]


@pytest.mark.django_db(transaction=True)
def test_a_policy_that_blocks_warnings_refuses_the_plan_and_its_run(index_on_orders, users):
    environment = prod(index_on_orders)
    at_r1(environment, users["alice"])
    environment.lock_review_blocks = "warning"
    environment.save()
    job = planned(environment, users["alice"], target="r2")

    with pytest.raises(Refused) as refused:
        approvals.job_submit(job=job, user=users["alice"])

    assert refused.value.code == "lock_review"
    assert str(refused.value) == (
        "prod's policy does not run a plan whose lock review finds a warning or worse: "
        "require-concurrent-index-creation in r2 (line 19); constraint-missing-not-valid in r2 "
        f"(line {job.findings[-1]['line']} of its SQL). Spell the step the safer way, or "
        "acknowledge a finding the team has weighed with `# retort-allow: <rule>` on its line, "
        "and plan again."
    )
    assert Job.objects.get(pk=job.pk).status == "planned"
    # a policy of "danger" only lets the same plan through
    environment.lock_review_blocks = "danger"
    environment.save()
    queued = approvals.job_submit(job=Job.objects.get(pk=job.pk), user=users["alice"])
    assert queued.status == "queued"
    # …and tightened again before a worker takes it, the run refuses it
    environment.lock_review_blocks = "warning"
    environment.save()
    execution.job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("prod's policy does not run a plan whose lock review finds")
    assert job.error.endswith("Nothing was changed.")


@pytest.mark.django_db(transaction=True)
def test_a_policy_that_asks_one_approval_more_for_a_finding(index_on_orders, users, client_alice):
    environment = prod(index_on_orders)
    at_r1(environment, users["alice"])
    environment.lock_review_approval = "warning"
    environment.save()
    job = planned(environment, users["alice"], target="r2")

    job = approvals.job_submit(job=job, user=users["alice"])

    assert environment.required_approvals == 0
    assert job.status == "awaiting_approval" and job.required_approvals == 1
    page = html.unescape(client_alice.get(job.get_absolute_url()).content.decode())
    assert "This plan needs one approval more than prod's usual 0, for what its lock review" in (
        page
    )
    assert "1 of 1" not in page and "0 of 1" in page
