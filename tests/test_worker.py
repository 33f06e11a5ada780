"""Reads run in a real Celery worker process, over Redis and over the demo's embedded broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from dashboard.celery import app as celery_app
from environments import tasks
from environments.models import CurrentState
from tests.conftest import alembic, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _send(broker_url: str, queue: str, task, *args) -> None:
    """Queue a task the way the web process does, on the given broker."""
    with celery_app.connection_for_write(broker_url) as connection:
        task.apply_async(args=args, queue=queue, connection=connection)


@pytest.mark.parametrize("broker", ["settings", "embedded"])
def test_a_worker_process_reads_an_environment_and_stores_its_state(
    demo_project, start_worker, tmp_path, settings, broker
):
    broker_url = (
        settings.CELERY_BROKER_URL
        if broker == "settings"
        else f"sqla+sqlite:///{tmp_path / 'b.db'}"
    )
    queue = start_worker(broker_url)
    prod = demo_project.environments.get(slug="prod")
    CurrentState.objects.all().delete()  # never read

    _send(broker_url, queue, tasks.environment_refresh, prod.pk)

    assert wait_for(lambda: prod.stored_state() is not None)
    state = prod.stored_state()
    assert state.status == "behind"
    assert len(state.pending) == 6


def test_the_scheduled_refresh_sends_the_due_reads_in_batches_to_the_workers(
    demo_project, start_worker, settings
):
    queue = start_worker(env={"RETORT_READ_BATCH": "2"})
    CurrentState.objects.all().delete()  # never read: every environment is due

    _send(settings.CELERY_BROKER_URL, queue, tasks.environments_refresh_due)

    assert wait_for(lambda: CurrentState.objects.filter(checked_at__isnull=False).count() == 3)
    assert CurrentState.objects.filter(queued_at__isnull=False).count() == 3
    statuses = {
        s.environment.slug: s.status for s in CurrentState.objects.select_related("environment")
    }
    assert statuses == {"dev": "current", "staging": "behind", "prod": "behind"}


def test_a_task_for_a_deleted_environment_is_a_no_op(demo_project, start_worker, settings):
    queue = start_worker()
    prod = demo_project.environments.get(slug="prod")
    dev = demo_project.environments.get(slug="dev")
    gone = prod.pk
    prod.delete()
    CurrentState.objects.all().delete()

    _send(settings.CELERY_BROKER_URL, queue, tasks.environment_refresh, gone)
    _send(settings.CELERY_BROKER_URL, queue, tasks.environment_refresh, dev.pk)

    assert wait_for(lambda: dev.stored_state() is not None)
    assert CurrentState.objects.count() == 1


def test_refresh_asks_a_worker_and_the_card_follows_until_the_read_is_stored(
    client, users, demo_project, start_worker, settings
):
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    staging = demo_project.environments.get(slug="staging")
    alembic(Path(demo_project.alembic_ini), staging.get_url(), "upgrade", "head")
    client.force_login(users["alice"])
    card_url = reverse("environment_card_live", args=["inventory", "staging"])

    asked = client.post(
        reverse("environment_refresh", args=["inventory", "staging"]),
        headers={"HX-Request": "true"},
    ).content.decode()
    since = re.search(r"since=(\w+)", asked).group(1)
    assert wait_for(lambda: staging.stored_state().status == "current")
    done = client.get(card_url, {"since": since}, headers={"HX-Request": "true"})

    assert "Reading staging now…" in asked and card_url in asked
    assert done.status_code == 286  # the card, and the poll stops
    assert ">current</span>" in done.content.decode() and "Reading" not in done.content.decode()
