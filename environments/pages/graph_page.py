"""The revision graph of a project and a revision's panel."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from environments import graph_view
from environments.models import Project


def _graph_urls(project: Project, request: HttpRequest):
    def node_url(revision: str) -> str:
        return reverse("revision_panel", args=[project.slug, revision])

    def expand_url(fold_id: str) -> str:
        params = request.GET.copy()
        params.appendlist("expand", fold_id.removeprefix("fold:"))
        base = reverse("project_graph", args=[project.slug])
        return f"{base}?{params.urlencode()}#{fold_id.replace(':', '-')}"

    return node_url, expand_url


@require_GET
@login_required
def project_graph(request: HttpRequest, project_slug: str) -> HttpResponse:
    project = get_object_or_404(Project, slug=project_slug)
    node_url, expand_url = _graph_urls(project, request)
    view = graph_view.graph_build(
        project=project,
        environment_slug=request.GET.get("env") or None,
        query=request.GET.get("q", ""),
        expand=request.GET.getlist("expand"),
        node_url=node_url,
        expand_url=expand_url,
    )
    return render(request, "environments/graph.html", {"view": view, "project": project})


@require_GET
@login_required
def revision_panel(request: HttpRequest, project_slug: str, revision: str) -> HttpResponse:
    project = get_object_or_404(Project, slug=project_slug)
    panel = graph_view.revision_panel_build(project=project, revision_id=revision)
    if panel is None:
        raise Http404("The scripts have no such revision.")
    template = "environments/revision.html#panel" if request.htmx else "environments/revision.html"
    return render(request, template, {"panel": panel, "project": project})
