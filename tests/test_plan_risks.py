"""A plan's risks include what Retort already knows about its target (issue #16, item 8): the
last drift check's findings, set against what each pending revision creates, alters or drops,
so a doomed upgrade is said to be doomed before anyone approves it — and it really is."""

from __future__ import annotations

import sqlite3

from environments import drift, planning
from environments.models import Environment, Project
from examples.inventory import revisions as inv
from tests.conftest import EXAMPLE, alembic


def prod_of(project: Project) -> Environment:
    return project.environments.select_related("project").get(slug="prod")


def by_hand(environment: Environment, statement: str) -> None:
    with sqlite3.connect(environment.get_url().removeprefix("sqlite:///")) as db:
        db.execute(statement)


def risks_of(job, revision: str) -> list[tuple[str, str]]:
    return [(r["severity"], r["detail"]) for r in job.findings if r["revision"] == revision]


def test_a_table_prod_already_has_makes_the_upgrade_that_creates_it_a_failure_foretold(
    demo_project, users
):
    prod = prod_of(demo_project)
    by_hand(prod, "CREATE TABLE shipments (id INTEGER PRIMARY KEY)")
    drift.drift_record(project=demo_project)

    job = planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])

    [(severity, detail)] = [r for r in risks_of(job, inv.CREATE_SHIPMENTS) if "shipments" in r[1]]
    assert severity == "danger"
    assert detail.startswith(
        "Table shipments already exists on prod, though no migration creates it: the upgrade "
        "will fail at this revision, which creates it (line 23; drift check of "
    )
    # the revisions before it are not blamed
    assert not [
        r
        for r in job.findings
        if r.get("kind") == "drift"
        and r["revision"] in (inv.ADD_USERS_EMAIL, inv.DROP_PRODUCTS_LEGACY_FLAG)
    ]
    # and it is so: alembic stops there
    result = alembic(EXAMPLE / "alembic.ini", prod.get_url(), "upgrade", "heads", check=False)
    assert result.returncode != 0
    assert "table shipments already exists" in result.stderr


def test_a_column_dropped_by_hand_dooms_the_revision_that_drops_it(demo_project, users):
    prod = prod_of(demo_project)
    by_hand(prod, "ALTER TABLE products DROP COLUMN legacy_flag")
    drift.drift_record(project=demo_project)

    job = planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])

    assert ("danger", True) in [
        (
            severity,
            detail.startswith(
                "prod has no column products.legacy_flag, though its migrations create it: the "
                "upgrade will fail at this revision, which drops it"
            ),
        )
        for severity, detail in risks_of(job, inv.DROP_PRODUCTS_LEGACY_FLAG)
    ]


def test_drift_in_a_table_a_revision_changes_is_a_warning_and_elsewhere_nothing(
    demo_project, users
):
    prod = prod_of(demo_project)
    by_hand(prod, "CREATE INDEX ix_users_by_hand ON users (name, id)")
    by_hand(prod, "CREATE INDEX ix_orders_by_hand ON orders (qty)")
    drift.drift_record(project=demo_project)

    job = planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])

    drift_risks = [r for r in job.findings if r.get("kind") == "drift"]
    assert [(r["revision"], r["severity"]) for r in drift_risks] == [
        (inv.ADD_USERS_EMAIL, "warning")
    ]
    assert drift_risks[0]["detail"].startswith(
        "This revision creates column users.email, where prod has drifted from its migrations: "
        "prod has index ix_users_by_hand on users (name, id) that no migration creates"
    )


def test_without_a_drift_check_a_plan_has_only_its_files_risks(demo_project, users):
    prod = prod_of(demo_project)
    by_hand(prod, "CREATE TABLE shipments (id INTEGER PRIMARY KEY)")

    job = planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])

    assert [r for r in job.findings if r.get("kind") == "drift"] == []
    assert risks_of(job, inv.DROP_PRODUCTS_LEGACY_FLAG)  # the file's own: it drops a column


def test_another_index_on_a_table_a_revision_indexes_is_a_warning_not_a_failure_foretold(
    demo_project, users
):
    """An index finding names its table, not the index: a revision creating a different index
    on the same table is warned about, never said to fail."""
    prod = prod_of(demo_project)
    alembic(EXAMPLE / "alembic.ini", prod.get_url(), "downgrade", "-1")  # ix_users_name pending
    by_hand(prod, "CREATE INDEX ix_users_by_hand ON users (id, name)")
    drift.drift_record(project=demo_project)

    job = planning.job_request(environment=prod, kind="upgrade", target="heads", user=users["bob"])

    risks = [(s, d) for s, d in risks_of(job, inv.INDEX_USERS_NAME) if "ix_users_by_hand" in d]
    assert [s for s, _ in risks] == ["warning"]
    assert risks[0][1].startswith("This revision creates an index on users, where prod has")
