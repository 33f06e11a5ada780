"""What the live regions of the pages share (see dashboard/lib/live.py): when each
environment was last read, the time bucket, and the nav's approvals count."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.lib import live
from environments.context_processors import navigation
from environments.models import CurrentState


def newest_reads(environments) -> list[tuple[int, str]]:
    """When each environment's newest read landed, in one query."""
    rows = (
        CurrentState.objects.filter(environment__in=environments, checked_at__isnull=False)
        .order_by("environment_id")
        .values_list("environment_id", "checked_at")
    )
    return [(pk, checked_at.isoformat()) for pk, checked_at in rows]


def time_bucket() -> int:
    """Part of every fingerprint: what a page says of time ("3 minutes ago", "eligible from
    …", a revision file edited on disk) is brought up to date every
    RETORT_LIVE_REFRESH_SECONDS (default 60) at most."""
    return int(timezone.now().timestamp() // settings.RETORT_LIVE_REFRESH_SECONDS)


@require_GET
@live.login_required_live
def nav_live(request: HttpRequest) -> HttpResponse:
    """The nav's approvals count, for the poll every page makes."""
    context = navigation(request)
    return live.live_response(
        request,
        context["nav_key"],
        lambda: render(request, "base.html#nav-approvals", context),
    )
