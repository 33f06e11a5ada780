"""Approvals (issue #6): four eyes on prod, bound to the exact plan, enforced on every path.

The targets are the demo's real SQLite files, the plans and SQL previews come from real alembic
runs, the dashboard's own database is the suite's (PostgreSQL in CI). Each refusal is checked
for what a person sees (the sentence, the HTTP status) and for what an auditor sees (the event).
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from environments import approvals, execution, planning, promotion, reads, transitions
from environments.models import (
    ApiToken,
    Approval,
    AuditEvent,
    Environment,
    Job,
    StateChange,
)
from examples.inventory import revisions as inv
from tests.conftest import alembic, approve, env, planned, requested, wait_for

pytestmark = pytest.mark.django_db


def refusals(code: str) -> list[AuditEvent]:
    return [
        e
        for e in AuditEvent.objects.filter(action__in=["approval_refused", "job_refused"])
        if e.details.get("reason") == code
    ]


# --- roles and the policy ------------------------------------------------------------------


def test_the_roles_are_groups_holding_their_permissions():
    def perms(name: str) -> set[str]:
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    assert "request_job" not in perms("viewer") and "view_job" in perms("viewer")
    assert "request_job" in perms("developer") and "approve_job" not in perms("developer")
    assert {"request_job", "approve_job"} <= perms("release_manager")
    assert {"change_environment", "approve_job"} <= perms("admin")


def test_a_prod_job_waits_for_approval_and_the_environment_page_states_the_policy(
    client, policed, people
):
    job = requested(env(policed, "prod"), people["bob"])

    assert job.status == "awaiting_approval" and job.queued_at is None
    assert job.expires_at - job.submitted_at == timedelta(hours=24)
    client.force_login(people["vera"])
    page = client.get(env(policed, "prod").get_absolute_url()).content.decode()
    assert "Jobs need 2 approvals from members of release_manager" in page
    assert "A backup before every upgrade and downgrade is mandatory." in page
    assert "Upgrades only to revisions staging has held." in page
    assert 'id="read-only-note"' in page and "Plan the job" not in page  # vera only reads
    assert AuditEvent.objects.filter(action="approval_requested", job_id=job.pk).count() == 1


def test_a_dev_job_needs_no_approval_and_is_queued_at_once(policed, people):
    job = requested(env(policed, "dev"), people["bob"], target="-1", kind="downgrade")

    assert job.status == "queued"


# --- every refusal, with its event ---------------------------------------------------------


def test_the_requester_cannot_approve_their_own_job(client, policed, people):
    job = requested(env(policed, "prod"), people["alice"])  # a release manager asks…

    with pytest.raises(transitions.Refused, match="someone else must approve it") as refused:
        approve(job, people["alice"])  # …and may not approve it herself

    assert refused.value.code == "self_approval"
    client.force_login(people["alice"])
    page = client.get(job.get_absolute_url()).content.decode()
    assert f"You requested job #{job.pk}: someone else must approve it" in page
    assert 'id="approve-' not in page
    crafted = client.post(
        reverse("job_decide", args=["inventory", "prod", job.pk, "approve"]),
        {"plan_sha256": job.plan_sha256},
    )
    assert crafted.status_code == 403
    assert "someone else must approve it" in crafted.content.decode()
    assert Approval.objects.count() == 0
    assert len(refusals("self_approval")) == 2
    assert refusals("self_approval")[0].actor_name == "alice"


def test_the_policy_may_let_the_requester_approve(policed, people):
    prod = env(policed, "prod")
    prod.requester_may_approve = True
    prod.save()
    job = requested(prod, people["alice"])

    assert approve(job, people["alice"]).approvals_counted().count() == 1


def test_approving_twice_counts_once(policed, people):
    job = requested(env(policed, "prod"), people["bob"])
    approve(job, people["alice"])

    with pytest.raises(transitions.Refused, match="You already approved this plan") as refused:
        approve(job, people["alice"])

    assert refused.value.code == "already_decided"
    assert Job.objects.get(pk=job.pk).status == "awaiting_approval"
    assert Approval.objects.filter(job=job).count() == 1
    assert len(refusals("already_decided")) == 1


def test_a_viewer_a_developer_and_an_outsider_approver_are_refused(client, policed, people):
    job = requested(env(policed, "prod"), people["carol"])

    for name in ("vera", "bob", "dan"):
        with pytest.raises(
            transitions.Refused, match="only members of release_manager may"
        ) as refused:
            approve(job, people[name])
        assert refused.value.code == "not_approver"
    client.force_login(people["vera"])
    response = client.post(
        reverse("job_decide", args=["inventory", "prod", job.pk, "approve"]),
        {"plan_sha256": job.plan_sha256},
    )

    assert response.status_code == 403
    assert Approval.objects.count() == 0
    assert [e.actor_name for e in refusals("not_approver")] == ["vera", "dan", "bob", "vera"]


def test_an_approval_of_a_plan_other_than_the_jobs_is_refused(policed, people):
    job = requested(env(policed, "prod"), people["bob"])

    with pytest.raises(transitions.Refused, match="You read plan 000000000000…") as refused:
        approve(job, people["alice"], plan="0" * 64)

    assert refused.value.code == "stale_plan"
    assert Approval.objects.count() == 0


def test_when_the_database_moves_the_plan_is_stale_and_replanning_voids_earlier_approvals(
    client, policed, people, inventory: Path
):
    prod = env(policed, "prod")
    job = requested(prod, people["bob"])
    approve(job, people["alice"], comment="read it")
    alembic(inventory, prod.get_url(), "upgrade", "+1")  # someone moves prod by hand

    with pytest.raises(transitions.Refused, match="prod now holds") as refused:
        approve(job, people["carol"])
    assert refused.value.code == "stale_plan"
    client.force_login(people["carol"])
    page = client.get(job.get_absolute_url()).content.decode()
    assert "This plan is out of date." in page and "Plan it again" in page

    old_plan = job.plan_sha256
    client.force_login(people["bob"])
    assert client.post(reverse("job_action", args=[job.pk, "replan"])).status_code == 302
    planning.job_preview_sql(job_id=job.pk)
    job.refresh_from_db()

    assert job.plan_sha256 != old_plan and len(job.revisions) == 2
    assert job.approvals_counted().count() == 0
    client.force_login(people["carol"])
    page = client.get(job.get_absolute_url()).content.decode()
    assert "0 of 2</strong> approvals for this plan" in page
    assert "alice approved an earlier plan" in page and "no longer counts" in page
    replanned = AuditEvent.objects.get(action="job_replanned", job_id=job.pk)
    assert replanned.details["plan_before"] == old_plan and replanned.details["stale"] == 1
    assert approve(job, people["carol"]).approvals_counted().count() == 1


def test_an_edited_revision_file_makes_the_plan_stale(policed, people, inventory: Path):
    job = requested(env(policed, "prod"), people["bob"])
    index, _ = policed.load_scripts()
    edited = index.revisions[job.revisions[-1]].path
    edited.write_text(edited.read_text() + "\n# changed after the plan was made\n")

    with pytest.raises(transitions.Refused, match="The revision files changed") as refused:
        approve(job, people["alice"])

    assert refused.value.code == "stale_plan"


def test_a_crafted_post_for_another_environment_or_project_is_refused(
    client, policed, people, make_project, inventory, sqlite_url
):
    job = requested(env(policed, "prod"), people["bob"])
    other = make_project(inventory, {"main": sqlite_url("billing")}, name="billing")
    client.force_login(people["alice"])

    for project, environment in (("inventory", "staging"), (other.slug, "main")):
        response = client.post(
            reverse("job_decide", args=[project, environment, job.pk, "approve"]),
            {"plan_sha256": job.plan_sha256},
        )
        assert response.status_code == 403
        assert f"Job #{job.pk} is for inventory/prod, not" in response.content.decode()

    assert Approval.objects.count() == 0
    crafted = refusals("wrong_target")
    assert len(crafted) == 2 and all(e.environment_slug == "prod" for e in crafted)


def test_a_prod_job_cannot_be_queued_without_its_approvals_by_any_path(
    client, admin_client, policed, people
):
    job = requested(env(policed, "prod"), people["bob"])
    approve(job, people["alice"])  # one of two
    client.force_login(people["bob"])

    page = client.post(reverse("job_action", args=[job.pk, "queue"]))
    assert page.status_code == 409
    assert "prod needs 2 approvals of this plan before it runs; 1 given" in page.content.decode()

    admin = admin_client.post(
        "/admin/environments/job/", {"action": "queue", "_selected_action": [job.pk]}
    )
    assert any("1 given" in str(m) for m in get_messages(admin.wsgi_request))

    _, token = ApiToken.issue(user=people["bob"], name="ci")
    api = client.post(
        reverse("api_job_action", args=[job.pk, "queue"]),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert api.status_code == 409 and api.json()["code"] == "approvals_missing"

    out = io.StringIO()
    call_command(
        "request_job",
        "inventory",
        "prod",
        "--kind",
        "upgrade",
        "--target",
        "+1",
        "--as",
        "bob",
        stdout=out,
    )
    assert '"status": "awaiting_approval"' in out.getvalue()

    assert Job.objects.filter(status__in=["queued", "running"]).count() == 0
    assert len(refusals("approvals_missing")) == 3


def test_enough_approvals_queue_the_job_and_the_trail_tells_it(policed, people):
    job = requested(env(policed, "prod"), people["bob"])

    assert approve(job, people["alice"], comment="looks right").status == "awaiting_approval"
    job = approve(job, people["carol"], comment="ok")

    assert job.status == "queued"
    story = list(
        AuditEvent.objects.filter(job_id=job.pk).order_by("seq").values_list("action", "actor_name")
    )
    assert story == [
        ("job_planned", "bob"),
        ("approval_requested", "bob"),
        ("job_approved", "alice"),
        ("job_approved", "carol"),
        ("job_queued", "carol"),
    ]
    approved = AuditEvent.objects.filter(action="job_approved", job_id=job.pk).order_by("seq")
    assert [e.details["plan_sha256"] for e in approved] == [job.plan_sha256] * 2
    assert approved[0].details["comment"] == "looks right"


def test_a_rejection_ends_the_request(policed, people):
    job = requested(env(policed, "prod"), people["bob"])

    job = approvals.job_decide(
        job=job,
        user=people["alice"],
        decision="reject",
        plan_sha256=job.plan_sha256,
        comment="not during the sale",
    )

    assert job.status == "rejected" and job.finished_at is not None
    with pytest.raises(transitions.Refused, match="is rejected; only a job awaiting approval") as r:
        approve(job, people["carol"])
    assert r.value.code == "not_awaiting"


def test_a_request_expires_unapproved(client, policed, people):
    job = requested(env(policed, "prod"), people["bob"])
    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    with pytest.raises(transitions.Refused, match="expired") as refused:
        approve(job, people["alice"])

    assert refused.value.code == "expired"
    assert Job.objects.get(pk=job.pk).status == "expired"
    assert AuditEvent.objects.filter(action="job_expired", job_id=job.pk).count() == 1
    other = requested(env(policed, "staging"), people["bob"], target="+1")
    Job.objects.filter(pk=other.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client.force_login(people["alice"])
    assert "Nothing is waiting for approval." in client.get(reverse("approvals")).content.decode()
    assert Job.objects.get(pk=other.pk).status == "awaiting_approval"  # a GET changes nothing
    assert approvals.jobs_expire() == [other.pk]  # Celery beat's task
    assert Job.objects.get(pk=other.pk).status == "expired"


def test_a_mandatory_backup_cannot_be_skipped(policed, people):
    with pytest.raises(transitions.Refused, match="backup mandatory") as refused:
        planning.job_request(
            environment=env(policed, "prod"),
            kind="upgrade",
            target=inv.STAGING_TARGET,
            user=people["bob"],
            take_backup=False,
        )

    assert refused.value.code == "backup_required"
    dev = planning.job_request(
        environment=env(policed, "dev"),
        kind="downgrade",
        target="-1",
        user=people["bob"],
        take_backup=False,
    )
    assert dev.backs_up is False


def test_a_viewer_cannot_plan_a_job(client, policed, people):
    client.force_login(people["vera"])

    response = client.post(
        reverse("job_new", args=["inventory", "dev"]), {"kind": "downgrade", "target": "-1"}
    )

    assert response.status_code == 403
    assert "vera may read dev but not change it" in response.content.decode()
    assert Job.objects.count() == 0 and len(refusals("not_requester")) == 1


# --- the promotion rule --------------------------------------------------------------------


def test_prod_may_only_move_to_what_staging_holds(policed, people):
    with pytest.raises(transitions.Refused, match="staging does not hold") as refused:
        requested(env(policed, "prod"), people["bob"], target="heads")

    assert refused.value.code == "promotion_rule"
    assert requested(env(policed, "prod"), people["bob"]).status == "awaiting_approval"


def _changes(environment: Environment, history: list[tuple[float, str, list[str]]]) -> None:
    """The environment's history: the reads that changed its status or heads."""
    now = timezone.now()
    for hours_ago, status, heads in history:
        StateChange.objects.create(
            environment=environment, at=now - timedelta(hours=hours_ago), status=status, heads=heads
        )


