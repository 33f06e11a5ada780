"""The JSON API (`/api/v1/`): every environment's status (the CI gate), a project's revision
graph, jobs (CI requests a job and reads its status; people approve, reject, cancel, queue) and
rollouts (asked for, read, approved, paused, resumed, retried, cancelled).
The same services as the pages, so the same rules and refusals.

Reads take a session or a bearer token; writes take a bearer token only (so they need no CSRF
token and a browser's cookies can never make one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from environments import (
    approvals,
    dispatch,
    forms,
    graph_view,
    overviews,
    planning,
    reviews,
    rollout_plans,
    rollouts,
    transitions,
)
from environments.models import Environment, Job, Project, Rollout
from environments.rollout_board import rollout_json
from environments.rollout_forms import rollout_form_from_api
from environments.tokens import api_login_required


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def job_json(job: Job, user) -> dict:
    state = reviews.approval_state(job, user, check_plan=False)
    environment = job.environment

    def people(items) -> list[dict]:
        return [{"user": a.username, "at": _iso(a.created_at), "comment": a.comment} for a in items]

    return {
        "id": job.pk,
        "url": job.get_absolute_url(),
        "project": environment.project.slug,
        "environment": environment.slug,
        "kind": job.kind,
        "target": job.target,
        "status": job.status,
        "from_heads": job.from_heads,
        "to_heads": job.to_heads,
        "revisions": job.revisions,
        "findings": job.findings,
        "take_backup": job.backs_up,
        "sql_status": job.sql_status,
        "sql_sha256": job.sql_sha256 or None,
        "plan_sha256": job.plan_sha256,
        "requested_by": job.requested_by.username if job.requested_by else None,
        "reason": job.reason,
        "created_at": _iso(job.created_at),
        "submitted_at": _iso(job.submitted_at),
        "expires_at": _iso(job.expires_at),
        "queued_at": _iso(job.queued_at),
        "dispatch": dispatch.BROKER_DOWN if job.awaiting_broker else None,
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result_heads": job.result_heads,
        "backup": job.backup.path if job.backup else None,
        "error": job.error or None,
        "run_limits": job.run_limits or None,
        "lock_wait": job.lock_waits or None,  # while it waits for a lock: who holds it
        "approvals": {
            "required": state.required,
            "given": state.given,
            "approved_by": people(state.counted),
            "rejected_by": people(state.rejected),
            "stale": people(state.stale),
        },
        "promotion": {
            "applies": state.verdict.applies,
            "ok": state.verdict.ok,
            "text": state.verdict.text,
        },
    }


def _refused(exc: transitions.Refused) -> JsonResponse:
    code = getattr(exc, "code", "") or "refused"
    return JsonResponse({"error": str(exc), "code": code}, status=transitions.refusal_status(exc))


def _api_write(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """POST with a bearer token and a JSON object body (passed to the view as `body`)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if getattr(request, "api_token", None) is None:
            return JsonResponse(
                {"error": "Writes take an API token: send 'Authorization: Bearer <token>'."},
                status=403,
            )
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return JsonResponse({"error": "The body must be a JSON object."}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"error": "The body must be a JSON object."}, status=400)
        return view(request, *args, body=body, **kwargs)

    return csrf_exempt(require_POST(api_login_required(wrapper)))


def _text(body: dict, key: str, default: str = "") -> str:
    value = body.get(key, default)
    return value.strip() if isinstance(value, str) else default


@_api_write
def job_create(request: HttpRequest, project_slug: str, env_slug: str, *, body: dict):
    """Plan a job and (unless `"submit": false`) ask for it to run; 201 with the job."""
    environment = get_object_or_404(
        Environment.objects.select_related("project"), project__slug=project_slug, slug=env_slug
    )
    form = forms.job_request_from_api(body, environment)
    if not form.is_valid():
        return JsonResponse({"error": form.errors_sentence(), "code": "bad_request"}, status=400)
    plan = {"user": request.user, **form.request()}
    try:
        if body.get("submit", True):
            job = approvals.job_request_and_submit(**plan)
        else:
            job = planning.job_request(**plan)
    except transitions.Refused as exc:
        return _refused(exc)
    job.refresh_from_db()
    return JsonResponse(job_json(job, request.user), status=201)


@require_GET
@api_login_required
def job_read(request: HttpRequest, job_id: int) -> JsonResponse:
    job = get_object_or_404(Job.objects.select_related("environment__project"), pk=job_id)
    return JsonResponse(job_json(job, request.user))


