"""A job's page (its plan, approvals, SQL and log, live) and what a person can do there:
plan a job from an environment's page, queue, cancel, re-plan, approve or reject."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib import live
from environments import (
    approvals,
    forms,
    overviews,
    planning,
    rehearsals,
    reviews,
    roles,
    safe_runs,
    transitions,
)
from environments.models import Approval, Environment, Job
from environments.pages import environments_page, live_parts, lookup


@require_POST
@login_required
def job_new(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = lookup.get_environment(project_slug, env_slug)
    form = forms.job_request_from_page(request.POST, environment)
    try:
        if not form.is_valid():
            raise transitions.Refused(form.errors_sentence())  # no code: a 400
        job = planning.job_request(user=request.user, **form.request())
    except transitions.Refused as exc:
        card = overviews.environment_card(environment=environment, refresh=False)
        detail = overviews.environment_detail_build(card=card)
        context = {"card": card, "detail": detail, "job_error": str(exc)}
        context |= environments_page.job_offer(environment, detail.index, request.user)
        # the form as it was sent, so nothing typed is lost
        context["job_form"] = {
            "kind": form.data["kind"],
            "target": request.POST.get("target", ""),
            "target_text": request.POST.get("target_text", ""),
            "reason": request.POST.get("reason", ""),
            "take_backup": form.data["take_backup"],
        }
        return render(
            request,
            "environments/environment_detail.html",
            context,
            status=transitions.refusal_status(exc),
        )
    return redirect(job)


@require_GET
@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = lookup.get_job(job_id)
    return render(request, "environments/job_detail.html", _job_page(job, request.user))


def _job_page(job: Job, user, error: str | None = None, *, key: str | None = None) -> dict:
    """Everything the job page shows, the plan judged by the environment's stored state (a
    page never connects to a target; approving or queueing reads it again). The live region's
    fingerprint (`key`, else worked out here) is taken before anything is read, so a change
    that lands while the page renders makes the next poll render again rather than be lost."""
    key = key or _job_key(job)
    lines = list(job.log_lines.order_by("-seq")[:2000])[::-1]
    # buttons a person may not use are not shown (the services still refuse them)
    may_change = roles.may_act_on_jobs(user, job.environment)
    state = job.environment.stored_state()
    reviewed = review(job, user, state, check_plan=state is not None)
    return {
        "job": job,
        "log_lines": lines,
        "job_error": error,
        "may_change": may_change,
        "live_key": key,
        "lock_blocked": safe_runs.review_refusal(job),
        "lock_extra": safe_runs.review_extra(job),
    } | reviewed


def _rehearsed(job: Job) -> tuple[Job, str] | None:
    """The newest finished rehearsal of this plan, and what it found in a sentence."""
    if job.kind == Job.Kind.REHEARSE:
        return (job, rehearsals.summary(job)) if job.is_finished else None
    found = rehearsals.latest_for(job)
    return (found, rehearsals.summary(found)) if found is not None else None


def _job_key(job: Job) -> str:
    """What the job page's live region shows, as a fingerprint: the job's row, its newest log
    line, its decisions, and the newest read of each of the project's environments (which may
    outdate the plan, or move the promotion rule's verdict)."""
    newest_line = job.log_lines.aggregate(seq=Max("seq"))["seq"]
    decisions = job.approvals.aggregate(newest=Max("id"))["newest"]
    reads = live_parts.newest_reads(Environment.objects.filter(project=job.environment.project_id))
    return live.fingerprint(
        job.status,
        job.sql_status,
        job.plan_sha256,
        job.progress_done,
        job.backup_id,
        job.error,
        job.started_at,
        job.finished_at,
        job.worker_host,
        job.dispatched_at,
        job.expires_at,
        job.replanned_at,
        job.lock_wait,
        job.proof,
        job.rehearsals.aggregate(done=Max("finished_at"))["done"],
        newest_line,
        decisions,
        reads,
        live_parts.time_bucket(),
    )


def review(job: Job, user, state=None, *, check_plan: bool = True) -> dict:
    """What an approver reads: the policy's verdicts, the approvals, the other environments.
    `state`: the environment's read to judge the plan by (None: it is read now)."""
    return {
        "approval": reviews.approval_state(job, user, state=state, check_plan=check_plan),
        "others": reviews.other_environments(job),
        "policy": environments_page.policy_lines(job.environment),
        "may_request": roles.may_request(user, job.environment.project),
        "rehearsed": _rehearsed(job),
    }


@require_GET
@live.login_required_live
def job_live(request: HttpRequest, job_id: int) -> HttpResponse:
    """The part of the job page that changes (status, approvals, SQL, log): htmx polls it with
    the fingerprint it shows; 204 while nothing changed, 286 once the job is over."""
    job = lookup.get_job(job_id)
    key = _job_key(job)
    return live.live_response(
        request,
        key,
        lambda: render(
            request,
            "environments/job_detail.html#live",
            _job_page(job, request.user, key=key) | {"oob_nav": True},
        ),
        final=job.settled,
    )


@require_POST
@login_required
def job_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    job = lookup.get_job(job_id)
    try:
        if action == "queue":
            approvals.job_queue(job=job, user=request.user)
        elif action == "cancel":
            planning.job_cancel(job=job, user=request.user)
        elif action == "replan":
            planning.job_replan(job=job, user=request.user)
        elif action == "rehearse":
            return redirect(rehearsals.rehearsal_request(job=job, user=request.user))
        elif action == "sql":
            planning.job_sql_request(job=job, user=request.user)
        else:
            raise Http404("No such action.")
    except transitions.Refused as exc:
        return _refused(request, job, exc)
    return redirect(job)


def _refused(request: HttpRequest, job: Job, exc: transitions.Refused) -> HttpResponse:
    """The job's page again, with the refusal in words and its HTTP status."""
    job.refresh_from_db()
    context = _job_page(job, request.user, str(exc))
    return render(
        request, "environments/job_detail.html", context, status=transitions.refusal_status(exc)
    )


@require_POST
@login_required
def job_decide(
    request: HttpRequest, project_slug: str, env_slug: str, job_id: int, decision: str
) -> HttpResponse:
    """Approve or reject, for the plan the form showed (its SHA-256 travels with the form)."""
    claimed = lookup.get_environment(project_slug, env_slug)
    job = lookup.get_job(job_id)
    if decision not in Approval.Decision.values:
        raise Http404("Approve or reject.")
    try:
        job = approvals.job_decide(
            job=job,
            user=request.user,
            decision=decision,
            plan_sha256=request.POST.get("plan_sha256", ""),
            comment=request.POST.get("comment", ""),
            claimed=claimed,
        )
    except transitions.Refused as exc:
        return _refused(request, job, exc)
    if request.POST.get("next") == "approvals":
        return redirect("approvals")
    return redirect(job)