def test_the_promotion_rule_counts_the_hours_staging_held_the_target(policed, people):
    staging, prod = env(policed, "staging"), env(policed, "prod")
    prod.promotion_min_hours = 24
    prod.save()
    job = planned(prod, people["bob"])
    staging.changes.all().delete()
    _changes(
        staging,
        [
            (50, "behind", [inv.PROD_TARGET]),  # before: not yet
            (30, "behind", [inv.STAGING_TARGET]),  # held from here…
            (20, "unreachable", []),  # …a failed read says nothing…
            (1, "current", [inv.HEAD]),  # …and a newer revision holds it too
        ],
    )
    now = timezone.now()

    verdict = promotion.promotion_verdict(job, now=now)
    assert verdict.ok, verdict.text
    assert "staging has held" in verdict.text and "for at least 30.0 h" in verdict.text

    too_soon = promotion.promotion_verdict(job, now=now - timedelta(hours=10))
    assert not too_soon.ok and "for only 20.0 h; the policy asks for 24 h" in too_soon.text
    assert too_soon.eligible_at == verdict.held_since + timedelta(hours=24)


def test_a_failing_promotion_rule_refuses_the_request_with_the_date_it_would_pass(policed, people):
    prod = env(policed, "prod")
    prod.promotion_min_hours = 48
    prod.save()

    with pytest.raises(
        transitions.Refused, match=r"for only \d+ min; the policy asks for 48 h"
    ) as r:
        requested(prod, people["bob"])

    assert "Eligible from" in str(r.value)


