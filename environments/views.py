"""Pages: the overview, a project, an environment and its refresh, the graph, the audit trail;
the JSON API."""

from __future__ import annotations

import csv
import itertools
import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Max, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dashboard.lib import live
from dashboard.lib.badinput import refuse, whole_number
from environments import (
    approvals,
    audit,
    drift,
    graphs,
    planning,
    reviews,
    roles,
    services,
    tokens,
    transitions,
)
from environments.context_processors import navigation
from environments.core.scripts import ScriptIndex
from environments.forms import AuditFilterForm
from environments.models import ApiToken, Approval, Environment, Job, Project, Snapshot


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
    context = {"card": card, "detail": detail}
    context |= _job_context(environment, detail.index, request.user)
    return render(request, "environments/environment_detail.html", context)


@require_POST
@login_required
def environment_refresh(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = _get_environment(project_slug, env_slug)
    card = services.environment_card(environment=environment, refresh=True)
    if not request.htmx:
        return redirect(environment)
    return render(request, "environments/_environment_card.html", {"card": card})


@require_GET
@tokens.api_login_required
def api_status(request: HttpRequest) -> JsonResponse:
    """The same objects `manage.py migration_status --json` prints; an unknown project or
    environment is a 404 (the command exits 2), never an empty list a CI gate could pass on."""
    wanted = request.GET.get("project")
    projects = _projects(wanted)
    if wanted and not projects.exists():
        return JsonResponse({"error": f"No project {wanted!r}.", "code": "not_found"}, status=404)
    overviews = services.overview_build(projects=projects)
    env_filter = request.GET.get("env")
    cards = [
        (overview, card)
        for overview in overviews
        for card in overview.cards
        if not env_filter or env_filter in (card.environment.slug, card.environment.name)
    ]
    if env_filter and not cards:
        return JsonResponse(
            {"error": f"No environment {env_filter!r}.", "code": "not_found"}, status=404
        )
    rows = [
        card.snapshot.as_status_dict() | overview.heads_dict()
        for overview, card in cards
        if card.snapshot is not None
    ]
    return JsonResponse(rows, safe=False)


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
    view = graphs.graph_build(
        project=project,
        environment_slug=request.GET.get("env") or None,
        query=request.GET.get("q", ""),
        expand=request.GET.getlist("expand"),
        node_url=node_url,
        expand_url=expand_url,
    )
    return render(request, "environments/graph.html", {"view": view, "project": project})


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
            lambda: render(request, "environments/_drift_body.html", context),
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


@require_GET
@login_required
def revision_panel(request: HttpRequest, project_slug: str, revision: str) -> HttpResponse:
    project = get_object_or_404(Project, slug=project_slug)
    panel = graphs.revision_panel_build(project=project, revision_id=revision)
    if panel is None:
        raise Http404("The scripts have no such revision.")
    template = "environments/_revision_panel.html" if request.htmx else "environments/revision.html"
    return render(request, template, {"panel": panel, "project": project})


@require_GET
@tokens.api_login_required
def api_graph(request: HttpRequest, project_slug: str) -> JsonResponse:
    project = get_object_or_404(Project, slug=project_slug)
    expand = request.GET.getlist("expand")
    view = graphs.graph_build(
        project=project,
        environment_slug=request.GET.get("env") or None,
        expand=expand,
        read=request.GET.get("read", "1") != "0",
    )
    return JsonResponse(graphs.graph_json(view))


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    if refused := _refused_filters(request, form):
        return refused
    events = audit.events_filtered(**form.filters())
    page = Paginator(events, settings.RETORT_AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "chain": audit.audit_verify_incremental(),
    }
    template = "environments/_audit_results.html" if request.htmx else "environments/audit.html"
    return render(request, template, context)


def _refused_filters(request: HttpRequest, form: AuditFilterForm) -> HttpResponse | None:
    """A 400 naming what is wrong with the filters; an invalid filter never means "all"."""
    if form.is_bound and not form.is_valid():
        return refuse(request, f"These filters cannot be used: {form.errors_sentence()}")
    return None


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@login_required
def audit_export(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    """The filtered events as CSV or JSON Lines, streamed row by row from the database."""
    if fmt not in ("csv", "jsonl"):
        raise Http404("Export as csv or jsonl.")
    form = AuditFilterForm(request.GET or None)
    if refused := _refused_filters(request, form):
        return refused
    filters = form.filters()
    audit.audit_record(
        action="audit_exported",
        details={"format": fmt, "filters": {k: v for k, v in filters.items() if v}},
    )
    rows = audit.export_rows(audit.events_filtered(**filters))
    if fmt == "csv":
        writer = csv.writer(_Echo())
        lines = itertools.chain(
            [writer.writerow(audit.EXPORT_COLUMNS)],
            (
                writer.writerow([audit.csv_cell(row[c]) for c in audit.EXPORT_COLUMNS])
                for row in rows
            ),
        )
        content_type = "text/csv; charset=utf-8"
    else:
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        content_type = "application/x-ndjson; charset=utf-8"
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(lines, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="retort-audit-{stamp}.{fmt}"'
    return response


# --- jobs ---------------------------------------------------------------------------------


def _job_context(environment: Environment, index: ScriptIndex | None, user) -> dict:
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


@require_POST
@login_required
def job_new(request: HttpRequest, project_slug: str, env_slug: str) -> HttpResponse:
    environment = _get_environment(project_slug, env_slug)
    kind = request.POST.get("kind", "")
    target = (request.POST.get("target_text") or request.POST.get("target") or "").strip()
    restore_from = None
    if kind == Job.Kind.RESTORE:
        backup_id = whole_number(request.POST.get("backup"), "The backup")
        restore_from = environment.backups.filter(pk=backup_id).first() if backup_id else None
    take_backup = None
    if request.POST.get("backup_choice"):
        take_backup = request.POST.get("take_backup") == "on"
    try:
        job = planning.job_request(
            environment=environment,
            kind=kind,
            target=target,
            user=request.user,
            reason=request.POST.get("reason", "").strip(),
            restore_from=restore_from,
            take_backup=take_backup,
        )
    except transitions.Refused as exc:
        card = services.environment_card(environment=environment, refresh=False)
        detail = services.environment_detail_build(card=card)
        context = {"card": card, "detail": detail, "job_error": str(exc)}
        context |= _job_context(environment, detail.index, request.user)
        # the form as it was sent, so nothing typed is lost
        context["job_form"] = {
            "kind": kind,
            "target": request.POST.get("target", ""),
            "target_text": request.POST.get("target_text", ""),
            "reason": request.POST.get("reason", ""),
            "take_backup": take_backup,
        }
        return render(
            request,
            "environments/environment_detail.html",
            context,
            status=transitions.refusal_status(exc),
        )
    return redirect(job)


def _get_job(job_id: int) -> Job:
    return get_object_or_404(
        Job.objects.select_related(
            "environment__project",
            "environment__promotion_from",
            "environment__approver_group",
            "requested_by",
            "backup",
            "restore_from",
        ),
        pk=job_id,
    )


@require_GET
@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _get_job(job_id)
    return render(request, "environments/job_detail.html", _job_page(job, request.user))


def _job_page(
    job: Job, user, error: str | None = None, *, stored: bool = False, key: str | None = None
) -> dict:
    """Everything the job page shows. `stored`: judge whether the plan is out of date from
    the environment's last stored read (a poll), not from a read made now. The live region's
    fingerprint (`key`, else worked out here) is taken before anything is read, so a change
    that lands while the page renders makes the next poll render again rather than be lost."""
    key = key or _job_key(job)
    lines = list(job.log_lines.order_by("-seq")[:2000])[::-1]
    # buttons a person may not use are not shown (the services still refuse them)
    may_change = roles.may_request(user, job.environment.project) or roles.may_approve(
        user, job.environment
    )
    snapshot = job.environment.latest_snapshot() if stored else None
    review = _review(job, user, snapshot, check_plan=not stored or snapshot is not None)
    return {
        "job": job,
        "log_lines": lines,
        "job_error": error,
        "may_change": may_change,
        "live_key": key,
    } | review


def _newest_reads(environments) -> list[tuple[int, int | None]]:
    """Each environment's newest read (its id), in one query along the snapshot index."""
    newest = (
        Snapshot.objects.filter(environment=OuterRef("pk"))
        .order_by("-checked_at", "-id")
        .values("id")[:1]
    )
    return list(
        environments.annotate(newest=Subquery(newest)).order_by("pk").values_list("pk", "newest")
    )


def _time_bucket() -> int:
    """Part of every fingerprint: what a page says of time ("3 minutes ago", "eligible from
    …", a revision file edited on disk) is brought up to date every
    RETORT_LIVE_REFRESH_SECONDS (default 60) at most."""
    return int(timezone.now().timestamp() // settings.RETORT_LIVE_REFRESH_SECONDS)


def _job_key(job: Job) -> str:
    """What the job page's live region shows, as a fingerprint: the job's row, its newest log
    line, its decisions, and the newest read of each of the project's environments (which may
    outdate the plan, or move the promotion rule's verdict)."""
    newest_line = job.log_lines.aggregate(seq=Max("seq"))["seq"]
    decisions = job.approvals.aggregate(newest=Max("id"))["newest"]
    reads = _newest_reads(Environment.objects.filter(project=job.environment.project_id))
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
        newest_line,
        decisions,
        reads,
        _time_bucket(),
    )


def _review(job: Job, user, snapshot=None, *, check_plan: bool = True) -> dict:
    """What an approver reads: the policy's verdicts, the approvals, the other environments.
    `snapshot`: the environment's read to judge the plan by (None: it is read now)."""
    return {
        "approval": reviews.approval_state(job, user, snapshot=snapshot, check_plan=check_plan),
        "others": reviews.other_environments(job),
        "policy": policy_lines(job.environment),
        "may_request": roles.may_request(user, job.environment.project),
    }


@require_GET
@live.login_required_live
def job_live(request: HttpRequest, job_id: int) -> HttpResponse:
    """The part of the job page that changes (status, approvals, SQL, log): htmx polls it with
    the fingerprint it shows; 204 while nothing changed, 286 once the job is over."""
    job = _get_job(job_id)
    key = _job_key(job)
    return live.live_response(
        request,
        key,
        lambda: render(
            request,
            "environments/_job_live.html",
            _job_page(job, request.user, stored=True, key=key) | {"oob_nav": True},
        ),
        final=job.is_finished,
    )


@require_GET
@live.login_required_live
def nav_live(request: HttpRequest) -> HttpResponse:
    """The nav's approvals count, for the poll every page makes."""
    context = navigation(request)
    return live.live_response(
        request,
        context["nav_key"],
        lambda: render(request, "_nav_approvals.html", context),
    )


@require_POST
@login_required
def job_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    job = _get_job(job_id)
    try:
        if action == "queue":
            approvals.job_queue(job=job, user=request.user)
        elif action == "cancel":
            planning.job_cancel(job=job, user=request.user)
        elif action == "replan":
            planning.job_replan(job=job, user=request.user)
        else:
            raise Http404("No such action.")
    except transitions.Refused as exc:
        job.refresh_from_db()
        context = _job_page(job, request.user, str(exc))
        return render(
            request,
            "environments/job_detail.html",
            context,
            status=transitions.refusal_status(exc),
        )
    return redirect(job)


@require_POST
@login_required
def job_decide(
    request: HttpRequest, project_slug: str, env_slug: str, job_id: int, decision: str
) -> HttpResponse:
    """Approve or reject, for the plan the form showed (its SHA-256 travels with the form)."""
    claimed = _get_environment(project_slug, env_slug)
    job = _get_job(job_id)
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
        job.refresh_from_db()
        context = _job_page(job, request.user, str(exc))
        return render(
            request,
            "environments/job_detail.html",
            context,
            status=transitions.refusal_status(exc),
        )
    if request.POST.get("next") == "approvals":
        return redirect("approvals")
    return redirect(job)


@require_GET
@login_required
def approvals_queue(request: HttpRequest) -> HttpResponse:
    """Requests awaiting approval, each with everything needed to decide on it."""
    approvals.jobs_expire()
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
            "environments/_approval_requests.html",
            _approval_requests(request.user, stored=True, key=key),
        ),
    )


def _waiting_jobs():
    return Job.objects.filter(status=Job.Status.AWAITING_APPROVAL).order_by("submitted_at", "id")


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
    reads = _newest_reads(Environment.objects.filter(project__in=projects))
    return live.fingerprint(waiting, decisions, reads, _time_bucket())


def _approval_requests(user, *, stored: bool = False, key: str | None = None) -> dict:
    key = key or _approvals_key()  # before reading: see _job_page
    waiting = _waiting_jobs().select_related(
        "environment__project",
        "environment__promotion_from",
        "environment__approver_group",
        "requested_by",
        "restore_from",
    )
    environments = list({job.environment_id: job.environment for job in waiting}.values())
    if stored:
        reads = {e.pk: e.latest_snapshot() for e in environments}
    else:
        # every environment with a request is read once, all in parallel: a hung database
        # costs the page one connect timeout, however many requests wait
        reads = services.environments_read(environments=environments) if environments else {}
    requests = [
        {"job": job}
        | _review(
            job,
            user,
            reads.get(job.environment_id),
            check_plan=reads.get(job.environment_id) is not None,
        )
        for job in waiting
    ]
    decided = Approval.objects.select_related("job__environment__project").order_by(
        "-created_at", "-id"
    )[:20]
    return {"requests": requests, "decided": decided, "live_key": key}


# --- API tokens ----------------------------------------------------------------------------


@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """A person's own tokens: create one (shown once), revoke any. Creating redirects, so a
    reload shows the list again instead of creating a second token; the new token rides in the
    session to the next page view only."""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:100] or "token"
        _, request.session["issued_token"] = tokens.token_issue(
            user=request.user, name=name, actor=request.user
        )
        return redirect("tokens")
    if request.method != "GET":
        return HttpResponse(status=405)
    issued = request.session.pop("issued_token", None)
    mine = ApiToken.objects.filter(user=request.user)
    return render(request, "environments/tokens.html", {"tokens": mine, "issued": issued})


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    tokens.token_revoke(token=token, user=request.user)
    return redirect("tokens")
