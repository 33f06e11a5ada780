"""Timeouts on every run against PostgreSQL: the environment's policy (lock_timeout 5 s,
statement_timeout off by default) reaches alembic's connection through PGOPTIONS, a revision
asks for more in a constant or a comment read statically, the plan shows what the run gets, and
an upgrade stuck behind another session's lock fails after lock_timeout instead of queueing
the application behind it (real PostgreSQL databases, real alembic)."""

from __future__ import annotations

import sqlite3
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from environments import planning
from environments.core import run_limits
from environments.core.run_limits import Ask, LimitError, parse_duration
from environments.models import Environment, Job
from environments.transitions import Refused
from tests.conftest import orders_prod as prod
from tests.conftest import requested

pytestmark = pytest.mark.django_db(transaction=True)


# --- reading durations and declarations -------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("2min", 120), ("1h", 3600), ("off", 0), ("0", 0),
     (None, 0), (7, 7), (" 1.5 s ", 1.5)],
)  # fmt: skip
def test_durations_are_read_as_people_write_them(written, seconds):
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["soon", "-1s", "30 parsecs", "9999d", True, [30], "1e9"])
def test_what_is_not_a_duration_is_refused_in_words(written):
    with pytest.raises(LimitError, match="is not a duration"):
        parse_duration(written)


def test_a_revision_declares_its_timeouts_as_a_constant_or_a_comment():
    source = (
        '"""make an index"""\n'
        "# retort: lock_timeout=30s statement_timeout=off\n"
        'retort_lock_timeout = "1min"\n'
        "def upgrade():\n    pass\n"
    )

    asks = run_limits.declared(source, "abc")

    assert asks == [
        Ask("abc", "lock_timeout", 30, 2),
        Ask("abc", "statement_timeout", 0, 2),
        Ask("abc", "lock_timeout", 60, 3),
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("# retort: lock_timeout=forever\n", "line 1: lock_timeout: 'forever' is not a duration"),
        ("# retort: deadlock_timeout=1s\n", "line 1: 'deadlock_timeout=1s' is not one of"),
        ("x = 1\nretort_lock_timeout = compute()\n", "line 2: retort_lock_timeout must be a"),
    ],
)
def test_an_unreadable_declaration_names_its_line(source, problem):
    with pytest.raises(LimitError, match=problem):
        run_limits.declared(source, "abc")


def test_a_revision_only_raises_the_policy_and_off_is_the_most():
    asks = [
        Ask("a", "lock_timeout", 2, 1),  # less than the policy: the policy stands
        Ask("b", "lock_timeout", 30, 1),
        Ask("c", "statement_timeout", 0, 1),  # off: no limit at all
    ]

    limits = run_limits.run_limits(5, 900, asks)

    assert (limits.lock_timeout, limits.statement_timeout) == (30, 0)
    assert [ask.revision for ask in limits.raised_by] == ["b", "c"]
    assert limits.pgoptions() == "-c lock_timeout=30000 -c statement_timeout=0"
    assert limits.sentence() == (
        "lock_timeout 30 s, statement_timeout off (b asks for lock_timeout 30 s (line 1); "
        "c asks for statement_timeout off (line 1))"
    )


# --- plans and runs on real databases ---------------------------------------------------------


def test_a_postgresql_plan_shows_the_timeouts_and_the_revision_that_raised_one(
    orders_project, users, client_alice
):
    environment = prod(orders_project)
    environment.statement_timeout_seconds = 900  # 15 min; r3 asks for 2 h
    environment.save()

    job = requested(environment, users["alice"], target="r3")

    assert (job.run_limits["lock_timeout"], job.run_limits["statement_timeout"]) == (5, 7200)
    page = client_alice.get(job.get_absolute_url()).content.decode()
    assert (
        "Timeouts on alembic's connection: lock_timeout 5 s, statement_timeout 2 h "
        "(r3 asks for statement_timeout 2 h (line 24)); a run that times out waiting for a "
        "lock is tried up to 3 times, 5 s after the first attempt, each wait twice the one "
        "before." in page
    )
    # a change of the policy makes the plan outdated (its approvals were for other timeouts)
    environment.lock_timeout_seconds = 30
    environment.save()
    outdated = planning.plan_outdated(Job.objects.get(pk=job.pk))
    assert outdated == [
        "prod's timeouts (or retries on a lock timeout) changed since the plan was made."
    ]
    # a SQLite environment has no such thing to show
    dev = Environment.objects.get(project=orders_project, slug="dev")
    sqlite3.connect(dev.get_url().removeprefix("sqlite:///")).close()  # an empty database
    sqlite_job = requested(dev, users["alice"], target="r3")
    assert sqlite_job.run_limits == {}
    assert (
        'id="job-timeouts"' not in client_alice.get(sqlite_job.get_absolute_url()).content.decode()
    )


def test_a_timeout_declaration_retort_cannot_read_refuses_the_plan(orders_project, users):
    r3 = next((Path(orders_project.alembic_ini).parent / "migrations/versions").glob("r3_*"))
    r3.write_text(r3.read_text().replace('"2h"', '"a while"'))
    environment = prod(orders_project)

    with pytest.raises(Refused, match=r"Revision r3 \(r3_change.py\) asks for a timeout .*"
                       r"'a while' is not a duration"):  # fmt: skip
        requested(environment, users["alice"], target="r3")

    assert not Job.objects.filter(environment=environment, target="r3").exists()


def test_the_file_sets_an_environments_timeouts(orders_project, tmp_path):
    path = tmp_path / "retort.toml"
    path.write_text(
        f'[[project]]\nname = "shop"\nalembic_ini = "{orders_project.alembic_ini}"\n\n'
        '[[project.environment]]\nname = "prod"\nurl_from_env = "SHOP_PROD_URL"\n'
        "lock_timeout_seconds = 2.5\nstatement_timeout_seconds = 900\n"
        'lock_attempts = 5\nlock_retry_seconds = 0.5\nlock_review_blocks = "danger"\n'
        'lock_review_approval = "warning"\nrehearsal_required_hours = 24\n'
    )

    call_command("apply_config", str(path), stdout=StringIO())

    environment = prod(orders_project)
    assert (environment.lock_timeout_seconds, environment.statement_timeout_seconds) == (2.5, 900)
    assert (environment.lock_attempts, environment.lock_retry_seconds) == (5, 0.5)
    assert (environment.lock_review_blocks, environment.lock_review_approval) == (
        "danger",
        "warning",
    )
    assert environment.rehearsal_required_hours == 24
