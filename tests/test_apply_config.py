"""`manage.py apply_config FILE.toml` creates or updates the registry, idempotently."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from environments.models import Discovery, Environment, Project

pytestmark = pytest.mark.django_db

SECRET = "Pr0d-Pa55word"


def _config(folder: Path, *, prod_url: str | None = None, extra: str = "") -> Path:
    prod_url = prod_url or f"postgresql://deploy:{SECRET}@db.internal:5432/inventory"
    path = folder / "retort.toml"
    path.write_text(
        f"""
[[project]]
name = "inventory"
alembic_ini = "app/alembic.ini"
version_table = "alembic_version"
command = ["python", "-m", "alembic", "-c", "alembic.ini"]
url_env_var = "INVENTORY_DATABASE_URL"
{extra}

[[project.environment]]
name = "dev"
url = "sqlite:///data/dev.sqlite"

[[project.environment]]
name = "staging"
url_from_env = "INVENTORY_STAGING_URL"

[[project.environment]]
name = "prod"
url = "{prod_url}"
""",
        encoding="utf-8",
    )
    return path


def _apply(path: Path) -> str:
    out = StringIO()
    call_command("apply_config", str(path), stdout=out)
    return out.getvalue()


def _rows() -> list[tuple]:
    return [
        (e.project.slug, e.slug, e.position, e.url_encrypted, e.url_from_env, e.updated_at)
        for e in Environment.objects.select_related("project").order_by("position")
    ] + [tuple(Project.objects.values_list("updated_at", "alembic_ini", "command"))]


def test_it_creates_the_project_and_its_environments_in_order(tmp_path):
    output = _apply(_config(tmp_path))

    project = Project.objects.get(slug="inventory")
    assert project.alembic_ini == str(tmp_path / "app" / "alembic.ini")
    assert project.url_env_var == "INVENTORY_DATABASE_URL"
    assert [e.name for e in project.environments.order_by("position")] == ["dev", "staging", "prod"]
    dev = project.environments.get(slug="dev")
    assert dev.get_url() == f"sqlite:///{tmp_path / 'data' / 'dev.sqlite'}"
    assert project.environments.get(slug="staging").url_from_env == "INVENTORY_STAGING_URL"
    assert "created environment inventory/prod" in output
    assert SECRET not in output


def test_applying_the_same_file_twice_changes_nothing_the_second_time(tmp_path):
    path = _config(tmp_path)
    _apply(path)
    before = _rows()

    output = _apply(path)

    assert _rows() == before
    assert "nothing changed: 0 created, 0 updated, 4 unchanged" in output


def test_a_changed_url_is_updated_and_named_but_never_printed(tmp_path):
    _apply(_config(tmp_path))

    output = _apply(_config(tmp_path, prod_url="postgresql://deploy:N3w-Secret@db2/inventory"))

    assert "updated environment inventory/prod: url" in output
    assert "N3w-Secret" not in output
    assert Environment.objects.get(slug="prod").get_url().endswith("@db2/inventory")


def test_the_url_is_stored_encrypted(tmp_path):
    _apply(_config(tmp_path))

    with connection.cursor() as cursor:
        cursor.execute("SELECT url_encrypted FROM environments_environment")
        stored = " ".join(row[0] for row in cursor.fetchall())
    assert SECRET not in stored
    assert "db.internal" not in stored
    assert Environment.objects.get(slug="prod").get_url().startswith("postgresql://deploy:")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[[project]]\nalembic_ini = 'a.ini'\n", "needs a name"),
        ("[[project]]\nname = 'x'\n", "needs alembic_ini or script_location"),
        (
            "[[project]]\nname = 'x'\nscript_location = 'm'\ncolour = 'red'\n",
            "unknown keys: colour",
        ),
        (
            "[[project]]\nname='x'\nscript_location='m'\n[[project.environment]]\nname='dev'\n",
            "needs exactly one of url or url_from_env",
        ),
        (
            "[[project]]\nname='x'\nscript_location='m'\ncommand='alembic upgrade'\n",
            "command must be a non-empty list",
        ),
        (
            "[[project]]\nname='x'\nscript_location='m'\nmultiple_heads='maybe'\n",
            "multiple_heads must be one of 'auto', 'expected', 'single'",
        ),
        (
            "[[project]]\nname='x'\nscript_location='m'\nwebhook_url='hooks.example.com/x'\n",
            "webhook_url must be an http:// or https:// URL",
        ),
        ("[[project]\nname = 'x'", "not valid TOML"),
        ("title = 'nothing'\n", "declares no [[project]]"),
    ],
)
def test_a_bad_file_gets_a_clear_message_and_changes_nothing(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)

    with pytest.raises(CommandError, match=message.replace("[", r"\[")):
        _apply(path)

    assert not Project.objects.exists()


def test_several_heads_are_declared_expected_in_the_file(tmp_path):
    path = _config(tmp_path, extra='multiple_heads = "expected"')

    _apply(path)
    second = _apply(path)

    assert Project.objects.get().multiple_heads == "expected"
    assert "unchanged project inventory" in second


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        _apply(tmp_path / "absent.toml")


def test_script_location_and_version_locations_resolve_against_the_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        "[[project]]\nname='svc'\nscript_location='db/migrations'\n"
        "version_locations=['db/migrations/versions','plugins/versions']\n"
        "recursive_version_locations=true\nversion_table_schema='ops'\nworking_dir='.'\n"
    )

    _apply(path)

    project = Project.objects.get(slug="svc")
    assert project.script_location == str(tmp_path / "db" / "migrations")
    assert project.version_locations == [
        str(tmp_path / "db" / "migrations" / "versions"),
        str(tmp_path / "plugins" / "versions"),
    ]
    assert project.recursive_version_locations is True
    assert project.working_dir == str(tmp_path)
    assert project.version_table_schema == "ops"


POLICY = """
[[project]]
name = "inventory"
alembic_ini = "app/alembic.ini"
webhook_url = "https://hooks.example.com/services/T000/B000/Hunter2-secret"

