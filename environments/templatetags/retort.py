from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince

from environments.audit import action_label

register = template.Library()


@register.simple_tag
def live_poll(url: str, key: str, seconds: float, final: bool = False) -> str:
    """The htmx attributes of a live region (see dashboard/lib/live.py): poll `url` every
    `seconds` with the fingerprint the page shows; nothing at all once the state is final."""
    if final:
        return ""
    joiner = "&" if "?" in url else "?"
    return format_html(
        ' hx-get="{}" hx-trigger="every {}s" hx-swap="outerHTML"',
        f"{url}{joiner}{urlencode({'since': key})}",
        f"{seconds:g}",
    )


_LABELS = {
    "current": "current",
    "behind": "behind",
    "unknown_revision": "unknown revision",
    "uninitialized": "not initialized",
    "unreachable": "unreachable",
    "auth_failed": "login refused",
    "error": "error",
    "gone": "gone",
}


@register.filter
def status_label(status: str) -> str:
    return _LABELS.get(status, status)


@register.filter
def badge_text(state) -> str:
    """What a state's badge says: "6 behind", else its status in words."""
    if state.status == "behind":
        return f"{len(state.pending)} behind"
    return status_label(state.status)


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


@register.filter
def audit_action_label(action: str) -> str:
    return action_label(action)


def _detail_text(value) -> str:
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        return f"{_detail_text(value['from'])} → {_detail_text(value['to'])}"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_detail_text(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_detail_text(item) for item in value) or "[]"
    if value is None or value == "":
        return "∅"
    return str(value)


@register.filter
def audit_details(details: dict) -> str:
    """An event's details as one readable line (autoescaped by the template)."""
    if set(details) == {"changed"} or set(details) == {"fields"}:
        details = next(iter(details.values()))
    return _detail_text(details)


@register.filter
def label_pairs(labels: dict | None) -> list[str]:
    """An environment's labels as `name=value`, sorted (never `labels.items` in a template: a
    label named "items" would answer it)."""
    return [f"{key}={value}" for key, value in sorted((labels or {}).items())]


@register.simple_tag(takes_context=True)
def page_query(context, page: int) -> str:
    """This page's query string with another page number (and no poll fingerprint)."""
    params = context["request"].GET.copy()
    params.pop("since", None)
    params["page"] = page
    return params.urlencode()
