from django import template

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
