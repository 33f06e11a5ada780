"""Handing work to the workers through the broker, and sending again what the broker lost.

The database is the record of what must run; a broker message is only a nudge. A job is saved
`queued` first and its message sent after the commit. When the broker cannot take it (down,
restarting, a full disk) nothing fails: the sentence on the page says so, and the dispatcher
(Celery beat) sends every queued job that no worker has taken again. A worker claims a job with
a conditional update, so a job sent twice still runs once.

Tasks are sent by name, so nothing here imports `environments.tasks` (which imports the services).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.celery import app as celery_app
from environments.models import Job

logger = logging.getLogger(__name__)

BROKER_DOWN = (
    "The broker is unreachable, so no worker has it yet; it will start when the broker is back."
)


# One broker connection per thread (kombu's are not thread-safe) and process (a forked worker
# opens its own), for the broker URL it was opened to: a worker sends one or two messages per
# job, and opening a connection costs more than the message.
_kept = threading.local()


def send(task: str, *args: object, countdown: float = 0) -> bool:
    """Send `environments.tasks.<task>` now. False, logged, when the broker cannot take it;
    never raises, so a broker outage never turns a saved change into an error page. A kept
    connection that fails is dropped and the message sent on a new one (a message sent twice
    is harmless: a job is claimed once, a coordinator's step may run any number of times)."""
    message = {
        "args": list(args),
        "queue": settings.CELERY_TASK_DEFAULT_QUEUE,
        "countdown": countdown or None,
    }
    kept = _kept_connection()
    if kept is not None:
        try:  # once, without kombu's retries: a dead connection costs one failure, not more
            celery_app.send_task(
                f"environments.tasks.{task}", connection=kept, retry=False, **message
            )
            return True
        except Exception:  # noqa: BLE001 - a connection the broker dropped: try a new one
            _kept.connection = None
            with contextlib.suppress(Exception):
                kept.release()
    connection = celery_app.connection_for_write()
    try:
        celery_app.send_task(f"environments.tasks.{task}", connection=connection, **message)
    except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
        with contextlib.suppress(Exception):
            connection.release()
        logger.warning("The broker could not take %s%s: %s", task, tuple(args), exc)
        return False
    _kept.connection, _kept.key = connection, _connection_key()
    return True


def _connection_key() -> tuple[int, str]:
    return os.getpid(), str(celery_app.conf.broker_write_url or celery_app.conf.broker_url)


def _kept_connection():
    """This thread's open connection to the broker in use, if it has one."""
    connection = getattr(_kept, "connection", None)
    if connection is None:
        return None
    if _kept.key != _connection_key():
        _kept.connection = None  # another process's (after a fork) or another broker's
        if _kept.key[0] == os.getpid():
            with contextlib.suppress(Exception):
                connection.release()
        return None
    return connection


def send_on_commit(task: str, *args: object, then: Callable[[], object] | None = None) -> None:
    """Send once the current transaction commits (never for a rolled-back one); `then` runs
    after a successful send."""

    def go() -> None:
        if send(task, *args) and then is not None:
            then()

    transaction.on_commit(go)


def job_run_on_commit(job: Job) -> None:
    """Send a queued job to the workers once its transaction commits, and note when."""
    job_id = job.pk
    send_on_commit("job_run", job_id, then=lambda: _mark(job_id, "dispatched_at"))


def job_preview_on_commit(job: Job) -> None:
    job_id = job.pk
    send_on_commit("job_preview_sql", job_id, then=lambda: _mark(job_id, "preview_sent_at"))


def _mark(job_id: int, field: str) -> None:
    Job.objects.filter(pk=job_id).update(**{field: timezone.now()})


def jobs_dispatch(*, now=None) -> list[int]:
    """Send again what no worker has taken: queued jobs whose message was never sent or has
    waited longer than `RETORT_REDISPATCH_SECONDS` (lost with a broker restart), and SQL
    previews still pending that long. Returns the ids of the jobs sent."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RETORT_REDISPATCH_SECONDS)
    sent = []
    queued = Job.objects.filter(status=Job.Status.QUEUED).filter(
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=cutoff)
    )
    for job_id in queued.values_list("pk", flat=True):
        if send("job_run", job_id):
            _mark(job_id, "dispatched_at")
            sent.append(job_id)
            logger.info("job #%s was sent to the workers again", job_id)
    previews = Job.objects.filter(
        status__in=Job.WAITING, sql_status=Job.Preview.PENDING, created_at__lt=cutoff
    ).filter(Q(preview_sent_at__isnull=True) | Q(preview_sent_at__lt=cutoff))
    for job_id in previews.values_list("pk", flat=True):
        if send("job_preview_sql", job_id):
            _mark(job_id, "preview_sent_at")
    return sent
