"""Rollouts in the browser: the list with the form to ask for one, and a rollout's page — its
plans and approval, its waves as columns of targets (live), and what a person can do: submit,
approve or reject, pause, resume, cancel, retry the failed targets, skip one."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh

from dashboard.lib import live
from environments import roles, rollout_plans, rollouts, transitions
from environments.models import Project, Rollout, RolloutTarget
from environments.rollout_board import board_build, board_key
from environments.rollout_forms import RolloutForm


def _projects(user) -> list[Project]:
    return [project for project in Project.objects.all() if roles.may_request(user, project)]


@require_GET
@login_required
def rollout_list(request: HttpRequest) -> HttpResponse:
    return _list(request, RolloutForm(), "")


def _list(request, form: RolloutForm, error: str, status: int = 200) -> HttpResponse:
    context = {
        "rollouts": Rollout.objects.select_related("project", "requested_by")[:100],
        "form": form,
        "projects": _projects(request.user),
        "chosen": request.POST.get("project", ""),
        "rollout_error": error,
    }
    return render(request, "environments/rollouts.html", context, status=status)


@require_POST
@login_required
def rollout_new(request: HttpRequest) -> HttpResponse:
    form = RolloutForm(request.POST)
    project = Project.objects.filter(slug=request.POST.get("project", "")).first()
    try:
        if project is None:
            raise transitions.Refused("Choose the project to roll out.")
        if not form.is_valid():
            raise transitions.Refused(form.errors_sentence())
        rollout = rollout_plans.rollout_request(user=request.user, **form.request(project))
    except transitions.Refused as exc:
        return _list(request, form, str(exc), transitions.refusal_status(exc))
    return redirect(rollout)


def _get(rollout_id: int) -> Rollout:
    return get_object_or_404(
        Rollout.objects.select_related("project", "requested_by"), pk=rollout_id
    )


def _page(rollout: Rollout, user, error: str = "", key: str | None = None) -> dict:
    key = key or live.fingerprint(*board_key(rollout))
    why_not = ""
    if rollout.status == Rollout.Status.AWAITING_APPROVAL:
        refusal = rollouts.decision_refusal(rollout, user, "approve", rollout.plan_sha256)
        why_not = refusal[1] if refusal else ""
    return {
        "rollout": rollout,
        "board": board_build(rollout),
        "live_key": key,
        "rollout_error": error,
        "may_act": roles.may_request(user, rollout.project),
        "may_decide": rollout.status == Rollout.Status.AWAITING_APPROVAL and not why_not,
        "why_not": why_not,
        "approvals": list(rollout.approvals.all()),
    }


@require_GET
@login_required
def rollout_detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = _get(rollout_id)
    return render(request, "environments/rollout_detail.html", _page(rollout, request.user))


@require_GET
@live.login_required_live
def rollout_live(request: HttpRequest, rollout_id: int) -> HttpResponse:
    """The changing part of the page (status, counts, waves): 204 while nothing changed, 286
    once the rollout has ended and none of its jobs runs; the whole page again once a rollout
    that was being planned is (its plans are not part of the region)."""
    rollout = _get(rollout_id)
    if request.GET.get("planning") and rollout.status != Rollout.Status.PLANNING:
        return HttpResponseClientRefresh()  # planned: the whole page, with its plans
    key = live.fingerprint(*board_key(rollout))
    final = rollout.is_finished and not rollout.targets.filter(state=RolloutTarget.State.RUNNING)
    return live.live_response(
        request,
        key,
        lambda: render(
            request,
            "environments/rollout_detail.html#live",
            _page(rollout, request.user, key=key),
        ),
        final=final,
    )


@require_POST
@login_required
def rollout_action(request: HttpRequest, rollout_id: int, action: str) -> HttpResponse:
    rollout = _get(rollout_id)
    try:
        if action in ("approve", "reject"):
            rollouts.rollout_decide(
                rollout=rollout,
                user=request.user,
                decision=action,
                plan_sha256=request.POST.get("plan_sha256", ""),
                comment=request.POST.get("comment", ""),
            )
        elif action in rollouts.ACTIONS:
            rollouts.ACTIONS[action](rollout=rollout, user=request.user)
        else:
            raise Http404("No such action.")
    except transitions.Refused as exc:
        return _refused(request, rollout, exc)
    return redirect(rollout)


@require_POST
@login_required
def rollout_skip(request: HttpRequest, rollout_id: int, target_id: int) -> HttpResponse:
    rollout = _get(rollout_id)
    target = get_object_or_404(
        RolloutTarget.objects.select_related("environment", "job"), pk=target_id, rollout=rollout
    )
    try:
        rollouts.rollout_skip(rollout=rollout, target=target, user=request.user)
    except transitions.Refused as exc:
        return _refused(request, rollout, exc)
    return redirect(rollout)


def _refused(request, rollout: Rollout, exc: transitions.Refused) -> HttpResponse:
    rollout.refresh_from_db()
    return render(
        request,
        "environments/rollout_detail.html",
        _page(rollout, request.user, str(exc)),
        status=transitions.refusal_status(exc),
    )
