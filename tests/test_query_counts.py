"""Pages that show every environment of a project do not make a query per environment
(issue #17): the drift page and the revision panel cost as many queries with 30 environments as
with 3. Real SQLite targets, really read and checked; the queries counted are the page's own."""

from __future__ import annotations

import shutil

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from environments import drift, reads
from examples.inventory import revisions as inv

pytestmark = pytest.mark.django_db


@pytest.fixture
def project_of(make_project, inventory, demo_templates, tmp_path):
    """A project named `inv<N>` whose N environments are real copies of the demo's databases,
    read once (as a worker would) and checked for drift."""

    def make(count: int):
        urls = {}
        for n in range(count):
            template = ("dev", "staging", "prod")[n % 3]
            path = tmp_path / f"inv{count}-{n}.sqlite"
            shutil.copy(demo_templates / f"{template}.sqlite", path)
            urls[f"env-{n:02d}"] = f"sqlite:///{path}"
        project = make_project(inventory, urls, name=f"inv{count}")
        environments = list(project.environments.select_related("project"))
        reads.environments_read(environments=environments)
        drift.drift_record(project=project)
        return project

    return make


def queries(client, url: str) -> int:
    client.get(url)  # warm: the session, the scripts' index
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_the_drift_page_costs_the_same_queries_for_3_and_30_environments(client, users, project_of):
    small, large = project_of(3), project_of(30)
    client.force_login(users["bob"])

    few = queries(client, reverse("project_drift", args=[small.slug]))
    many = queries(client, reverse("project_drift", args=[large.slug]))
    page = client.get(reverse("project_drift", args=[large.slug])).content.decode()

    assert few == many, f"{few} queries with 3 environments, {many} with 30"
    assert page.count("<th>env-") == 30  # and it shows all thirty


def test_the_revision_panel_costs_the_same_queries_for_3_and_30_environments(
    client, users, project_of
):
    small, large = project_of(3), project_of(30)
    client.force_login(users["bob"])

    few = queries(client, reverse("revision_panel", args=[small.slug, inv.CREATE_SHIPMENTS]))
    many = queries(client, reverse("revision_panel", args=[large.slug, inv.CREATE_SHIPMENTS]))
    panel = client.get(reverse("revision_panel", args=[large.slug, inv.CREATE_SHIPMENTS]))

    assert few == many, f"{few} queries with 3 environments, {many} with 30"
    assert "env-29" in panel.content.decode()  # 30 environments, each placed