# --- the last gate: the worker -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_put_in_the_queue_behind_the_services_back_is_refused_by_the_worker(
    policed, people, settings
):
    settings.CELERY_TASK_DEFAULT_QUEUE = "retort-test-unconsumed"
    prod = env(policed, "prod")
    job = requested(prod, people["bob"])
    approve(job, people["alice"])
    Job.objects.filter(pk=job.pk).update(status="queued")  # a direct database edit

    job = execution.job_run(job_id=job.pk)  # what the Celery task runs

    assert job.status == "failed"
    assert "needs 2 approvals of this exact plan and 1 is missing" in job.error
    assert prod.stored_state().heads == [inv.PROD_TARGET]
    assert Job.objects.get(pk=job.pk).backup is None


# --- two approvers at the same moment ------------------------------------------------------


def _at_once(job: Job, names: list[str], people) -> list[str]:
    barrier = threading.Barrier(len(names))
    outcomes: list[str] = []

    def decide(name: str) -> None:
        from django.db import connection

        try:
            barrier.wait()
            approve(job, people[name])
            outcomes.append("approved")
        except transitions.Refused as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("environment", "approvers", "refused"),
    [("staging", ["alice", "carol"], 1), ("prod", ["alice", "carol", "dave"], 1)],
)
def test_approvers_at_the_same_moment_give_exactly_the_required_approvals(
    policed, people, settings, environment, approvers, refused
):
    settings.CELERY_TASK_DEFAULT_QUEUE = "retort-test-unconsumed"
    target = "+1" if environment == "staging" else inv.STAGING_TARGET
    job = requested(env(policed, environment), people["bob"], target=target)
    required = env(policed, environment).required_approvals

    outcomes = _at_once(job, approvers, people)

    assert outcomes.count("approved") == required
    assert outcomes.count("enough_approvals") + outcomes.count("not_awaiting") == refused
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.approvals.count() == required
    assert AuditEvent.objects.filter(action="job_queued", job_id=job.pk).count() == 1


