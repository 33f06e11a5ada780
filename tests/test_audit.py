"""The audit trail: append-only, chained, verifiable, and written by every workflow."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from environments import audit, audit_chain, reads
from environments.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditImmutable,
    Environment,
    Project,
)
from examples.inventory import revisions
from tests.conftest import TEST_SECRETS, alembic, secrets_in

pytestmark = pytest.mark.django_db


def _on_postgres() -> bool:
    return connection.vendor == "postgresql"


def _events(action: str | None = None) -> list[AuditEvent]:
    events = AuditEvent.objects.order_by("seq")
    return list(events.filter(action=action) if action else events)


def _write(count: int) -> list[AuditEvent]:
    return [audit.audit_record(action="test_event", details={"n": n}) for n in range(count)]


def _verify_audit() -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, out.getvalue(), err.getvalue()


# --- append-only ---------------------------------------------------------------------------


def test_events_form_a_chain_from_the_genesis_hash():
    first, second, third = _write(3)

    assert [e.seq for e in (first, second, third)] == [1, 2, 3]
    assert first.prev_hash == audit.GENESIS
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert len({first.hash, second.hash, third.hash}) == 3
    assert _verify_audit()[0] == 0


def test_an_event_cannot_be_changed_through_the_orm():
    (event,) = _write(1)
    event.action = "nothing_happened"

    with pytest.raises(AuditImmutable):
        event.save()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(action="nothing_happened")
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.get(pk=event.pk).action == "test_event"


def test_an_event_cannot_be_deleted_through_the_orm():
    (event,) = _write(1)

    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_events_cannot_be_created_around_audit_record():
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.create(seq=1, action="forged", prev_hash="0" * 64, hash="1" * 64)
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.bulk_create([AuditEvent(seq=1, action="forged")])
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE environments_auditevent SET action = 'nothing_happened'",
        "DELETE FROM environments_auditevent",
    ],
)
def test_postgresql_refuses_raw_update_and_delete(statement):
    if not _on_postgres():
        pytest.skip("the trigger exists on PostgreSQL, the dashboard database in CI")
    _write(2)

    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert [e.action for e in _events()] == ["test_event", "test_event"]


def _bypass_trigger(statement: str, params: list) -> None:
    """What someone with table-owner rights could do: disable the trigger and edit."""
    with connection.cursor() as cursor:
        if _on_postgres():
            cursor.execute(
                "ALTER TABLE environments_auditevent DISABLE TRIGGER retort_audit_append_only"
            )
        cursor.execute(statement, params)
        if _on_postgres():
            cursor.execute(
                "ALTER TABLE environments_auditevent ENABLE TRIGGER retort_audit_append_only"
            )


# --- tamper evidence -----------------------------------------------------------------------


def test_verify_audit_names_the_event_altered_in_the_database():
    _write(5)
    assert _verify_audit()[0] == 0

    _bypass_trigger(
        "UPDATE environments_auditevent SET details_json = %s WHERE seq = 3", ['{"n":99}']
    )
    code, out, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 3" in err
    assert "altered after it was written" in err


def test_verify_audit_names_an_event_deleted_from_the_middle():
    _write(5)

    _bypass_trigger("DELETE FROM environments_auditevent WHERE seq = 2", [])
    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 2" in err and "events were deleted" in err


def test_an_event_rewritten_with_a_fresh_hash_breaks_the_next_link():
    _write(4)
    event = AuditEvent.objects.get(seq=2)
    values = {name: getattr(event, name) for name in audit.HASHED_FIELDS}
    values["actor_name"] = "mallory"
    forged = audit.content_hash(values, event.prev_hash)

    _bypass_trigger(
        "UPDATE environments_auditevent SET actor_name = 'mallory', hash = %s WHERE seq = 2",
        [forged],
    )
    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 3: its link to event 2 does not match" in err


def test_events_removed_from_the_end_after_verification_are_noticed():
    _write(4)
    assert audit_chain.audit_verify_incremental().verified_through == 4

    _bypass_trigger("DELETE FROM environments_auditevent WHERE seq >= 3", [])

    assert "Chain broken at event" in audit_chain.audit_verify_incremental().message
    code, _, err = _verify_audit()
    assert code == 1 and "events were deleted" in err


def test_the_page_verifies_only_the_events_added_since_it_last_looked(client_alice):
    _write(3)
    seen = AuditEvent.objects.count()  # the three and alice's login
    html = client_alice.get(reverse("audit_log")).content.decode()
    assert f"Chain verified through event {seen}." in html

    _write(2)
    report = audit_chain.audit_verify_incremental()

    assert report.ok and report.verified_through == seen + 2
    assert report.checked == 2  # the two new ones, not the whole chain again


def test_the_audit_page_says_when_the_chain_is_broken(client_alice):
    _write(3)
    _bypass_trigger("UPDATE environments_auditevent SET ip = '10.6.6.6' WHERE seq = 1", [])

    html = client_alice.get(reverse("audit_log")).content.decode()

    assert "Chain broken at event 1" in html


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_still_make_one_unbroken_chain():
    if not _on_postgres():
        pytest.skip("threads writing at once need PostgreSQL (SQLite serialises writers)")
    project = Project.objects.create(name="p", slug="p", alembic_ini="/nowhere/alembic.ini")
    threads_count, per_thread = 8, 15
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            barrier.wait()
            for n in range(per_thread):
                with transaction.atomic():
                    audit.audit_record(
                        action="test_event", project=project, details={"t": number, "n": n}
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert not errors
    written = AuditEvent.objects.filter(action="test_event")
    assert written.count() == threads_count * per_thread
    seqs = sorted(AuditEvent.objects.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    report = audit_chain.audit_verify_full()
    assert report.ok and report.verified_through == len(seqs)


def test_an_event_rolls_back_with_the_change_it_records():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.audit_record(action="test_event")
        raise RuntimeError("the workflow failed after recording")

    assert not AuditEvent.objects.exists()
    assert audit.audit_record(action="test_event").seq == 1


# --- what is recorded ----------------------------------------------------------------------


def test_logins_logouts_and_failed_logins_are_recorded_with_the_client(client, users):
    agent = "Mozilla/5.0 (Retort test)"
    client.post(
        reverse("login"),
        {"username": "alice", "password": "not-alices-password"},
        HTTP_USER_AGENT=agent,
    )
    client.post(
        reverse("login"), {"username": "alice", "password": "pw-alice"}, HTTP_USER_AGENT=agent
    )
    client.post(reverse("logout"), HTTP_USER_AGENT=agent)

    failed, login, logout = _events()
    assert (failed.action, failed.actor_kind, failed.details) == (
        "login_failed",
        "anonymous",
        {"username": "alice"},
    )
    assert (login.action, login.actor_name, login.ip, login.user_agent) == (
        "login",
        "alice",
        "127.0.0.1",
        agent,
    )
    assert (logout.action, logout.actor_name) == ("logout", "alice")


def test_registry_changes_are_recorded_by_field_without_secret_values(
    client, users, inventory, make_project
):
    project = make_project(inventory, {"prod": "postgresql://app:S3cret-pw@db.internal/inventory"})
    created = [e.action for e in _events()]
    assert created == ["project_created", "environment_created"]
    assert _events("environment_created")[0].details["fields"]["url"] == "(set)"

    environment = project.environments.get()
    environment.position = 7
    environment.set_url("postgresql://app:Hunter2-secret@db.internal/inventory")
    environment.save()

    (changed,) = _events("environment_changed")
    assert changed.details == {
        "changed": {"position": {"from": 0, "to": 7}, "url": "changed (value not recorded)"}
    }
    assert (changed.project_name, changed.environment_name) == (project.name, "prod")


def test_saving_without_a_change_records_nothing(inventory, make_project):
    project = make_project(inventory, {"dev": "sqlite:///dev.sqlite"})
    before = AuditEvent.objects.count()

    project.save()
    project.environments.get().save()

    assert AuditEvent.objects.count() == before


def test_deleting_a_project_records_it_and_its_environments(inventory, make_project):
    project = make_project(inventory, {"dev": "sqlite:///a", "prod": "sqlite:///b"})

    project.delete()

    deleted = [(e.action, e.environment_name) for e in _events() if e.action.endswith("deleted")]
    assert sorted(deleted) == [
        ("environment_deleted", "dev"),
        ("environment_deleted", "prod"),
        ("project_deleted", ""),
    ]
    assert _verify_audit()[0] == 0


def test_an_admin_edit_is_recorded_with_its_user_and_address(client, users, inventory):
    admin_user = users["alice"]
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    project = Project.objects.create(name="inv", slug="inv", alembic_ini=str(inventory))

    response = client.post(
        reverse("admin:environments_project_change", args=[project.pk]),
        {
            "name": "inv",
            "slug": "inv",
            "alembic_ini": str(inventory),
            "version_locations": "[]",
            "version_table": "deploy_versions",
            "multiple_heads": "auto",
            "command": '["python", "-m", "alembic", "-c", "alembic.ini"]',
            "url_env_var": "DATABASE_URL",
            "environments-TOTAL_FORMS": "0",
            "environments-INITIAL_FORMS": "0",
            "roles-TOTAL_FORMS": "0",
            "roles-INITIAL_FORMS": "0",
        },
        REMOTE_ADDR="10.1.2.3",
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    (changed,) = _events("project_changed")
    assert (changed.actor_name, changed.ip) == ("alice", "10.1.2.3")
    assert changed.details["changed"]["version_table"] == {
        "from": "alembic_version",
        "to": "deploy_versions",
    }


def test_apply_config_records_changes_once_and_a_second_run_records_nothing(tmp_path, inventory):
    config = tmp_path / "retort.toml"
    config.write_text(
        f'[[project]]\nname = "inventory"\nalembic_ini = "{inventory}"\n\n'
        '[[project.environment]]\nname = "prod"\n'
        'url = "postgresql://deploy:Pr0d-Pa55word@db.internal/inventory"\n'
    )
    call_command("apply_config", str(config), stdout=io.StringIO())
    first = _events()

    call_command("apply_config", str(config), stdout=io.StringIO())

    assert [(e.action, e.actor_kind, e.actor_name) for e in first] == [
        ("project_created", "system", "apply_config"),
        ("environment_created", "system", "apply_config"),
    ]
    assert _events() == first


def test_a_hand_run_upgrade_is_an_out_of_band_change_on_the_next_refresh(demo_project, inventory):
    staging = demo_project.environments.get(name="staging")
    reads.environment_read(environment=staging)
    assert not _events("out_of_band_change")

    alembic(inventory, staging.get_url(), "upgrade", "+1")
    snapshot = reads.environment_read(environment=staging)

    (event,) = _events("out_of_band_change")
    assert (event.environment_name, event.actor_kind, event.actor_name) == (
        "staging",
        "system",
        "reader",
    )
    assert event.from_list == [revisions.STAGING_TARGET]
    assert event.to_list == list(snapshot.heads) and event.to_list != event.from_list
    (changed,) = _events("revision_changed")
    assert changed.to_list == event.to_list
    reads.environment_read(environment=staging)
    assert len(_events("out_of_band_change")) == 1  # the next read finds nothing new


def test_a_failed_read_in_between_is_not_a_revision_change(demo_project, tmp_path):
    prod = demo_project.environments.get(name="prod")
    reads.environment_read(environment=prod)
    database = tmp_path / "prod.sqlite"
    database.rename(tmp_path / "prod.moved")

    assert reads.environment_read(environment=prod).status == "unreachable"
    (tmp_path / "prod.moved").rename(database)
    assert reads.environment_read(environment=prod).status == "behind"

    assert not _events("revision_changed")


# --- the page and the exports --------------------------------------------------------------


@pytest.fixture
def trail(demo_project, users):
    """A trail over two environments with a few kinds of event."""
    staging = demo_project.environments.get(name="staging")
    prod = demo_project.environments.get(name="prod")
    for environment, action in [
        (staging, "revision_changed"),
        (prod, "revision_changed"),
        (prod, "out_of_band_change"),
        (staging, "revision_changed"),
    ]:
        audit.audit_record(
            action=action,
            environment=environment,
            from_revisions=["a1"],
            to_revisions=["b2"],
            system_actor="reader",
        )
    audit.audit_record(action="login", user=users["bob"])
    return {"staging": staging, "prod": prod}


def _rows_on_page(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('data-seq="')[1:]]


def test_the_page_filters_by_environment_and_action(client_alice, trail):
    staging = trail["staging"]
    url = reverse("audit_log") + f"?environment={staging.pk}&action=revision_changed"

    html = client_alice.get(url).content.decode()

    expected = AuditEvent.objects.filter(environment_id=staging.pk, action="revision_changed")
    assert _rows_on_page(html) == [str(s) for s in expected.values_list("seq", flat=True)]
    assert len(_rows_on_page(html)) == 2
    assert staging.get_absolute_url() in html


def test_the_page_filters_by_actor_and_date(client_alice, trail):
    today = timezone.localdate()
    bob_today = f"?actor=bob&date_from={today}&date_to={today}"
    html = client_alice.get(reverse("audit_log") + bob_today).content.decode()
    assert len(_rows_on_page(html)) == 1 and "login" in html

    yesterday = today - timedelta(days=1)
    html = client_alice.get(reverse("audit_log") + f"?date_to={yesterday}").content.decode()
    assert _rows_on_page(html) == [] and "No events match these filters." in html


def test_a_backwards_date_range_is_explained(client_alice, trail):
    today = timezone.localdate()
    query = f"?date_from={today}&date_to={today - timedelta(days=3)}"

    html = client_alice.get(reverse("audit_log") + query).content.decode()

    assert "The start date is after the end date." in html


def test_the_page_is_paginated_newest_first(client_alice, settings):
    settings.RETORT_AUDIT_PAGE_SIZE = 10
    seqs = [str(event.seq) for event in reversed(_write(25))]

    url = reverse("audit_log") + "?action=test_event"
    first = _rows_on_page(client_alice.get(url).content.decode())
    third = _rows_on_page(client_alice.get(url + "&page=3").content.decode())

    assert first == seqs[:10]
    assert third == seqs[20:]


def test_strings_from_outside_are_escaped_on_the_page(client, client_alice):
    client.post(reverse("login"), {"username": "<script>alert(1)</script>", "password": "x"})

    html = client_alice.get(reverse("audit_log")).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _export(client, fmt: str, query: str = "") -> str:
    response = client.get(reverse("audit_export", args=[fmt]) + query)
    assert response.status_code == 200
    assert response.streaming
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


def test_the_csv_export_holds_the_filtered_rows(client_alice, trail):
    prod = trail["prod"]

    text = _export(client_alice, "csv", f"?environment={prod.pk}")

    rows = list(csv.DictReader(io.StringIO(text)))
    expected = AuditEvent.objects.filter(environment_id=prod.pk).order_by("-seq")
    assert [int(r["seq"]) for r in rows] == [e.seq for e in expected]
    actions = [r["action"] for r in rows]
    assert actions == ["out_of_band_change", "revision_changed", "environment_created"]
    assert all(r["hash"] == e.hash for r, e in zip(rows, expected, strict=True))


def test_the_json_lines_export_can_be_verified_outside_retort(client_alice, trail):
    lines = _export(client_alice, "jsonl").splitlines()

    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    chained = sorted(events, key=lambda e: e["seq"])
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(chained, chained[1:], strict=False))


def test_an_export_is_itself_recorded(client_alice, trail):
    _export(client_alice, "csv", "?action=login")

    (event,) = _events("audit_exported")
    assert event.actor_name == "alice"
    assert event.details == {"filters": {"action": "login"}, "format": "csv"}


def test_an_unknown_export_format_is_not_found(client_alice):
    assert client_alice.get(reverse("audit_export", args=["xml"])).status_code == 404


def test_details_never_carry_a_url_password_or_a_secret_named_key():
    event = audit.audit_record(
        action="test_event",
        details={"error": "could not reach postgresql://app:Hunter2-secret@db/x", "token": "t0k"},
    )

    assert event.details == {"error": "could not reach postgresql://app:***@db/x", "token": "***"}


def test_the_secret_scan_of_the_run_would_catch_a_password():
    texts = [("event 1 (login)", "alice 127.0.0.1"), ("event 2 (x)", "oops pw-alice")]

    assert secrets_in(texts, TEST_SECRETS) == ["event 2 (x): pw…"]


def test_the_environment_reference_survives_its_deletion(demo_project):
    prod = demo_project.environments.get(name="prod")
    event = audit.audit_record(action="test_event", environment=prod)

    Environment.objects.filter(pk=prod.pk).delete()

    kept = AuditEvent.objects.get(pk=event.pk)
    assert (kept.environment_name, kept.project_name) == ("prod", demo_project.name)
    assert _verify_audit()[0] == 0


@pytest.mark.parametrize(
    "payload", ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)"]
)
def test_a_formula_from_outside_is_inert_in_the_csv_export(client_alice, payload):
    Client().post(reverse("login"), {"username": "x", "password": "x"}, HTTP_USER_AGENT=payload)

    text = _export(client_alice, "csv", "?action=login_failed")
    jsonl = _export(client_alice, "jsonl", "?action=login_failed")

    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["user_agent"] == "'" + payload
    assert json.loads(jsonl.splitlines()[0])["user_agent"] == payload  # the data itself is kept


# --- a trail that cannot be rewritten quietly ---------------------------------------------


def _plain_sha256(values: dict, prev_hash: str) -> str:
    """What someone without the key can compute: the chain's formula, unkeyed."""
    content = audit.canonical_content(values)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def _rewrite_from(seq: int, *, actor: str, hasher) -> None:
    """Rewrite every event from `seq` on with a new actor and recomputed hashes and links."""
    prev = AuditEvent.objects.get(seq=seq - 1).hash if seq > 1 else audit.GENESIS
    for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
        values = {name: getattr(event, name) for name in audit.HASHED_FIELDS}
        values["actor_name"] = actor
        new = hasher(values, prev)
        _bypass_trigger(
            "UPDATE environments_auditevent SET actor_name = %s, prev_hash = %s, hash = %s "
            "WHERE seq = %s",
            [actor, prev, new, event.seq],
        )
        prev = new


