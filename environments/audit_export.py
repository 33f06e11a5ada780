"""Reading the audit trail out: events by filter, and their rows for CSV and JSON Lines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta

from django.utils import timezone

from environments.audit import canonical_time
from environments.models import AuditEvent

EXPORT_COLUMNS = (
    "seq",
    "created_at",
    "actor_kind",
    "actor_name",
    "action",
    "project_slug",
    "environment_slug",
    "job_id",
    "from_revisions",
    "to_revisions",
    "details_json",
    "ip",
    "user_agent",
    "prev_hash",
    "hash",
)


def export_rows(events) -> Iterator[dict]:
    """The filtered events as plain dicts, streamed from the database in chunks."""
    for row in events.values_list(*EXPORT_COLUMNS).iterator(chunk_size=2000):
        item = dict(zip(EXPORT_COLUMNS, row, strict=True))
        item["created_at"] = canonical_time(item["created_at"])
        yield item


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet will not run: text that opens like a formula (=, +, -, @, a tab or
    a carriage return) gets a leading apostrophe. Strings from outside — a User-Agent, a
    username someone typed — land in the export, and the export is opened in Excel."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def events_filtered(
    *,
    project_id: int | None = None,
    environment_id: int | None = None,
    actor: str = "",
    action: str = "",
    date_from=None,
    date_to=None,
):
    """Events matching the filters, newest first; dates are whole days in the site's zone."""
    events = AuditEvent.objects.all()
    if project_id:
        events = events.filter(project_id=project_id)
    if environment_id:
        events = events.filter(environment_id=environment_id)
    if actor:
        events = events.filter(actor_name=actor)
    if action:
        events = events.filter(action=action)
    zone = timezone.get_current_timezone()
    if date_from:
        events = events.filter(created_at__gte=datetime.combine(date_from, time.min, zone))
    if date_to:
        next_day = datetime.combine(date_to + timedelta(days=1), time.min, zone)
        events = events.filter(created_at__lt=next_day)
    return events.order_by("-seq")
