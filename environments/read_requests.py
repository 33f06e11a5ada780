"""Asking the workers to read: Celery beat sends the reads that are due in batches
(`reads_send_due`), a person's Refresh sends one at once (`read_request`). What a read finds
is stored by environments/reads.py, on the worker."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from environments import dispatch
from environments.models import CurrentState, Environment

logger = logging.getLogger(__name__)


def read_request(*, environment: Environment) -> bool:
    """A person's Refresh: a worker reads the environment at once, and the card follows until
    the read is stored. False when the broker could not take it (nothing is left waiting)."""
    now = timezone.now()
    CurrentState.objects.update_or_create(environment=environment, defaults={"requested_at": now})
    if dispatch.send("environment_refresh", environment.pk):
        return True
    CurrentState.objects.filter(environment=environment, requested_at=now).update(requested_at=None)
    return False


def reads_send_due(*, now=None) -> int:
    """Send the workers every environment whose newest read is older than
    RETORT_REFRESH_SECONDS (or that was never read) and whose read was not sent within that
    time, RETORT_READ_BATCH to a task; returns how many were sent. A batch the broker cannot
    take is sent again at the next tick."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RETORT_REFRESH_SECONDS)
    due = (
        Environment.objects.filter(
            Q(current_state__isnull=True)
            | Q(current_state__checked_at__isnull=True)
            | Q(current_state__checked_at__lt=cutoff)
        )
        .filter(Q(current_state__queued_at__isnull=True) | Q(current_state__queued_at__lt=cutoff))
        .filter(gone_at__isnull=True)  # a tenant its server no longer lists
        .order_by("pk")
    )
    ids = list(due.values_list("pk", flat=True))
    CurrentState.objects.ensure(ids)
    sent = 0
    size = max(settings.RETORT_READ_BATCH, 1)
    for start in range(0, len(ids), size):
        batch = ids[start : start + size]
        marked = CurrentState.objects.filter(environment_id__in=batch)
        marked.update(queued_at=now)
        if dispatch.send("environments_refresh", batch):
            sent += len(batch)
        else:
            marked.update(queued_at=None)
            logger.warning("%d reads wait for the broker", len(ids) - start)
            break
    return sent
