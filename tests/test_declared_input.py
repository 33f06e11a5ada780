"""Each input is declared once: the admin and the TOML file bind the same forms, and the page,
the API and the CLI bind the same job request, so they accept and refuse alike."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from environments.models import ApiToken, Environment, Job
from tests.conftest import env

pytestmark = pytest.mark.django_db

TOO_LONG = "x" * 201
LENGTH_SENTENCE = "Ensure this value has at most 200 characters (it has 201)."


def _environment_change(client, environment: Environment, **changes) -> str:
    form = {
        "project": environment.project_id,
        "name": environment.name,
        "slug": environment.slug,
        "position": environment.position,
        "url_from_env": "",
        "required_approvals": environment.required_approvals,
        "keep_backups": environment.keep_backups,
        "promotion_min_hours": 0,
        "approval_expiry_hours": 24,
        "backup_before_jobs": "on",
        "lock_timeout_seconds": environment.lock_timeout_seconds,
        "statement_timeout_seconds": environment.statement_timeout_seconds,
        "lock_attempts": environment.lock_attempts,
        "lock_retry_seconds": environment.lock_retry_seconds,
        "rehearsal_required_hours": environment.rehearsal_required_hours,
        **changes,
    }
    response = client.post(
        reverse("admin:environments_environment_change", args=[environment.pk]), form
    )
    return response.content.decode() if response.status_code == 200 else ""


@pytest.fixture
def admin_alice(client, users):
    alice = users["alice"]
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client.force_login(alice)
    return client


def _apply_text(tmp_path, text: str) -> str:
    path = tmp_path / "retort.toml"
    path.write_text(text)
    with pytest.raises(CommandError) as refused:
        call_command("apply_config", str(path), stdout=StringIO())
    return str(refused.value)


FILE = """
[[project]]
name = "inventory"
script_location = "m"

[[project.environment]]
name = "prod"
url = "sqlite:///prod.db"
{line}
"""


@pytest.mark.parametrize(
    ("key", "value", "sentence"),
    [
        ("keep_backups", 0, "Give a whole number of at least 1."),
        ("approval_expiry_hours", 0, "Give a whole number of at least 1."),
        ("required_approvals", -1, "Give a whole number of at least 0."),
        ("lock_timeout_seconds", -1, "Ensure this value is greater than or equal to 0."),
        ("statement_timeout_seconds", 700000, "Ensure this value is less than or equal to 604800."),
        ("lock_attempts", 0, "Give a whole number of at least 1."),
        ("lock_retry_seconds", 4000, "Ensure this value is less than or equal to 3600."),
    ],
)
def test_the_admin_and_the_file_refuse_a_policy_with_the_same_sentence(
    admin_alice, demo_project, tmp_path, key, value, sentence
):
    prod = env(demo_project, "prod")
    kept = prod.keep_backups

    page = _environment_change(admin_alice, prod, **{key: value})
    file = _apply_text(tmp_path, FILE.format(line=f"{key} = {value}"))

    assert sentence in page
    assert file.endswith(f"project #1 environment #1: {key}: {sentence}")
    assert "line 6" in file  # the environment's table
    prod.refresh_from_db()
    assert prod.keep_backups == kept
    assert not Environment.objects.filter(project__slug="inventory", slug="prod").exclude(
        project=demo_project
    )


def test_an_approver_group_is_chosen_by_name_in_the_admin_and_the_file(
    admin_alice, demo_project, tmp_path
):
    prod = env(demo_project, "prod")

    page = _environment_change(admin_alice, prod, approver_group="nobody")
    file = _apply_text(tmp_path, FILE.format(line='approver_group = "nobody"'))
    saved = _environment_change(admin_alice, prod, approver_group="release_manager")

    assert "There is no group &#x27;nobody&#x27;." in page
    assert "There is no group 'nobody'." in file
    assert saved == ""  # redirected: saved
    prod.refresh_from_db()
    assert prod.approver_group.name == "release_manager"


def test_the_file_keeps_what_it_does_not_mention_as_the_admin_left_it(
    admin_alice, demo_project, tmp_path, inventory
):
    text = (
        f'[[project]]\nname = "{demo_project.name}"\nslug = "{demo_project.slug}"\n'
        f'alembic_ini = "{inventory}"\n\n'
        '[[project.environment]]\nname = "prod"\nurl = "sqlite:///prod.db"\n'
    )
    path = tmp_path / "retort.toml"
    path.write_text(text)
    prod = env(demo_project, "prod")
    _environment_change(admin_alice, prod, keep_backups=9, required_approvals=2)

    output = StringIO()
    call_command("apply_config", str(path), stdout=output)

    prod.refresh_from_db()
    assert (prod.keep_backups, prod.required_approvals) == (9, 2)
    (line,) = [line for line in output.getvalue().splitlines() if "inventory/prod" in line]
    assert line == "updated environment inventory/prod: position, url"  # nothing else


def test_a_job_request_is_refused_alike_on_the_page_the_api_and_the_cli(
    client, demo_project, users
):
    _, token = ApiToken.issue(user=users["bob"], name="ci")
    client.force_login(users["bob"])

    page = client.post(
        reverse("job_new", args=["inventory", "dev"]),
        {"kind": "upgrade", "target_text": TOO_LONG, "reason": "kept as typed"},
    )
    api = client.post(
        reverse("api_job_create", args=["inventory", "dev"]),
        {"kind": "upgrade", "target": TOO_LONG},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    with pytest.raises(CommandError) as cli:
        call_command(
            "request_job",
            "inventory",
            "dev",
            "--kind",
            "upgrade",
            "--target",
            TOO_LONG,
            "--as",
            "bob",
            stdout=StringIO(),
        )

    assert page.status_code == 400
    assert f"target: {LENGTH_SENTENCE}" in page.content.decode()
    assert "kept as typed" in page.content.decode()  # nothing typed is lost
    assert (api.status_code, api.json()["error"]) == (400, f"target: {LENGTH_SENTENCE}")
    assert str(cli.value) == f"--target: {LENGTH_SENTENCE}"
    assert not Job.objects.exists()


def test_an_unknown_kind_of_job_is_named_on_the_page_and_the_api(client, demo_project, users):
    _, token = ApiToken.issue(user=users["bob"], name="ci")
    client.force_login(users["bob"])
    sentence = "'rollback' is not a kind of job: upgrade, downgrade, stamp, restore."

    page = client.post(reverse("job_new", args=["inventory", "dev"]), {"kind": "rollback"})
    api = client.post(
        reverse("api_job_create", args=["inventory", "dev"]),
        {"kind": "rollback"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    missing = client.post(
        reverse("api_job_create", args=["inventory", "dev"]),
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert page.status_code == 400 and sentence.replace("'", "&#x27;") in page.content.decode()
    assert (api.status_code, api.json()["error"]) == (400, sentence)
    assert missing.json()["error"] == "Say which kind of job: upgrade, downgrade, stamp, restore."
    assert not Job.objects.exists()
