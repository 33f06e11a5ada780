"""A project's round-trip tests: what the last run stored, and "Run them now"."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib import live
from environments import roles, round_trips
from environments.models import Project, RoundTripState


@require_GET
@live.login_required_live
def project_round_trips(request: HttpRequest, project_slug: str) -> HttpResponse:
    """Each revision upgraded, downgraded and upgraded again on scratch databases, as a worker
    last found it. The page runs nothing itself; "Run them now" asks a worker."""
    project = get_object_or_404(Project, slug=project_slug)
    context = _context(request, project)
    if request.htmx and request.GET.get("since") is not None:
        state = context["state"]
        return live.live_response(
            request,
            context["live_key"],
            lambda: render(request, "environments/round_trips.html#body", context),
            final=state is None or not state.running,
        )
    return render(request, "environments/round_trips.html", context)


def _context(request: HttpRequest, project: Project, **extra) -> dict:
    state = RoundTripState.objects.filter(project=project).select_related("requested_by").first()
    key = live.fingerprint(state.checked_at, state.requested_at) if state else "never"
    return {
        "project": project,
        "state": state,
        "live_key": key,
        "may_run": roles.may_request(request.user, project),
    } | extra


@require_POST
@login_required
def project_round_trips_run(request: HttpRequest, project_slug: str) -> HttpResponse:
    """Ask a worker to run the round trips now (the developer and release manager roles)."""
    project = get_object_or_404(Project, slug=project_slug)
    if not roles.may_request(request.user, project):
        raise PermissionDenied(
            f"{request.user.username} may read {project.name}'s round trips; running them "
            "takes the developer or release manager role."
        )
    if round_trips.round_trip_request(project=project, user=request.user):
        return redirect("project_round_trips", project_slug=project.slug)
    error = (
        "The broker is unreachable, so no worker got the run; nothing is under way. Try again "
        "once it is back."
    )
    context = _context(request, project, run_error=error)
    return render(request, "environments/round_trips.html", context, status=503)
