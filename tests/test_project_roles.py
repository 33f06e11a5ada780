"""Roles per project: a person's role can be granted for one project (developer on one,
viewer elsewhere); global groups stay the default. Pages, the API, the admin's approvals and
the commands all check the project."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse

from environments import approvals, planning, transitions
from environments.models import ApiToken, AuditEvent, Job, ProjectRole
from examples.inventory import revisions as inv
from tests.conftest import env, planned

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects(demo_project, make_project, inventory, tmp_path, sqlite_url):
    """`inventory` (the demo) and `billing`, another team's project on the same scripts."""
    from tests.conftest import alembic

    url = sqlite_url("billing")
    alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
    billing = make_project(inventory, {"prod": url}, name="billing", slug="billing")
    return demo_project, billing


@pytest.fixture
def dave(users):
    """A viewer everywhere, and a developer of billing only."""
    user = get_user_model().objects.create_user("dave", password="pw-dave")
    user.groups.add(Group.objects.get(name="viewer"))
    return user


def test_a_developer_of_one_project_may_request_jobs_there_and_nowhere_else(two_projects, dave):
    inventory, billing = two_projects
    ProjectRole.objects.create(project=billing, user=dave, role="developer")

    job = planning.job_request(
        environment=env(billing, "prod"), kind="upgrade", target="heads", user=dave
    )
    with pytest.raises(transitions.Refused, match="developer or release manager role in inventory"):
        planning.job_request(
            environment=env(inventory, "dev"), kind="downgrade", target="-1", user=dave
        )

    assert job.status == Job.Status.PLANNED
    refused = AuditEvent.objects.get(action="job_refused")
    assert refused.details["reason"] == "not_requester" and refused.actor_name == "dave"


def test_the_pages_and_the_api_refuse_another_projects_developer_with_403(
    client, two_projects, dave
):
    inventory, billing = two_projects
    ProjectRole.objects.create(project=billing, user=dave, role="developer")
    _, token = ApiToken.issue(user=dave, name="ci")
    client.force_login(dave)

    page = client.post(
        reverse("job_new", args=["inventory", "dev"]), {"kind": "downgrade", "target": "-1"}
    )
    api = client.post(
        reverse("api_job_create", args=["inventory", "dev"]),
        {"kind": "downgrade", "target": "-1"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    own = client.post(
        reverse("api_job_create", args=["billing", "prod"]),
        {"kind": "upgrade", "target": "heads"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    inventory_page = client.get(reverse("environment_detail", args=["inventory", "dev"]))
    billing_page = client.get(reverse("environment_detail", args=["billing", "prod"]))

    assert page.status_code == 403
    assert api.status_code == 403 and api.json()["code"] == "not_requester"
    assert own.status_code == 201
    assert 'name="kind"' not in inventory_page.content.decode()  # no form for a viewer
    assert 'name="kind"' in billing_page.content.decode()


def test_the_command_line_checks_the_project_too(two_projects, dave):
    ProjectRole.objects.create(project=two_projects[1], user=dave, role="developer")

    with pytest.raises(CommandError, match="role in inventory"):
        call_command(
            "request_job", "inventory", "dev", "--kind", "downgrade", "--target", "-1",
            "--as", "dave", stdout=StringIO(),
        )  # fmt: skip


def test_a_grant_can_lower_a_global_role_in_one_project(two_projects, users):
    inventory, billing = two_projects
    bob = users["bob"]  # a developer everywhere…
    ProjectRole.objects.create(project=billing, user=bob, role="viewer")  # …but here

    with pytest.raises(transitions.Refused):
        planning.job_request(
            environment=env(billing, "prod"), kind="upgrade", target="heads", user=bob
        )
    assert planning.job_request(
        environment=env(inventory, "dev"), kind="downgrade", target="-1", user=bob
    )


def test_a_release_manager_of_one_project_approves_there_only(two_projects, users, dave):
    inventory, billing = two_projects
    for project in (inventory, billing):
        prod = env(project, "prod")
        prod.required_approvals = 1
        prod.approver_group = Group.objects.get(name="release_manager")
        prod.promotion_from = None
        prod.save()
    ProjectRole.objects.create(project=billing, user=dave, role="release_manager")
    bob = users["bob"]
    theirs = approvals.job_submit(job=planned(env(billing, "prod"), bob, target="heads"), user=bob)
    other = approvals.job_submit(job=planned(env(inventory, "prod"), bob), user=bob)

    approved = approvals.job_decide(
        job=theirs, user=dave, decision="approve", plan_sha256=theirs.plan_sha256
    )
    with pytest.raises(transitions.Refused, match="may not approve or reject jobs for prod"):
        approvals.job_decide(
            job=other, user=dave, decision="approve", plan_sha256=other.plan_sha256
        )

    assert approved.approvals_counted().count() == 1


def test_granting_and_revoking_a_role_is_audited(two_projects, dave):
    grant = ProjectRole.objects.create(project=two_projects[1], user=dave, role="developer")
    grant.delete()

    granted, revoked = (
        AuditEvent.objects.get(action="project_role_granted"),
        AuditEvent.objects.get(action="project_role_revoked"),
    )
    assert granted.details == {"user": "dave", "role": "developer"}
    assert granted.project_slug == revoked.project_slug == "billing"


def test_an_admin_grants_a_role_on_the_projects_page(admin_client, two_projects, dave):
    billing = two_projects[1]
    form = {
        "name": billing.name,
        "slug": billing.slug,
        "alembic_ini": billing.alembic_ini,
        "version_locations": "[]",
        "version_table": billing.version_table,
        "multiple_heads": "auto",
        "command": '["python", "-m", "alembic", "-c", "alembic.ini"]',
        "url_env_var": billing.url_env_var,
        "environments-TOTAL_FORMS": "0",
        "environments-INITIAL_FORMS": "0",
        "roles-TOTAL_FORMS": "1",
        "roles-INITIAL_FORMS": "0",
        "roles-0-user": str(dave.pk),
        "roles-0-role": "developer",
    }

    response = admin_client.post(
        reverse("admin:environments_project_change", args=[billing.pk]), form
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ProjectRole.objects.get(project=billing, user=dave).role == "developer"
    assert AuditEvent.objects.filter(action="project_role_granted").count() == 1