[[project.environment]]
name = "staging"
url = "sqlite:///data/staging.sqlite"
required_approvals = 1

[[project.environment]]
name = "prod"
url = "sqlite:///data/prod.sqlite"
required_approvals = 2
approver_group = "release_manager"
requester_may_approve = false
backup_required = true
keep_backups = 10
promotion_from = "staging"
promotion_min_hours = 24
approval_expiry_hours = 8
"""


def test_the_approval_policy_and_the_webhook_come_from_the_file_idempotently(tmp_path):
    from environments.models import AuditEvent

    path = tmp_path / "retort.toml"
    path.write_text(POLICY, encoding="utf-8")

    first = _apply(path)
    second = _apply(path)

    prod = Environment.objects.get(slug="prod")
    assert (prod.required_approvals, prod.approver_group.name) == (2, "release_manager")
    assert prod.backup_required and prod.keep_backups == 10 and not prod.requester_may_approve
    assert prod.promotion_from.slug == "staging" and prod.promotion_min_hours == 24
    assert prod.approval_expiry_hours == 8
    assert Environment.objects.get(slug="staging").required_approvals == 1
    project = Project.objects.get()
    assert project.webhook_url().endswith("/Hunter2-secret")
    assert "Hunter2-secret" not in project.webhook_url_encrypted  # encrypted at rest
    assert "created environment inventory/prod" in first
    assert "0 created, 0 updated" in second
    trail = " ".join(AuditEvent.objects.values_list("details_json", flat=True))
    assert "Hunter2-secret" not in trail and '"webhook_url":"(set)"' in trail


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('approver_group = "release_manager"', 'approver_group = "nobody"', "no group 'nobody'"),
        ("required_approvals = 2", "required_approvals = -1", "at least 0"),
        ('promotion_from = "staging"', 'promotion_from = "qa"', "'qa' is not another"),
        ('promotion_from = "staging"', 'promotion_from = "prod"', "'prod' is not another"),
        ("backup_required = true", 'backup_required = "yes"', "must be true or false"),
    ],
)
def test_a_bad_policy_gets_a_clear_message_and_changes_nothing(tmp_path, old, new, message):
    path = tmp_path / "retort.toml"
    path.write_text(POLICY.replace(old, new), encoding="utf-8")

    with pytest.raises(CommandError, match=message):
        _apply(path)

    assert Project.objects.count() == 0 and Environment.objects.count() == 0


def test_the_readmes_example_is_applied_as_written(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    example = (repo / "README.md").read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "retort.toml"
    # its relative paths resolve against the file's folder: the example's is the repository's
    ini = repo / "examples" / "inventory" / "alembic.ini"
    path.write_text(example.replace('"examples/inventory/alembic.ini"', f'"{ini}"'))

    output = _apply(path)

    assert "created project inventory" in output
    prod = Environment.objects.get(slug="prod")
    assert prod.promotion_from.slug == "staging"
    found = Discovery.objects.get(name="eu-cluster")
    assert found.labels == {"tier": "tenant", "region": "eu"}
    assert found.url_template == "postgresql://retort@db.internal:5432/{name}"
    schemas = Discovery.objects.get(name="eu-schemas")
    assert schemas.kind == "schemas" and schemas.query.startswith("SELECT nspname")
    assert prod.required_approvals == 2 and prod.backup_required
