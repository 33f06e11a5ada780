"""Pages: the overview, a project, an environment; its refresh; the status API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib.apiauth import api_login_required
from environments import services
from environments.models import Environment, Project


def _projects(slug: str | None = None):
    projects = Project.objects.prefetch_related("environments__project")
    return projects.filter(slug=slug) if slug else projects.all()


def _get_environment(project_slug: str, env_slug: str) -> Environment:
    return get_object_or_404(
        Environment.objects.select_related("project"), project__slug=project_slug, slug=env_slug
    )


@require_GET
@login_required
def overview(request: HttpRequest) -> HttpResponse:
    overviews = services.overview_build(projects=_projects())
    template = "environments/_projects.html" if request.htmx else "environments/overview.html"
    return render(request, template, {"overviews": overviews, "single_project": False})


@require_GET
@login_required
def project_detail(request: HttpRequest, project_slug: str) -> HttpResponse:
    projects = _projects(project_slug)
    if not projects:
        get_object_or_404(Project, slug=project_slug)
    overviews = services.overview_build(projects=projects)
    template = "environments/_projects.html" if request.htmx else "environments/overview.html"
    return render(request, template, {"overviews": overviews, "single_project": True})


@require_GET
@login_required
def environment_detail(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = _get_environment(project_slug, env_slug)
    card = services.environment_card(environment=environment, refresh=True)
    detail = services.environment_detail_build(card=card)
    return render(request, "environments/environment_detail.html", {"card": card, "detail": detail})


@require_POST
@login_required
def environment_refresh(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = _get_environment(project_slug, env_slug)
    card = services.environment_card(environment=environment, refresh=True)
    if not request.htmx:
        return redirect(environment)
    return render(request, "environments/_environment_card.html", {"card": card})


@require_GET
@api_login_required
def api_status(request: HttpRequest) -> JsonResponse:
    """The same objects `manage.py migration_status --json` prints."""
    projects = _projects(request.GET.get("project"))
    overviews = services.overview_build(projects=projects)
    env_filter = request.GET.get("env")
    rows = [
        card.snapshot.as_status_dict() | {"multiple_heads": bool(overview.multiple_heads)}
        for overview in overviews
        for card in overview.cards
        if card.snapshot is not None and (not env_filter or card.environment.slug == env_filter)
    ]
    return JsonResponse(rows, safe=False)
