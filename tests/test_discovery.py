"""Discovered tenants: a query on a real PostgreSQL server lists the tenants' databases; new ones
become environments, vanished ones are marked gone (kept, with their history, no longer read),
and a server or a query that fails changes nothing."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from environments import discovery, read_requests
from environments.discovery_forms import DiscoveryForm
from environments.models import AuditEvent, Discovery, Environment, StateChange
from tests.conftest import pg_admin, pg_url, read_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def server() -> Iterator[Callable[..., str]]:
    """Databases named `<prefix><suffix>` on the local server; every one is dropped after."""
    prefix = f"rt_tenant_{uuid.uuid4().hex[:8]}_"
    made: set[str] = set()

    def create(suffix: str) -> str:
        name = prefix + suffix
        with contextlib.closing(pg_admin()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        made.add(name)
        return name

    create.prefix = prefix  # type: ignore[attr-defined]
    yield create
    with contextlib.closing(pg_admin()) as connection, connection.cursor() as cursor:
        for name in made:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop(name: str) -> None:
    with contextlib.closing(pg_admin()) as connection, connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def tenants(inventory, make_project, server) -> Discovery:
    project = make_project(inventory, {}, name="tenants")
    found = Discovery(
        project=project,
        name="eu-cluster",
        query=f"SELECT datname FROM pg_database WHERE datname LIKE '{server.prefix}%' ORDER BY 1",
        labels={"tier": "tenant", "region": "eu"},
    )
    found.server_url = pg_url("postgres")
    found.url_template = pg_url("{name}")
    found.save()
    return found


def _names(found: Discovery) -> list[str]:
    return sorted(found.environments.values_list("name", flat=True))


def _events(action: str) -> list[str]:
    return sorted(
        event.details["name"] for event in AuditEvent.objects.filter(action=action).order_by("pk")
    )


def test_the_tenants_a_server_lists_become_labelled_environments_that_read(
    server, tenants, client_alice
):
    names = [server(suffix) for suffix in ("001", "002", "003")]

    run = discovery.discovery_run(discovery=tenants)
    read_all(tenants.project)

    assert run.added == names and run.found == 3 and not run.error
    assert _names(tenants) == names
    for environment in tenants.environments.all():
        assert environment.labels == {"tier": "tenant", "region": "eu"}
        assert environment.stored_state().status == "uninitialized"  # its URL reads
    assert _events("tenant_discovered") == names
    page = " ".join(client_alice.get(reverse("overview")).content.decode().split())
    assert "Discovery tenants / eu-cluster: 3 databases listed just now" in page
    tenants.refresh_from_db()
    assert tenants.found == 3 and tenants.checked_at is not None and tenants.error == ""


def test_the_query_runs_as_written_colons_and_percent_signs_included(server, tenants):
    name = server("a:b%c")
    tenants.query = (
        f"SELECT datname::text FROM pg_database WHERE datname LIKE '{server.prefix}a:b%%c' "
        "OR datname = ':nothing'"
    )
    tenants.save()

    run = discovery.discovery_run(discovery=tenants)

    assert (run.added, run.error) == ([name], "")


def test_a_tenant_created_on_the_server_appears_after_the_next_run_and_only_it(server, tenants):
    server("001")
    discovery.discovery_run(discovery=tenants)
    newcomer = server("061")

    again = discovery.discovery_run(discovery=tenants)

    assert again.added == [newcomer]
    assert len(_names(tenants)) == 2
    assert _events("tenant_discovered") == sorted([server.prefix + "001", newcomer])


def test_a_vanished_tenant_is_marked_gone_kept_with_its_history_and_no_longer_read(
    server, tenants, client_alice
):
    kept, leaving = server("001"), server("002")
    discovery.discovery_run(discovery=tenants)
    read_all(tenants.project)
    drop(leaving)

    run = discovery.discovery_run(discovery=tenants)
    gone = Environment.objects.get(name=leaving)
    html = client_alice.get(reverse("overview")).content.decode()

    assert run.gone == [leaving]
    assert gone.gone_at is not None
    assert StateChange.objects.filter(environment=gone).exists()  # its history stays
    assert _events("tenant_gone") == [leaving]
    # the next scheduled reads leave it out
    sent = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(read_requests.dispatch, "send", lambda task, ids: sent.extend(ids) or True)
        read_requests.reads_send_due(now=gone.gone_at.replace(year=gone.gone_at.year + 1))
    assert sent == [Environment.objects.get(name=kept).pk]
    assert "1 gone" in " ".join(html.split())
    assert "its server has not listed it since" in html


def test_a_tenant_that_comes_back_is_read_again(server, tenants):
    name = server("001")
    discovery.discovery_run(discovery=tenants)
    drop(name)
    discovery.discovery_run(discovery=tenants)
    server("001")

    run = discovery.discovery_run(discovery=tenants)

    assert run.returned == [name]
    assert Environment.objects.get(name=name).gone_at is None
    assert _events("tenant_returned") == [name]


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ("SELECT datname FROM nowhere", 'The discovery\'s query failed: relation "nowhere"'),
        (
            "CREATE TABLE discovery_wrote_this (a int)",
            "cannot execute CREATE TABLE in a read-only transaction",
        ),
    ],
)
def test_a_failing_query_is_said_in_words_and_marks_no_tenant_gone(
    server, tenants, query, sentence
):
    server("001")
    discovery.discovery_run(discovery=tenants)
    tenants.query = query
    tenants.save()

    run = discovery.discovery_run(discovery=tenants)

    assert sentence in run.error
    tenants.refresh_from_db()
    assert sentence in tenants.error
    assert not Environment.objects.filter(gone_at__isnull=False).exists()
    with contextlib.closing(pg_admin()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('discovery_wrote_this')")
        assert cursor.fetchone() == (None,)


def test_an_unreachable_server_is_said_in_words_without_its_password_and_changes_nothing(
    server, tenants, closed_port, client_alice
):
    server("001")
    discovery.discovery_run(discovery=tenants)
    tenants.server_url = pg_url("postgres", password="Hunter2-secret", port=closed_port)
    tenants.save()

    run = discovery.discovery_run(discovery=tenants)
    page = " ".join(client_alice.get(reverse("overview")).content.decode().split())

    assert run.error.startswith("Cannot reach the database")
    assert "Hunter2-secret" not in run.error + page
    assert not Environment.objects.filter(gone_at__isnull=False).exists()
    assert "Discovery tenants / eu-cluster (just now): Cannot reach the database" in page


def test_a_name_already_taken_is_skipped_and_an_odd_one_is_escaped_on_the_page(
    server, tenants, client_alice
):
    taken = server("001")
    odd = server("<b>bold</b>")
    hand = Environment(project=tenants.project, name=taken, slug="by-hand", position=0)
    hand.set_url(pg_url(taken))
    hand.save()

    run = discovery.discovery_run(discovery=tenants)
    html = client_alice.get(reverse("overview")).content.decode()

    assert run.added == [odd]
    assert run.skipped == [
        f"{taken!r} is already an environment of the project, not one this discovery found"
    ]
    assert Environment.objects.get(name=taken).discovered_by is None
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html


def test_the_admin_form_keeps_the_server_and_the_template_encrypted_and_checks_them(tenants):
    def form(**fields) -> DiscoveryForm:
        data = {
            "project": tenants.project.pk,
            "name": "us-cluster",
            "query": "SELECT datname FROM pg_database",
            "server_url": pg_url("postgres", password="S3cret-pw"),
            "url_template": pg_url("{name}", password="S3cret-pw"),
            "labels": "tier=tenant",
        }
        return DiscoveryForm(data={**data, **fields})

    wrong_server = form(server_url="sqlite:////tmp/x.db")
    no_name = form(url_template=pg_url("fixed"))
    good = form()

    assert wrong_server.errors["server_url"] == ["Tenants are discovered on a PostgreSQL server."]
    assert no_name.errors["url_template"] == ["The template must say where the name goes: {name}."]
    saved = good.save()
    assert "S3cret-pw" not in saved.server_url_encrypted + saved.url_template_encrypted
    assert saved.url_template == pg_url("{name}", password="S3cret-pw")
    assert saved.labels == {"tier": "tenant"}


def _toml(folder, discovery: str) -> str:
    path = folder / "retort.toml"
    path.write_text(
        f"""
