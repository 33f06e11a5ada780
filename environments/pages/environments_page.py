"""The overview, a project's page and an environment's page (with the job form it offers)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from environments import overviews, roles
from environments.core.scripts import ScriptIndex
from environments.models import Environment, Job, Project
from environments.pages import lookup


@require_GET
@login_required
def overview(request: HttpRequest) -> HttpResponse:
    built = overviews.overview_build(projects=lookup.projects_named())
    template = (
        "environments/overview.html#projects" if request.htmx else "environments/overview.html"
    )
    return render(request, template, {"overviews": built, "single_project": False})


@require_GET
@login_required
def project_detail(request: HttpRequest, project_slug: str) -> HttpResponse:
    projects = lookup.projects_named(project_slug)
    if not projects:
        get_object_or_404(Project, slug=project_slug)
    built = overviews.overview_build(projects=projects)
    template = (
        "environments/overview.html#projects" if request.htmx else "environments/overview.html"
    )
    return render(request, template, {"overviews": built, "single_project": True})


@require_GET
@login_required
def environment_detail(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = lookup.get_environment(project_slug, env_slug)
    card = overviews.environment_card(environment=environment, refresh=True)
    detail = overviews.environment_detail_build(card=card)
    context = {"card": card, "detail": detail}
    context |= job_offer(environment, detail.index, request.user)
    return render(request, "environments/environment_detail.html", context)


@require_POST
@login_required
def environment_refresh(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = lookup.get_environment(project_slug, env_slug)
    card = overviews.environment_card(environment=environment, refresh=True)
    if not request.htmx:
        return redirect(environment)
    return render(request, "environments/overview.html#card", {"card": card})


def job_offer(environment: Environment, index: ScriptIndex | None, user) -> dict:
    """What the environment page needs to offer a job: targets, recent jobs, backups."""
    targets = []
    if index is not None and index.revision_map is not None:
        newest_first = index.applied(index.heads) if index.heads else ()
        targets = [(rev, index.revisions[rev].message) for rev in newest_first]
    return {
        "targets": targets,
        "jobs": environment.jobs.select_related("requested_by")[:20],
        "backups": environment.backups.filter(removed_at=None)[:20],
        "active_job": environment.jobs.filter(status__in=Job.ACTIVE).first(),
        "may_request": roles.may_request(user, environment.project),
        "policy": policy_lines(environment),
    }


def policy_lines(environment: Environment) -> list[str]:
    """The environment's approval policy in words."""
    required = environment.required_approvals
    lines = [
        f"Jobs need {required} approval{'s' if required != 1 else ''} "
        f"from {roles.approver_label(environment)}"
        + (
            "; the requester may be one of them."
            if environment.requester_may_approve
            else "; never the requester's own."
        )
        if required
        else "Jobs run without approval."
    ]
    if environment.backup_required:
        lines.append("A backup before every upgrade and downgrade is mandatory.")
    if environment.promotion_from_id:
        hours = environment.promotion_min_hours
        held = f" for at least {hours} h" if hours else ""
        lines.append(
            f"Upgrades only to revisions {environment.promotion_from.name} has held{held}."
        )
    if required:
        lines.append(f"Requests expire after {environment.approval_expiry_hours} h.")
    return lines
