"""The audit trail: one way in (`audit_record`) and its keyed hash chain (verified by
`audit_chain.py`, read out by `audit_export.py`).

Every event's hash is an HMAC-SHA256, keyed with `RETORT_AUDIT_KEY` (which is not in the
database), over its own canonical content and the previous event's hash: changing, removing or
reordering any event breaks every link after it, and nobody without the key can write a chain
that verifies — not by recomputing hashes, not by appending forged events. Each full
verification writes the verified head outside the database (a file, the log, the webhook), so
a trail wiped or shortened in the database is caught too. Writers take a lock for the length
of their transaction (a PostgreSQL advisory lock; SQLite serialises writers by itself), so
concurrent workflows still produce one unbroken chain, and an event rolls back with the state
change it describes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from environments.core.database_urls import redact_urls
from environments.models.audit import AuditEvent

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
HASH_VERSION = 2  # 1: plain SHA-256 (before the chain was keyed); 2: HMAC-SHA256
# An arbitrary, fixed key for pg_advisory_xact_lock: "retort audit" in ASCII, truncated.
_PG_LOCK_KEY = 0x7265746F72746175

# What an event's hash covers, in this order; `prev_hash` is chained in front.
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "action",
    "project_id",
    "project_name",
    "project_slug",
    "environment_id",
    "environment_name",
    "environment_slug",
    "job_id",
    "from_revisions",
    "to_revisions",
    "details_json",
    "ip",
    "user_agent",
)

# Actions with a sentence for the audit page; any other string is allowed and shown as is.
ACTIONS = {
    "login": "logged in",
    "logout": "logged out",
    "login_failed": "failed to log in",
    "project_created": "created a project",
    "project_changed": "changed a project",
    "project_deleted": "deleted a project",
    "environment_created": "created an environment",
    "environment_changed": "changed an environment",
    "environment_deleted": "deleted an environment",
    "revision_changed": "saw the revision change",
    "out_of_band_change": "saw a change no Retort job made",
    "audit_exported": "exported the audit trail",
    "audit_break_acknowledged": "acknowledged a break in the audit chain",
    "job_planned": "planned a job",
    "approval_requested": "asked for approval",
    "job_approved": "approved a job",
    "job_rejected": "rejected a job",
    "approval_refused": "was refused an approval",
    "job_refused": "was refused",
    "job_replanned": "planned a job again",
    "job_queued": "queued a job",
    "job_started": "started a job",
    "job_succeeded": "finished a job: succeeded",
    "job_failed": "finished a job: failed",
    "job_interrupted": "marked a job interrupted",
    "job_cancelled": "cancelled a job",
    "job_discarded": "discarded a job whose submit was refused",
    "project_role_granted": "granted a role in a project",
    "project_role_revoked": "revoked a role in a project",
    "login_throttled": "was refused a login: too many failures",
    "job_expired": "expired a request",
    "api_token_created": "created an API token",
    "api_token_revoked": "revoked an API token",
    "drift_found": "found new drift",
    "drift_cleared": "found drift cleared",
    "rollout_requested": "asked for a rollout",
    "rollout_refused": "was refused a rollout",
    "rollout_planned": "planned a rollout",
    "rollout_failed": "could not plan a rollout",
    "rollout_approval_requested": "asked for a rollout's approval",
    "rollout_approved": "approved a rollout",
    "rollout_rejected": "rejected a rollout",
    "rollout_expired": "expired a rollout request",
    "rollout_started": "started a rollout",
    "rollout_wave_started": "started a rollout's wave",
    "rollout_wave_finished": "finished a rollout's wave",
    "rollout_stopped": "stopped a rollout by its failure policy",
    "rollout_paused": "paused a rollout",
    "rollout_resumed": "resumed a rollout",
    "rollout_retry": "put a rollout's failed targets back",
    "rollout_target_skipped": "skipped a rollout's target",
    "rollout_cancelled": "cancelled a rollout",
    "rollout_completed": "completed a rollout",
}

_SECRET_KEYS = ("password", "secret", "token", "api_key", "url_encrypted")


# --- who is acting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    kind: str
    id: int | None
    name: str


_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)
_system_actor: ContextVar[str] = ContextVar("audit_system_actor", default="system")


class AuditRequestMiddleware:
    """Makes the request (its user, IP and user agent) known to audit_record() in this thread."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


