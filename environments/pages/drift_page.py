"""The drift page: what the last check stored, and "Check now"."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib import live
from environments import drift, roles
from environments.models import Project


@require_GET
@live.login_required_live
def project_drift(request: HttpRequest, project_slug: str) -> HttpResponse:
    """What the last drift check found: revisions each environment lacks of its neighbour's,
    and schema differences. The page reads nothing itself; "Check now" asks a worker."""
    project = get_object_or_404(Project, slug=project_slug)
    page = drift.drift_page(project=project)
    may_check = roles.may_request(request.user, project)
    context = {
        "page": page,
        "project": project,
        "live_key": _drift_key(page),
        "may_check": may_check,
    }
    if request.htmx and request.GET.get("since") is not None:
        return live.live_response(
            request,
            context["live_key"],
            lambda: render(request, "environments/drift.html#body", context),
            final=not page.checking,
        )
    return render(request, "environments/drift.html", context)


def _drift_key(page) -> str:
    state = page.state
    return live.fingerprint(state.checked_at, state.requested_at) if state else "never"


@require_POST
@login_required
def project_drift_check(request: HttpRequest, project_slug: str) -> HttpResponse:
    """Ask a worker to check the project now (it reads every environment and builds schemas
    on scratch databases: the developer and release manager roles may ask)."""
    project = get_object_or_404(Project, slug=project_slug)
    if not roles.may_request(request.user, project):
        raise PermissionDenied(
            f"{request.user.username} may read {project.name}'s drift; asking for a check "
            "takes the developer or release manager role."
        )
    if drift.drift_request(project=project, user=request.user):
        return redirect("project_drift", project_slug=project.slug)
    page = drift.drift_page(project=project)
    context = {
        "page": page,
        "project": project,
        "live_key": _drift_key(page),
        "may_check": True,
        "check_error": "The broker is unreachable, so no worker got the check; nothing is "
        "under way. Try again once it is back.",
    }
    return render(request, "environments/drift.html", context, status=503)
