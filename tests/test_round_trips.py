"""Round-trip tests of a project's history (`manage.py migration_test`): each revision
upgraded, downgraded and upgraded again on scratch databases of the dialects its environments
use (real PostgreSQL and SQLite, real alembic), a revision whose downgrade forgets an index
named with the index, a clean history passing."""

from __future__ import annotations

import html
import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from environments import round_trips
from environments.models import RoundTripState
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.django_db(transaction=True)

UNNAMED = "env.py names no models (target_metadata), so they were not compared"

REVISION = '''"""{message}

Revision ID: {revision}
Revises: {down}
Create Date: 2026-01-02 03:04:05.000000

"""
from alembic import op
import sqlalchemy as sa

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


@pytest.fixture
def history(tmp_path, make_project, pg_database, sqlite_url, unconsumed_queue):
    """A project on PostgreSQL and SQLite whose revisions the test writes."""
    root = tmp_path / "shop"
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(EXAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")

    def write(revision, down, upgrade, downgrade, message="a change"):
        text = REVISION.format(
            message=message,
            revision=revision,
            down=down,
            upgrade="\n".join("    " + line for line in upgrade),
            downgrade="\n".join("    " + line for line in downgrade),
        )
        (versions / f"{revision}_change.py").write_text(text)

    write(
        "r1",
        None,
        ['op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), '
         'sa.Column("name", sa.String(50)))'],
        ['op.drop_table("items")'],
    )  # fmt: skip
    write(
        "r2",
        "r1",
        ['op.add_column("items", sa.Column("note", sa.String(100)))'],
        ['op.drop_column("items", "note")'],
    )
    project = make_project(
        root / "alembic.ini", {"prod": pg_database(), "dev": sqlite_url("dev.db")}, name="shop"
    )
    project.write = write
    return project


def migration_test(project, *args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("migration_test", project.slug, *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def test_a_clean_history_round_trips_on_every_dialect(history):
    code, out = migration_test(history)

    assert code == 0, out
    assert out.splitlines() == [
        "shop on postgresql:", "  r1: ok", "  r2: ok", f"  models: {UNNAMED}",
        "shop on sqlite:", "  r1: ok", "  r2: ok", f"  models: {UNNAMED}",
    ]  # fmt: skip


def test_a_downgrade_that_forgets_an_index_is_named_with_the_index(history):
    history.write(
        "r3",
        "r2",
        ['op.create_index("ix_items_name", "items", ["name"])',
         'op.add_column("items", sa.Column("qty", sa.Integer))'],
        ['op.drop_column("items", "qty")'],  # the index stays behind
    )  # fmt: skip

    code, out = migration_test(history, "--json")

    assert code == 1
    results = {result["dialect"]: result for result in json.loads(out)["results"]}
    for dialect in ("sqlite", "postgresql"):
        steps = {step["revision"]: step for step in results[dialect]["revisions"]}
        assert steps["r1"]["ok"] and steps["r2"]["ok"], steps
        assert not steps["r3"]["ok"]
        assert any(
            problem.startswith("its downgrade does not undo its upgrade: ")
            and "ix_items_name" in problem
            and "after its downgrade but was not before its upgrade" in problem
            for problem in steps["r3"]["problems"]
        ), steps["r3"]["problems"]


def test_a_downgrade_that_does_nothing_is_named(history):
    history.write("r3", "r2", ['op.add_column("items", sa.Column("qty", sa.Integer))'], ["pass"])

    code, out = migration_test(history)

    assert code == 1
    assert "  r3: FAILED" in out
    assert "    - downgrade() does nothing (pass): this revision cannot be undone" in out
    assert "column items.qty" in out or "items.qty" in out


def test_the_project_page_lists_the_result_per_revision_as_a_worker_stored_it(
    history, client_alice
):
    history.write(
        "r3",
        "r2",
        ['op.create_index("ix_items_name", "items", ["name"])'],
        ["pass"],
    )
    page_url = reverse("project_round_trips", args=[history.slug])
    assert "have not run yet" in client_alice.get(page_url).content.decode()

    asked = client_alice.post(reverse("project_round_trips_run", args=[history.slug]))
    assert asked.status_code == 302
    running = client_alice.get(page_url).content.decode()
    assert "Running the round trips now (alice asked" in running
    assert RoundTripState.objects.get(project=history).checked_at is None  # the GET ran nothing

    round_trips.round_trips_record(project=history)  # the worker's part
    page = html.unescape(client_alice.get(page_url).content.decode())

    assert "Running the round trips now" not in page
    for dialect in ("postgresql", "sqlite"):
        assert f'id="round-trips-{dialect}"' in page
    assert page.count('<span class="badge badge-current">ok</span>') == 4  # r1, r2 on both
    assert page.count('<span class="badge badge-error">failed</span>') == 2  # r3 on both
    assert (
        "its downgrade does not undo its upgrade: index ix_items_name on items (name) is there "
        "after its downgrade but was not before its upgrade" in page
    )
    assert "downgrade() does nothing (pass): this revision cannot be undone" in page


def test_several_heads_the_project_does_not_intend_fail_the_round_trips(history):
    history.write("r3", "r1", ['op.add_column("items", sa.Column("qty", sa.Integer))'],
                  ['op.drop_column("items", "qty")'])  # fmt: skip

    code, out = migration_test(history)

    assert code == 1
    assert "  FAILED: 2 heads — a merge is missing: r2, r3 diverged from r1" in out
    assert "  r2: ok" in out and "  r3: ok" in out  # each on its own branch round-trips
    assert out.count("FAILED") == 2  # the heads, once per dialect


MODELS = """import sqlalchemy as _sa
target_metadata = _sa.MetaData()
_sa.Table(
    "items",
    target_metadata,
    _sa.Column("id", _sa.Integer, primary_key=True),
    _sa.Column("name", _sa.String(50)),
    _sa.Column("note", _sa.String(100)),{more}
)
"""


@pytest.mark.parametrize(("more", "verdict"), [
    ("", "the models match the migrations at head"),
    ('\n    _sa.Column("price", _sa.Integer),', "the models and the migrations differ at head: "),
])  # fmt: skip
def test_the_models_env_py_names_are_compared_with_the_migrations_at_head(history, more, verdict):
    env_py = Path(history.alembic_ini).parent / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace("target_metadata = None\n", MODELS.format(more=more))
    )

    code, out = migration_test(history)

    assert (f"  FAILED: {verdict}" if more else f"  models: {verdict}") in out, out
    assert code == (0 if not more else 1)
    if more:
        assert "price" in out and "add_column" in out