# --- the API -------------------------------------------------------------------------------


def _api(client, method: str, url: str, token: str, body: dict | None = None):
    return getattr(client, method)(
        url, body or {}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_ci_requests_a_prod_job_over_the_api_and_its_creator_cannot_approve_it(
    client, policed, people
):
    _, bob_token = ApiToken.issue(user=people["bob"], name="ci")
    _, alice_token = ApiToken.issue(user=people["alice"], name="laptop")
    create = reverse("api_job_create", args=["inventory", "prod"])

    made = _api(
        client, "post", create, bob_token, {"kind": "upgrade", "target": inv.STAGING_TARGET}
    )
    assert made.status_code == 201, made.content
    job = made.json()
    assert job["status"] == "awaiting_approval" and job["approvals"]["required"] == 2
    assert job["requested_by"] == "bob" and job["take_backup"] is True
    planning.job_preview_sql(job_id=job["id"])
    plan = _api(client, "get", reverse("api_job", args=[job["id"]]), bob_token).json()

    self_approval = _api(
        client,
        "post",
        reverse("api_job_action", args=[job["id"], "approve"]),
        bob_token,
        {"plan_sha256": plan["plan_sha256"]},
    )
    assert self_approval.status_code == 403
    assert self_approval.json()["code"] == "self_approval"

    approved = _api(
        client,
        "post",
        reverse("api_job_action", args=[job["id"], "approve"]),
        alice_token,
        {"plan_sha256": plan["plan_sha256"], "comment": "from the API"},
    )
    assert approved.status_code == 200
    assert approved.json()["approvals"]["approved_by"][0]["user"] == "alice"
    assert approved.json()["approvals"]["given"] == 1


def test_api_writes_take_a_live_token_never_a_session(client, policed, people):
    create = reverse("api_job_create", args=["inventory", "dev"])
    body = {"kind": "downgrade", "target": "-1"}
    client.force_login(people["bob"])
    assert client.post(create, body, content_type="application/json").status_code == 403
    client.logout()
    token_row, token = ApiToken.issue(user=people["bob"], name="ci")

    assert token not in str(list(ApiToken.objects.values_list()))  # only its SHA-256 is kept
    assert _api(client, "post", create, token, {"kind": "bogus"}).status_code == 400
    client.force_login(people["bob"])
    client.post(reverse("token_revoke", args=[token_row.pk]))
    client.logout()
    assert _api(client, "post", create, token, body).status_code == 401
    assert AuditEvent.objects.filter(action="api_token_revoked").count() == 1


def test_a_person_creates_a_token_sees_it_once_and_it_works(client, policed, people):
    client.force_login(people["bob"])

    created = client.post(reverse("tokens"), {"name": "CI on main"})
    page = client.get(created["Location"]).content.decode()
    token = page.split('id="token-value">')[1].split("<")[0]
    reloaded = client.get(reverse("tokens")).content.decode()  # a reload after creating one
    assert created.status_code == 302
    assert token.startswith("rt_")
    assert token not in reloaded
    assert ApiToken.objects.filter(user=people["bob"]).count() == 1
    client.logout()
    response = client.get(reverse("api_job", args=[999]), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 404  # authenticated: the job simply does not exist
    created = AuditEvent.objects.get(action="api_token_created")
    assert created.actor_name == "bob" and token not in created.details_json


# --- the approvals page --------------------------------------------------------------------


def test_the_approvals_page_shows_plan_sql_findings_other_environments_and_the_verdict(
    client, policed, people
):
    job = requested(env(policed, "prod"), people["bob"])
    client.force_login(people["alice"])

    page = client.get(reverse("approvals")).content.decode()

    assert f"Job #{job.pk}</a>: upgrade inventory / <strong>prod</strong>" in page
    assert "UPDATE alembic_version SET version_num=" in page  # the SQL for this database
    assert "drops column" in page.lower() or "drop" in page.lower()  # the findings
    assert 'id="other-environments-' in page and ">staging</a>" in page
    assert "Promotion rule:</strong> staging holds" in page
    assert f'id="approve-{job.pk}"' in page
    assert '<span class="count" data-testid="approvals-count">1</span>' in page


def test_the_findings_an_approver_reads_are_those_of_the_steps_the_job_runs(policed, people):
    upgrade = planned(env(policed, "prod"), people["bob"])
    downgrade = planned(env(policed, "dev"), people["bob"], target="-4", kind="downgrade")
    stamp = planned(env(policed, "dev"), people["bob"], target=inv.PROD_TARGET, kind="stamp")

    upgrade_says = " / ".join(f["detail"] for f in upgrade.findings)
    assert "drops column products.legacy_flag" in upgrade_says  # its upgrade() drops it
    assert "users.email" not in upgrade_says  # only its downgrade() drops that
    assert {f["function"] for f in downgrade.findings} == {"downgrade"}
    assert "drops column users.email" not in " ".join(f["detail"] for f in downgrade.findings)
    assert stamp.findings == []  # a stamp runs no revision code
    assert f"SET version_num='{inv.PROD_TARGET}'" in stamp.sql_preview


def test_the_admin_approves_through_the_same_gate(admin_client, policed, people):
    job = requested(env(policed, "prod"), people["bob"])

    response = admin_client.post(
        "/admin/environments/job/", {"action": "approve", "_selected_action": [job.pk]}
    )

    # The admin is a superuser, yet not in prod's approver group: refused like anyone else.
    assert any(
        "only members of release_manager may" in str(m) for m in get_messages(response.wsgi_request)
    )
    assert Approval.objects.count() == 0
    assert wait_for(lambda: len(refusals("not_approver")) == 1, seconds=1)


def test_a_hung_database_costs_the_approvals_page_nothing_it_shows_what_a_worker_stored(
    client, policed, people, silent_server, settings
):
    settings.RETORT_CONNECT_TIMEOUT = 2
    staging = env(policed, "staging")
    waiting = [requested(staging, people["bob"], target=inv.HEAD) for _ in range(5)]
    staging.set_url(f"postgresql://postgres@127.0.0.1:{silent_server}/hung")
    staging.save()
    client.force_login(people["alice"])

    started = time.monotonic()
    before = client.get(reverse("approvals")).content.decode()
    elapsed = time.monotonic() - started
    reads.environment_read(environment=staging)  # what the next scheduled read stores
    after = client.get(reverse("approvals")).content.decode()

    assert all(f"Job #{job.pk}</a>" in before for job in waiting)
    assert elapsed < 1, f"took {elapsed:.1f} s: the page connected to the hung database"
    assert "cannot be read" not in before
    assert after.count("cannot be read, so no job can be planned") == 5


def test_request_job_wait_says_at_once_that_the_job_awaits_approval(policed, people):
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "request_job", "inventory", "prod", "--kind", "upgrade",
            "--target", inv.STAGING_TARGET, "--as", "bob", "--wait", "--timeout", "1",
            stdout=out, stderr=err,
        )  # fmt: skip

    job = Job.objects.get()
    assert exit_info.value.code == 1
    assert err.getvalue().startswith(
        f"job #{job.pk} is awaiting approval: 2 more approvals needed (/jobs/{job.pk}/); "
        "waiting up to 1 s."
    )
    assert "is still awaiting approval after 1 s; it goes on without this command" in err.getvalue()
    assert json.loads(out.getvalue())["status"] == "awaiting_approval"
