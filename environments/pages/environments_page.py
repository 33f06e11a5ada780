"""The overview, a project's page and an environment's page (with the job form it offers)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib import badinput, live
from environments import fleet, overviews, read_requests, roles, safe_runs
from environments.core.run_limits import describe
from environments.core.scripts import ScriptIndex
from environments.models import CurrentState, Discovery, DriftState, Environment, Job, Project
from environments.pages import live_parts, lookup


@require_GET
@live.login_required_live
def overview(request: HttpRequest) -> HttpResponse:
    return _overview_page(request, Project.objects.all(), single=False)


@require_GET
@live.login_required_live
def project_detail(request: HttpRequest, project_slug: str) -> HttpResponse:
    projects = Project.objects.filter(slug=project_slug)
    if not projects:
        get_object_or_404(Project, slug=project_slug)
    return _overview_page(request, projects, single=True)


def _overview_page(request: HttpRequest, projects, *, single: bool) -> HttpResponse:
    """The counts, what needs attention and the cards, as the workers last stored them,
    narrowed by `?q=`, `?status=` and `?label=name:value`; the region polls and is rendered
    again only when a stored state changed (or time moved what "3 minutes ago" says)."""
    try:
        filters = overviews.CardFilter.parse(
            request.GET.getlist("status"), request.GET.getlist("label")
        )
    except ValueError as exc:
        return badinput.refuse(request, str(exc))
    query = request.GET.get("q", "").strip()[:200]
    group_by = request.GET.get("group", "").strip()[:63]
    page_text = request.GET.get("page", "1")
    try:
        page_number = int(page_text) if len(page_text) <= 9 else None
    except ValueError:
        page_number = None
    if page_number is None:
        return badinput.refuse(request, f"The page must be a whole number, not {page_text[:20]!r}.")
    key = _overview_key(projects)
    kept = request.GET.copy()
    kept.pop("since", None)
    poll_url = f"{request.path}?{kept.urlencode()}" if kept else request.path

    def page(template: str) -> HttpResponse:
        context = {
            "fleet": fleet.fleet_build(
                projects, query=query, filters=filters, group_by=group_by, page=page_number
            ),
            "single_project": single,
            "title": projects[0].name if single else "Migration state",
            "live_key": key,
            "poll_url": poll_url,
            "statuses": fleet.STATUS_ORDER,
            "label_text": " ".join(f"{name}:{value}" for name, value in filters.labels),
        }
        return render(request, template, context)

    if request.htmx:
        return live.live_response(request, key, lambda: page("environments/overview.html#projects"))
    return page("environments/overview.html")


def _overview_key(projects) -> str:
    environments = Environment.objects.filter(project__in=projects)
    # every state's own time, not their maximum: a batch stored late, with reads older than
    # one already shown, must still change the fingerprint (a card being read polls itself)
    states = live_parts.newest_reads(environments)
    registry = environments.aggregate(count=Count("pk"), edited=Max("updated_at"))
    drift = DriftState.objects.filter(project__in=projects).aggregate(checked=Max("checked_at"))
    found = Discovery.objects.filter(project__in=projects).aggregate(checked=Max("checked_at"))
    edited = Project.objects.filter(pk__in=projects).aggregate(edited=Max("updated_at"))
    return live.fingerprint(states, registry, drift, found, edited, live_parts.time_bucket())


@require_GET
@login_required
def environment_detail(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = lookup.get_environment(project_slug, env_slug)
    card = overviews.environment_card(environment=environment)
    detail = overviews.environment_detail_build(card=card)
    context = {"card": card, "detail": detail}
    context |= job_offer(environment, detail.index, request.user)
    return render(request, "environments/environment_detail.html", context)


@require_GET
@live.login_required_live
def environment_card_live(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    """One card, for its poll while a read someone asked for is under way."""
    environment = lookup.get_environment(project_slug, env_slug)
    row = CurrentState.objects.filter(environment=environment).first()
    # the fingerprint needs only the state's row: the scripts are read for an answer, not a 204
    shell = overviews.EnvironmentCard(environment, None, row=row)
    states = {environment.pk: row} if row is not None else {}

    def card() -> HttpResponse:
        built = overviews.cards_build([environment], states)[0]
        return render(request, "environments/overview.html#card", {"card": built})

    return live.live_response(request, shell.live_key, card, final=not shell.reading)


@require_POST
@login_required
def environment_refresh(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    """Refresh: a worker reads the environment now and the card follows until it is stored.
    When the broker cannot take the read, it is made here (a POST may connect to a target;
    a GET never does)."""
    environment = lookup.get_environment(project_slug, env_slug)
    asked = read_requests.read_request(environment=environment)
    card = overviews.environment_card(environment=environment, refresh=not asked)
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
    if environment.rehearsal_required_hours:
        lines.append(
            "An approval counts only after a successful rehearsal of the plan on a copy within "
            f"the last {environment.rehearsal_required_hours} h."
        )
    if safe_runs.applies_to(environment):
        lock, attempts = environment.lock_timeout_seconds, environment.lock_attempts
        waits = f"wait at most {describe(lock)} for a lock" if lock else "wait for locks unbounded"
        retried = (
            f"tried up to {attempts} times when that times out" if attempts > 1 else "not retried"
        )
        lines.append(
            f"Runs {waits} (statement_timeout {describe(environment.statement_timeout_seconds)})"
            f" and are {retried}; migration lock key {environment.lock_key} (the env.py recipe "
            "takes it)."
        )
        blocks, extra = environment.lock_review_blocks, environment.lock_review_approval
        if blocks or extra:
            said = {"danger": "a danger", "warning": "a warning or worse"}
            parts = [f"a plan whose lock review finds {said[blocks]} is not run"] if blocks else []
            if extra:
                parts.append(f"one with {said[extra]} needs one approval more")
            lines.append(f"Lock review: {'; '.join(parts)}.")
    return lines