@contextlib.contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Events recorded inside are by the system actor `name` ("apply_config", "worker"…)."""
    token = _system_actor.set(name)
    try:
        yield
    finally:
        _system_actor.reset(token)


def client_ip(request: HttpRequest) -> str:
    if settings.RETORT_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()[:45]
    return request.META.get("REMOTE_ADDR", "")[:45]


def _actor_for(user, request: HttpRequest | None) -> Actor:
    if user is None and request is not None:
        user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return Actor(AuditEvent.ActorKind.USER, user.pk, user.get_username())
    if request is not None:
        return Actor(AuditEvent.ActorKind.ANONYMOUS, None, "")
    return Actor(AuditEvent.ActorKind.SYSTEM, None, _system_actor.get())


# --- canonical content and the hash ---------------------------------------------------------


def _scrub(value):
    """Details never carry secrets: URL passwords are masked, secret-named keys dropped."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {
            str(key): ("***" if any(s in str(key).lower() for s in _SECRET_KEYS) else _scrub(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_scrub(item) for item in items]
    if value is None or isinstance(value, bool | int):
        return value
    return str(value)  # floats, dates, paths: their text, so the hash survives any database


def canonical_details(details: dict | None) -> str:
    return json.dumps(_scrub(details or {}), sort_keys=True, separators=(",", ":"))


def canonical_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def audit_key() -> bytes:
    configured = settings.RETORT_AUDIT_KEY
    if configured:
        return configured.encode()
    return hashlib.sha256(f"retort audit chain\n{settings.SECRET_KEY}".encode()).digest()


def canonical_content(values: dict, version: int = HASH_VERSION) -> str:
    content = {name: values[name] for name in HASHED_FIELDS}
    content["created_at"] = canonical_time(content["created_at"])
    content["v"] = version
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(values: dict, prev_hash: str) -> str:
    """HMAC-SHA256, keyed with the audit key, over the previous hash and this event's
    canonical JSON."""
    message = f"{prev_hash}\n{canonical_content(values)}".encode()
    return hmac.new(audit_key(), message, hashlib.sha256).hexdigest()


def _revisions(ids: Iterable[str] | None) -> str:
    return " ".join(sorted(ids or ()))[:500]


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])


def audit_record(
    *,
    action: str,
    user=None,
    request: HttpRequest | None = None,
    project=None,
    environment=None,
    job_id: int | None = None,
    from_revisions: Iterable[str] | None = None,
    to_revisions: Iterable[str] | None = None,
    details: dict | None = None,
    system_actor: str | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction (or a new one).

    The actor is `user` if given, else the current web request's user, else the system actor
    set by `acting_as`; `system_actor` names a system actor outright (a state read that a page
    view happened to trigger is still Retort's observation, not the viewer's). Call it from
    inside the transaction that makes the change it records, so the two commit or roll back
    together.
    """
    if system_actor is not None:
        request, actor = None, Actor(AuditEvent.ActorKind.SYSTEM, None, system_actor)
    else:
        request = request if request is not None else _current_request.get()
        actor = _actor_for(user, request)
    if environment is not None and project is None:
        project = environment.project
    values = {
        "created_at": timezone.now(),
        "actor_kind": str(actor.kind),
        "actor_id": actor.id,
        "actor_name": actor.name[:150],
        "action": action[:50],
        "project_id": project.pk if project is not None else None,
        "project_name": project.name if project is not None else "",
        "project_slug": project.slug if project is not None else "",
        "environment_id": environment.pk if environment is not None else None,
        "environment_name": environment.name if environment is not None else "",
        "environment_slug": environment.slug if environment is not None else "",
        "job_id": job_id,
        "from_revisions": _revisions(from_revisions),
        "to_revisions": _revisions(to_revisions),
        "details_json": canonical_details(details),
        "ip": client_ip(request) if request is not None else "",
        "user_agent": (request.META.get("HTTP_USER_AGENT", "") if request else "")[:300],
    }
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        values["seq"] = seq
        event = AuditEvent(**values, prev_hash=prev_hash, hash=content_hash(values, prev_hash))
        event._chained = True
        event.save()
    return event


def action_label(action: str) -> str:
    return ACTIONS.get(action, action.replace("_", " "))


def known_actions(extra: Sequence[str] = ()) -> list[str]:
    return sorted(set(ACTIONS) | set(extra))
