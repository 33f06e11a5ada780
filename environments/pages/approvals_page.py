"""The approvals list: every job waiting for approval with what its approvers need, live."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.lib import live
from environments.models import Approval, CurrentState, Environment, Job
from environments.pages import jobs_page, live_parts


@require_GET
@login_required
def approvals_queue(request: HttpRequest) -> HttpResponse:
    """Requests awaiting approval, each with everything needed to decide on it, judged by the
    environments' stored states (a page never connects to a target; the buttons' POSTs read)."""
    return render(request, "environments/approvals.html", _approval_requests(request.user))


@require_GET
@live.login_required_live
def approvals_live(request: HttpRequest) -> HttpResponse:
    """The approvals list, for its poll: plans judged by the environments' stored reads."""
    key = _approvals_key()
    return live.live_response(
        request,
        key,
        lambda: render(
            request,
            "environments/approvals.html#requests",
            _approval_requests(request.user, key=key),
        ),
    )


def _waiting_jobs():
    """Requests awaiting approval, those past their expiry left out (Celery beat's
    `jobs_expire` marks them expired; a page changes nothing)."""
    unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    waiting = Job.objects.filter(unexpired, status=Job.Status.AWAITING_APPROVAL)
    return waiting.order_by("submitted_at", "id")


def _approvals_key() -> str:
    """The approvals list as a fingerprint: the waiting jobs and their plans, the newest
    decision, and the newest read of each environment of their projects."""
    waiting = list(
        _waiting_jobs().values_list(
            "id", "sql_sha256", "scripts_sha256", "replanned_at", "expires_at"
        )
    )
    decisions = Approval.objects.aggregate(newest=Max("id"))["newest"]
    projects = _waiting_jobs().values("environment__project")
    newest = live_parts.newest_reads(Environment.objects.filter(project__in=projects))
    return live.fingerprint(waiting, decisions, newest, live_parts.time_bucket())


def _approval_requests(user, *, key: str | None = None) -> dict:
    key = key or _approvals_key()  # before reading: see _job_page
    waiting = _waiting_jobs().select_related(
        "environment__project",
        "environment__promotion_from",
        "environment__approver_group",
        "requested_by",
        "restore_from",
    )
    environments = list({job.environment_id: job.environment for job in waiting}.values())
    states = CurrentState.objects.of(environments)
    requests = [
        {"job": job}
        | jobs_page.review(
            job,
            user,
            states.get(job.environment_id),
            check_plan=states.get(job.environment_id) is not None,
        )
        for job in waiting
    ]
    decided = Approval.objects.select_related("job__environment__project").order_by(
        "-created_at", "-id"
    )[:20]
    return {"requests": requests, "decided": decided, "live_key": key}