@_api_write
def job_action(request: HttpRequest, job_id: int, action: str, *, body: dict):
    """approve / reject (with the `plan_sha256` read, a `comment`), cancel, queue, replan."""
    job = get_object_or_404(Job.objects.select_related("environment__project"), pk=job_id)
    try:
        if action in ("approve", "reject"):
            claimed = None
            if body.get("project") or body.get("environment"):
                claimed = (
                    Environment.objects.select_related("project")
                    .filter(project__slug=_text(body, "project"), slug=_text(body, "environment"))
                    .first()
                )
                if claimed is None:
                    return JsonResponse({"error": "No such project/environment."}, status=404)
            job = approvals.job_decide(
                job=job,
                user=request.user,
                decision=action,
                plan_sha256=_text(body, "plan_sha256"),
                comment=_text(body, "comment"),
                claimed=claimed,
            )
        elif action == "cancel":
            job = planning.job_cancel(job=job, user=request.user)
        elif action == "queue":
            job = approvals.job_queue(job=job, user=request.user)
        elif action == "replan":
            job, _ = planning.job_replan(job=job, user=request.user)
        elif action == "sql":
            job = planning.job_sql_request(job=job, user=request.user)
        else:
            return JsonResponse({"error": f"No action {action!r}."}, status=404)
    except transitions.Refused as exc:
        return _refused(exc)
    job.refresh_from_db()
    return JsonResponse(job_json(job, request.user))


@require_GET
@api_login_required
def api_status(request: HttpRequest) -> JsonResponse:
    """The same objects `manage.py migration_status --json` prints; an unknown project or
    environment is a 404 (the command exits 2), never an empty list a CI gate could pass on."""
    wanted = request.GET.get("project")
    projects = overviews.projects_listed()
    projects = projects.filter(slug=wanted) if wanted else projects
    if wanted and not projects.exists():
        return JsonResponse({"error": f"No project {wanted!r}.", "code": "not_found"}, status=404)
    try:
        wanted_cards = overviews.CardFilter.parse(
            request.GET.getlist("status"), request.GET.getlist("label")
        )
    except ValueError as exc:
        return JsonResponse({"error": str(exc), "code": "bad_request"}, status=400)
    built = overviews.overview_build(projects=projects)
    env_filter = request.GET.get("env")
    cards = [
        (overview, card)
        for overview in built
        for card in overview.cards
        if not env_filter or env_filter in (card.environment.slug, card.environment.name)
    ]
    if env_filter and not cards:
        return JsonResponse(
            {"error": f"No environment {env_filter!r}.", "code": "not_found"}, status=404
        )
    cards = [(overview, card) for overview, card in cards if wanted_cards(card)]
    rows = [
        card.state.as_status_dict() | overview.heads_dict()
        for overview, card in cards
        if card.state is not None
    ]
    return JsonResponse(rows, safe=False)


@require_GET
@api_login_required
def api_graph(request: HttpRequest, project_slug: str) -> JsonResponse:
    project = get_object_or_404(Project, slug=project_slug)
    expand = request.GET.getlist("expand")
    view = graph_view.graph_build(
        project=project,
        environment_slug=request.GET.get("env") or None,
        expand=expand,
    )
    return JsonResponse(graph_view.graph_json(view))


@_api_write
def rollout_create(request: HttpRequest, project_slug: str, *, body: dict):
    """Ask for a rollout; a worker plans it. With `"start": true` it is submitted as soon as it
    is planned (and runs once approved, where the targets' policy asks). 201 with it."""
    project = get_object_or_404(Project, slug=project_slug)
    form = rollout_form_from_api(body)
    if not form.is_valid():
        return JsonResponse({"error": form.errors_sentence(), "code": "bad_request"}, status=400)
    try:
        rollout = rollout_plans.rollout_request(
            user=request.user, start=body.get("start") is True, **form.request(project)
        )
    except transitions.Refused as exc:
        return _refused(exc)
    return JsonResponse(rollout_json(rollout), status=201)


@require_GET
@api_login_required
def rollout_read(request: HttpRequest, rollout_id: int) -> JsonResponse:
    rollout = get_object_or_404(Rollout.objects.select_related("project"), pk=rollout_id)
    return JsonResponse(rollout_json(rollout))


@_api_write
def rollout_action(request: HttpRequest, rollout_id: int, action: str, *, body: dict):
    """submit, approve / reject (with the `plan_sha256` read, a `comment`), pause, resume,
    cancel, retry (the failed targets), skip (`environment`: its slug)."""
    rollout = get_object_or_404(Rollout.objects.select_related("project"), pk=rollout_id)
    try:
        if action in ("approve", "reject"):
            rollouts.rollout_decide(
                rollout=rollout,
                user=request.user,
                decision=action,
                plan_sha256=_text(body, "plan_sha256"),
                comment=_text(body, "comment"),
            )
        elif action == "skip":
            target = rollout.targets.filter(environment__slug=_text(body, "environment")).first()
            if target is None:
                return JsonResponse({"error": "No such target in this rollout."}, status=404)
            rollouts.rollout_skip(rollout=rollout, target=target, user=request.user)
        elif action in rollouts.ACTIONS:
            rollouts.ACTIONS[action](rollout=rollout, user=request.user)
        else:
            return JsonResponse({"error": f"No action {action!r}."}, status=404)
    except transitions.Refused as exc:
        return _refused(exc)
    rollout.refresh_from_db()
    return JsonResponse(rollout_json(rollout))
