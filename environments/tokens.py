"""API tokens: issued to a person, shown once, stored as a SHA-256, revocable; each issue and
revocation is an audit event."""

from __future__ import annotations

from django.db import transaction
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
