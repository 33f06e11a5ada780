from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()

_LABELS = {
    "current": "current",
    "behind": "behind",
    "unknown_revision": "unknown revision",
    "uninitialized": "not initialized",
    "unreachable": "unreachable",
    "auth_failed": "login refused",
    "error": "error",
}


@register.filter
def status_label(status: str) -> str:
    return _LABELS.get(status, status)


@register.filter
def short_rev(revision: str) -> str:
    return revision[:12]


@register.filter
def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"


@register.filter
def short_date(create_date: str | None) -> str:
    """Alembic's Create Date without microseconds."""
    return (create_date or "").split(".")[0]
