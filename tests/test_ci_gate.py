"""`manage.py migration_status` and /api/v1/status: the gate CI scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from environments.models import ApiToken
from examples.inventory import revisions as inv
from tests.conftest import REPO, alembic, pg_url, write_revision

pytestmark = pytest.mark.django_db

KEYS = {
    "project",
    "environment",
    "status",
    "heads",
    "script_heads",
    "pending",
    "unknown",
    "error",
    "checked_at",
}


def _status(*args: str) -> tuple[int, str]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("migration_status", *args, stdout=out)
    return exit_info.value.code, out.getvalue()


def test_it_exits_1_when_an_environment_is_behind_and_lists_each(demo_project):
    code, output = _status()

    assert code == 1
    assert "inventory/dev: current" in output
    assert "inventory/staging: behind" in output and "3 pending" in output
    assert "inventory/prod: behind" in output and "6 pending" in output


def test_it_exits_0_when_every_selected_environment_is_current(demo_project):
    assert _status("--project", "inventory", "--env", "dev")[0] == 0


def test_the_json_has_one_object_per_environment_with_the_promised_keys(demo_project):
    code, output = _status("--json")
    rows = json.loads(output)

    assert code == 1
    assert [row["environment"] for row in rows] == ["dev", "staging", "prod"]
    assert all(set(row) >= KEYS for row in rows)
    prod = rows[2]
    assert prod["status"] == "behind"
    assert prod["heads"] == [inv.PROD_TARGET]
    assert prod["script_heads"] == [inv.HEAD]
    assert prod["pending"] == inv.ALL_REVISIONS[inv.ALL_REVISIONS.index(inv.PROD_TARGET) + 1 :]
    assert prod["unknown"] == []
    assert prod["error"] is None


def test_it_exits_2_when_a_database_cannot_be_read(demo_project, closed_port):
    dev = demo_project.environments.get(slug="dev")
    dev.set_url(pg_url("x", port=closed_port))
    dev.save()

    code, output = _status("--json")

    assert code == 2
    assert json.loads(output)[0]["status"] == "unreachable"


def test_it_exits_1_for_unknown_uninitialized_and_multi_head(demo_project, tmp_path):
    ini = Path(demo_project.alembic_ini)
    dev = demo_project.environments.get(slug="dev")
    empty = tmp_path / "empty.sqlite"
    alembic(ini, f"sqlite:///{empty}", "upgrade", inv.CREATE_USERS)
    alembic(ini, f"sqlite:///{empty}", "downgrade", "base")
    import sqlite3

    with sqlite3.connect(empty) as db:
        db.execute("DROP TABLE alembic_version")
    dev.set_url(f"sqlite:///{empty}")
    dev.save()
    assert _status("--env", "dev")[0] == 1  # uninitialized

    dev.set_url(demo_project.environments.get(slug="staging").get_url())
    dev.save()
    with sqlite3.connect(dev.get_url().removeprefix("sqlite:///")) as db:
        db.execute("UPDATE alembic_version SET version_num='0123456789ab'")
    code, output = _status("--env", "dev", "--json")
    assert code == 1
    assert json.loads(output)[0]["unknown"] == ["0123456789ab"]

    prod_url = demo_project.environments.get(slug="prod").get_url()
    alembic(ini, prod_url, "upgrade", "head")
    write_revision(ini.parent / "migrations" / "versions", "second0head1", inv.CREATE_SHIPMENTS)
    code, output = _status("--env", "prod", "--json")
    assert code == 1
    assert json.loads(output)[0]["multiple_heads"] is True


@pytest.mark.django_db(transaction=True)
def test_it_runs_as_a_real_command_line(inventory, make_project, sqlite_url):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
    make_project(inventory, {"staging": url})
    settings_db = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL dashboard database used in CI")
    env = {
        "DATABASE_URL": f"postgresql://{settings_db['USER']}@{settings_db['HOST']}:"
        f"{settings_db['PORT']}/{settings_db['NAME']}",
        "PATH": "/usr/bin:/bin",
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "migration_status", "--project", "inventory"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1, result.stderr
    assert "inventory/staging: behind" in result.stdout
    assert "3 pending" in result.stdout


def test_the_api_returns_the_same_objects_for_a_session(client_alice, demo_project):
    rows = client_alice.get(reverse("api_status")).json()

    assert [row["status"] for row in rows] == ["current", "behind", "behind"]
    assert all(set(row) >= KEYS for row in rows)


def test_the_api_filters_by_project_and_environment(client_alice, demo_project):
    rows = client_alice.get(reverse("api_status"), {"project": "inventory", "env": "prod"}).json()

    assert [(row["environment"], len(row["pending"])) for row in rows] == [("prod", 6)]


def test_the_api_accepts_a_bearer_token(client, demo_project, users):
    _, token = ApiToken.issue(user=users["bob"], name="ci")

    response = client.get(reverse("api_status"), headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert len(response.json()) == 3
    assert ApiToken.objects.get(name="ci").last_used_at is not None


def test_the_api_refuses_a_wrong_or_missing_token_with_json(client, demo_project, users):
    ApiToken.issue(user=users["bob"], name="ci")

    wrong = client.get(reverse("api_status"), headers={"Authorization": "Bearer rt_nope"})
    missing = client.get(reverse("api_status"))

    assert wrong.status_code == missing.status_code == 401
    assert "Authentication required" in wrong.json()["error"]


def test_tokens_are_stored_only_as_hashes(users):
    _, token = ApiToken.issue(user=users["bob"], name="ci")

    assert not ApiToken.objects.filter(token_hash=token).exists()
    assert ApiToken.objects.filter(token_hash=ApiToken.digest(token)).exists()


def test_an_unknown_environment_is_exit_2_not_a_false_behind(demo_project):
    with pytest.raises(CommandError, match="No environment 'nope'") as error:
        call_command("migration_status", "--env", "nope", stdout=StringIO())

    assert error.value.returncode == 2


def test_an_unreadable_database_is_said_without_a_made_up_revision(demo_project, closed_port):
    dev = demo_project.environments.get(slug="dev")
    dev.set_url(pg_url("x", port=closed_port))
    dev.save()

    code, output = _status("--env", "dev")

    assert code == 2
    assert output.startswith("inventory/dev: unreachable — ")
    assert " at " not in output.split("—")[0]