[[project]]
name = "tenants"
script_location = "migrations"

[[project.environment]]
name = "staging"
url = "sqlite:///staging.sqlite"

[[project.discovery]]
{discovery}
""",
        encoding="utf-8",
    )
    return str(path)


def test_a_discovery_is_declared_in_the_toml_file_idempotently_its_urls_never_printed(tmp_path):
    from environments import configfile

    path = _toml(
        tmp_path,
        f'''name = "eu-cluster"
server_url = "{pg_url("postgres", password="S3cret-pw")}"
url_template = "{pg_url("{name}", password="S3cret-pw")}"
query = "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\\\_%'"
labels = {{ tier = "tenant" }}''',
    )

    first = configfile.apply_file(path)
    second = configfile.apply_file(path)
    found = Discovery.objects.get(name="eu-cluster")

    assert "created discovery tenants/eu-cluster" in first.lines()
    assert second.lines() == [
        "unchanged project tenants",
        "unchanged environment tenants/staging",
        "unchanged discovery tenants/eu-cluster",
    ]
    assert found.labels == {"tier": "tenant"}
    assert found.query == "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\_%'"
    assert found.url_template == pg_url("{name}", password="S3cret-pw")
    assert "S3cret-pw" not in " ".join(first.lines() + second.lines())


def test_a_bad_discovery_in_the_file_is_named_at_its_line(tmp_path):
    from environments import configfile

    path = _toml(
        tmp_path,
        f'''name = "eu-cluster"
server_url = "{pg_url("postgres")}"
url_template = "{pg_url("fixed")}"''',
    )

    with pytest.raises(configfile.ConfigError) as refused:
        configfile.apply_file(path)

    assert str(refused.value) == (
        "retort.toml line 10: project #1 discovery #1: url_template: "
        "The template must say where the name goes: {name}."
    )
    assert not Discovery.objects.exists()


def test_a_gone_tenant_leaves_the_ci_gate_and_the_status_api(server, tenants, client_alice):
    kept, leaving = server("001"), server("002")
    discovery.discovery_run(discovery=tenants)
    drop(leaving)
    discovery.discovery_run(discovery=tenants)
    read_all(tenants.project)

    out = StringIO()
    with pytest.raises(SystemExit) as gate:
        call_command("migration_status", "--project", "tenants", "--json", stdout=out)
    api = client_alice.get(reverse("api_status"), {"project": "tenants"}).json()

    assert [row["environment"] for row in json.loads(out.getvalue())] == [kept]
    assert gate.value.code == 1  # the one left is not initialized: something to do, not 2
    assert [row["environment"] for row in api] == [kept]