def test_a_trail_rewritten_with_recomputed_hashes_is_named():
    _write(5)

    _rewrite_from(2, actor="mallory", hasher=_plain_sha256)
    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 2" in err and "altered after it was written" in err


def test_a_chain_sealed_with_another_key_does_not_verify(settings):
    _write(3)
    settings.RETORT_AUDIT_KEY = "not-the-key"

    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 1" in err


def test_a_forged_event_appended_at_the_end_is_named():
    _write(3)
    last = AuditEvent.objects.get(seq=3)
    values = {name: getattr(last, name) for name in audit.HASHED_FIELDS}
    values |= {"seq": 4, "action": "job_approved", "actor_name": "mallory"}
    forged = AuditEvent(**values, prev_hash=last.hash, hash=_plain_sha256(values, last.hash))
    forged._chained = True
    forged.save()

    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 4" in err


def test_postgresql_refuses_truncate():
    if not _on_postgres():
        pytest.skip("the trigger exists on PostgreSQL, the dashboard database in CI")
    _write(2)

    with (
        pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE environments_auditevent")
    assert len(_events()) == 2


def test_flush_refuses_while_the_trail_holds_events(monkeypatch):
    monkeypatch.delenv("RETORT_AUDIT_FLUSH_ALLOWED")
    _write(2)

    with pytest.raises(CommandError, match="flush would wipe it"):
        call_command("flush", interactive=False, verbosity=0)
    assert len(_events()) == 2


def test_a_wiped_trail_is_caught_by_the_head_kept_outside_the_database(settings):
    _write(3)
    assert _verify_audit()[0] == 0
    head = json.loads(settings.RETORT_AUDIT_HEAD_FILE.read_text())

    _bypass_trigger("DELETE FROM environments_auditevent", [])
    AuditCheckpoint.objects.filter(pk=1).update(verified_seq=0, verified_hash=audit.GENESIS)
    code, _, err = _verify_audit()

    assert head["seq"] == 3
    assert code == 1
    assert "verified through event 3 on" in err
    assert (
        "(recorded outside) and now ends empty; events were deleted or the trail was wiped" in err
    )


def test_a_trail_rewritten_and_begun_again_does_not_pass_for_the_one_verified(settings):
    _write(3)
    assert _verify_audit()[0] == 0
    _bypass_trigger("DELETE FROM environments_auditevent", [])
    AuditCheckpoint.objects.filter(pk=1).update(verified_seq=0, verified_hash=audit.GENESIS)
    _write(4)  # a fresh, valid chain longer than the old one

    code, _, err = _verify_audit()

    assert code == 1
    assert "Chain broken at event 3: it no longer has the hash it had when it was verified" in err


def test_a_break_once_found_stays_until_someone_acknowledges_it(capsys):
    _write(4)
    assert _verify_audit()[0] == 0
    original = AuditEvent.objects.get(seq=2).ip
    _bypass_trigger("UPDATE environments_auditevent SET ip = '10.6.6.6' WHERE seq = 2", [])
    assert _verify_audit()[0] == 1  # found, and recorded
    assert not audit_chain.audit_verify_incremental().ok  # the page says so too

    _bypass_trigger("UPDATE environments_auditevent SET ip = %s WHERE seq = 2", [original])
    code, _, err = _verify_audit()
    assert code == 1  # the chain verifies again, but the break is not forgotten
    assert "found earlier" in err and "--acknowledge" in err

    out = io.StringIO()
    call_command("verify_audit", "--acknowledge", "restored from backup", stdout=out)

    [ack] = _events("audit_break_acknowledged")
    assert ack.details["reason"] == "restored from backup"
    assert ack.actor_name == "verify_audit"
    assert _verify_audit()[0] == 0


def test_a_full_verification_writes_the_head_outside_the_database(settings, caplog):
    from tests.test_notifications import Receiver

    receiver = Receiver()
    settings.RETORT_WEBHOOK_URL = receiver.url
    try:
        _write(3)
        with caplog.at_level("INFO", logger="environments.audit"):
            assert _verify_audit()[0] == 0
    finally:
        receiver.close()

    head = json.loads(settings.RETORT_AUDIT_HEAD_FILE.read_text())
    last = AuditEvent.objects.order_by("-seq").first()
    assert (head["seq"], head["hash"]) == (last.seq, last.hash)
    assert f"head event {last.seq}, hash {last.hash}" in caplog.text
    assert receiver.bodies[-1]["audit_head"]["hash"] == last.hash


@pytest.mark.django_db(transaction=True)
def test_a_trail_written_before_the_key_is_verified_then_sealed_with_it():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("environments", "0009_job_dispatch")])
    prev = audit.GENESIS
    for seq in range(1, 4):  # events as the unkeyed chain wrote them
        values = {name: "" for name in audit.HASHED_FIELDS} | {
            "seq": seq,
            "created_at": timezone.now(),
            "actor_kind": "system",
            "actor_id": None,
            "actor_name": "before",
            "action": "test_event",
            "project_id": None,
            "environment_id": None,
            "job_id": None,
            "details_json": json.dumps({"n": seq}),
        }
        content = audit.canonical_content(values, version=1)
        digest = hashlib.sha256(f"{prev}\n{content}".encode()).hexdigest()
        with connection.cursor() as cursor:
            columns = [*values, "prev_hash", "hash"]
            cursor.execute(
                f"INSERT INTO environments_auditevent ({', '.join(columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                [*values.values(), prev, digest],
            )
        prev = digest

    MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert [e.actor_name for e in _events()] == ["before"] * 3
    assert AuditEvent.objects.get(seq=3).hash != prev  # sealed again, with the key
    assert _verify_audit()[0] == 0
