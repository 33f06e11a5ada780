"""API tokens: issued to a person, shown once, stored as a SHA-256, revocable; each issue and
revocation is an audit event. `api_login_required` lets a token (or a session) into the JSON
API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from environments.audit import audit_record
from environments.models import ApiToken


def token_issue(*, user, name: str, actor=None) -> tuple[ApiToken, str]:
    """A new token for `user`; the plain value is returned once and never stored. `actor`
    is who issued it (None: the system actor, e.g. `manage.py create_api_token`)."""
    with transaction.atomic():
        token, plain = ApiToken.issue(user=user, name=name)
        audit_record(
            action="api_token_created",
            user=actor,
            details={"number": token.pk, "label": name, "issued_to": user.username},
        )
    return token, plain


def token_revoke(*, token: ApiToken, user) -> bool:
    """Revoke `token` (as `user`, its owner or an admin); False if it was already revoked."""
    with transaction.atomic():
        won = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        if won:
            audit_record(
                action="api_token_revoked",
                user=user,
                details={"number": token.pk, "label": token.name, "issued_to": token.user.username},
            )
    token.refresh_from_db()
    return bool(won)


# "last used" is kept to the hour: a GET with a token writes at most one row an hour
LAST_USED_EVERY = timedelta(hours=1)


def api_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let in a logged-in session or `Authorization: Bearer <token>`; answer 401 JSON otherwise."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if request.user.is_authenticated and not header:
            return view(request, *args, **kwargs)
        if scheme.lower() == "bearer" and token:  # a token, when sent, decides who this is
            found = (
                ApiToken.objects.select_related("user")
                .filter(
                    token_hash=ApiToken.digest(token.strip()),
                    user__is_active=True,
                    revoked_at=None,
                )
                .first()
            )
            if found is not None:
                now = timezone.now()
                if found.last_used_at is None or now - found.last_used_at > LAST_USED_EVERY:
                    ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
                request.user = found.user
                request.api_token = found
                return view(request, *args, **kwargs)
        return JsonResponse(
            {"error": "Authentication required: log in, or send 'Authorization: Bearer <token>'."},
            status=401,
        )

    return wrapper
