"""The audit trail: filtered, paged, verified, and exported as CSV or JSON Lines."""

from __future__ import annotations

import csv
import itertools
import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from dashboard.lib.badinput import refuse
from environments import audit, audit_chain, audit_export
from environments.forms import AuditFilterForm


@require_GET
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    if refused := _refused_filters(request, form):
        return refused
    events = audit_export.events_filtered(**form.filters())
    page = Paginator(events, settings.RETORT_AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "chain": audit_chain.audit_verify_incremental(),
    }
    template = "environments/audit.html#results" if request.htmx else "environments/audit.html"
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
def audit_download(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
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
    rows = audit_export.export_rows(audit_export.events_filtered(**filters))
    if fmt == "csv":
        writer = csv.writer(_Echo())
        lines = itertools.chain(
            [writer.writerow(audit_export.EXPORT_COLUMNS)],
            (
                writer.writerow(
                    [audit_export.csv_cell(row[c]) for c in audit_export.EXPORT_COLUMNS]
                )
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
