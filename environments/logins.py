"""Login throttling, counted from the audit trail's own failed logins.

After `RETORT_LOGIN_ATTEMPTS` failed logins for one user name (or ten times that many from one
address) within `RETORT_LOGIN_WINDOW` seconds, the login form refuses that name (or address)
until the window has passed — even with the right password, so guessing cannot go on in the
background. Every refusal is audited (`login_throttled`). The failed logins are the audit
events Retort writes anyway, so nothing else is stored and nothing can be reset by a restart.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone

from environments.audit import audit_record, canonical_details, client_ip
from environments.models import AuditEvent


def throttled_for(request, username: str) -> int:
    """Seconds until `username` (or this request's address) may try again; 0 when it may."""
    window = timedelta(seconds=settings.RETORT_LOGIN_WINDOW)
    since = timezone.now() - window
    failures = AuditEvent.objects.filter(action="login_failed", created_at__gte=since)
    # a failed login's details are exactly {"username": …} (environments.signals)
    by_name = failures.filter(details_json=canonical_details({"username": username[:150]}))
    ip = client_ip(request) if request is not None else None
    limit = settings.RETORT_LOGIN_ATTEMPTS
    blocked = []
    if by_name.count() >= limit:
        blocked.append(by_name)
    if ip:
        by_ip = failures.filter(ip=ip)
        if by_ip.count() >= limit * 10:
            blocked.append(by_ip)
    if not blocked:
        return 0
    # free again once the oldest failure that keeps the count at the limit leaves the window
    until = max(
        query.order_by("-created_at").values_list("created_at", flat=True)[limit - 1] + window
        for query in blocked
    )
    return max(1, math.ceil((until - timezone.now()).total_seconds()))


class _Throttled:
    def clean(self):
        username = str(self.data.get("username", ""))
        wait = throttled_for(self.request, username)
        if wait:
            audit_record(
                action="login_throttled",
                request=self.request,
                details={"username": username[:150], "retry_after_seconds": wait},
            )
            minutes = math.ceil(wait / 60)
            raise forms.ValidationError(
                f"Too many failed logins for this account or address. Try again in {minutes} "
                f"minute{'s' if minutes != 1 else ''}, or ask an administrator.",
                code="throttled",
            )
        return super().clean()


class ThrottledAuthenticationForm(_Throttled, AuthenticationForm):
    """The login page's form."""


class ThrottledAdminAuthenticationForm(_Throttled, AdminAuthenticationForm):
    """The admin's login form."""
