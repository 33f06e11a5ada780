"""The audit trail: one way in (`audit_record`), a keyed hash chain, and its verification.

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
import os
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from environments.core.versions import redact_urls
from environments.models import AuditCheckpoint, AuditEvent
from environments.notify import post

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


def _canonical_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def audit_key() -> bytes:
    configured = settings.RETORT_AUDIT_KEY
    if configured:
        return configured.encode()
    return hashlib.sha256(f"retort audit chain\n{settings.SECRET_KEY}".encode()).digest()


def canonical_content(values: dict, version: int = HASH_VERSION) -> str:
    content = {name: values[name] for name in HASHED_FIELDS}
    content["created_at"] = _canonical_time(content["created_at"])
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


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    verified_through: int  # the last event whose whole chain checked out
    checked: int  # events checked in this walk
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""

    @property
    def message(self) -> str:
        if self.ok:
            if not self.verified_through:
                return "The audit trail is empty."
            return f"Chain verified through event {self.verified_through}."
        return f"Chain broken at event {self.broken_seq}: {self.reason}"


def _link_problem(
    values: dict, stored_prev: str, stored_hash: str, expected_seq: int, prev_hash: str
) -> tuple[int, str] | None:
    """(event number, reason) if this row does not continue the chain, else None."""
    seq = values["seq"]
    if seq != expected_seq:
        return expected_seq, (
            f"it is missing (the event after {expected_seq - 1} is {seq}); events were deleted."
        )
    if stored_prev != prev_hash:
        return seq, f"its link to event {seq - 1} does not match that event's hash."
    if content_hash(values, prev_hash) != stored_hash:
        who = values["actor_name"] or values["actor_kind"]
        return seq, (
            f"its content ({values['action']} by {who} at "
            f"{_canonical_time(values['created_at'])}) does not match its hash: "
            "it was altered after it was written."
        )
    return None


def chain_walk(*, after_seq: int = 0, after_hash: str = GENESIS) -> ChainReport:
    """Check every event after `after_seq`, in order, against its own content and its link."""
    expected_seq, prev_hash, checked = after_seq + 1, after_hash, 0
    rows = (
        AuditEvent.objects.filter(seq__gt=after_seq)
        .order_by("seq")
        .values_list(*HASHED_FIELDS, "prev_hash", "hash")
        .iterator(chunk_size=2000)
    )
    width = len(HASHED_FIELDS)
    for row in rows:
        values = dict(zip(HASHED_FIELDS, row[:width], strict=True))
        problem = _link_problem(values, row[width], row[width + 1], expected_seq, prev_hash)
        if problem is not None:
            return ChainReport(False, expected_seq - 1, checked, prev_hash, *problem)
        prev_hash, expected_seq, checked = row[width + 1], expected_seq + 1, checked + 1
    return ChainReport(True, expected_seq - 1, checked, prev_hash)


def _checkpoint() -> AuditCheckpoint:
    return AuditCheckpoint.objects.get_or_create(pk=1)[0]


def _save_checkpoint(report: ChainReport) -> None:
    fields = {"verified_at": timezone.now()}
    if report.ok:
        fields |= {
            "verified_seq": report.verified_through,
            "verified_hash": report.head_hash,
            "broken_seq": None,
            "broken_reason": "",
        }
    else:
        fields |= {"broken_seq": report.broken_seq, "broken_reason": report.reason}
    AuditCheckpoint.objects.filter(pk=1).update(**fields)


def _tail_check(report: ChainReport, checkpoint: AuditCheckpoint) -> ChainReport:
    """Events once verified cannot have vanished from the end of the chain, nor changed."""
    return _anchor_check(report, checkpoint.verified_seq, checkpoint.verified_hash)


def _anchor_check(
    report: ChainReport, seq: int, expected_hash: str, since: str = ""
) -> ChainReport:
    """The event once verified as the head must still be there with the hash it had: a chain
    that verifies but differs there was rewritten (or wiped and begun again)."""
    if not report.ok or not seq:
        return report
    since = f" {since}" if since else ""
    if report.verified_through < seq:
        return ChainReport(
            False,
            report.verified_through,
            report.checked,
            report.head_hash,
            report.verified_through + 1,
            f"it is missing: the chain was verified through event {seq}{since} and now ends "
            f"{'empty' if not report.verified_through else 'before it'}; events were deleted or "
            "the trail was wiped.",
        )
    stored = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    if stored != expected_hash:
        return ChainReport(
            False,
            seq - 1,
            report.checked,
            report.head_hash,
            seq,
            f"it no longer has the hash it had when it was verified{since}: the trail up to it "
            "was rewritten.",
        )
    return report


def _outside_head() -> dict | None:
    """The head the last full verification wrote outside the database, if readable."""
    try:
        data = json.loads(settings.RETORT_AUDIT_HEAD_FILE.read_text(encoding="utf-8"))
        return {"seq": int(data["seq"]), "hash": str(data["hash"]), "at": str(data["at"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _publish_head(report: ChainReport) -> None:
    """Write the verified head where the database cannot reach it: a file beside Retort's
    data, the log, and the webhook when one is configured."""
    head = {
        "seq": report.verified_through,
        "hash": report.head_hash,
        "at": timezone.now().isoformat(timespec="seconds"),
    }
    path = settings.RETORT_AUDIT_HEAD_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(head), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        logger.error("The audit head could not be written to %s: %s", path, exc)
    logger.info("Audit chain verified: head event %s, hash %s", head["seq"], head["hash"])
    if settings.RETORT_WEBHOOK_URL:
        error = post(
            settings.RETORT_WEBHOOK_URL,
            {
                "event": "audit_verified",
                "text": f"Retort's audit chain verified through event {head['seq']} "
                f"(hash {head['hash'][:16]}…).",
                "audit_head": head,
            },
            timeout=settings.RETORT_WEBHOOK_TIMEOUT,
        )
        if error:
            logger.warning("The audit head could not be sent to the webhook: %s", error)


def audit_verify_full() -> ChainReport:
    """Walk the whole chain from the first event (`manage.py verify_audit`, nightly task).

    Besides every hash and link, the head verified last time (in the database's checkpoint,
    and in the file outside it) must still be there unchanged. A break found before is never
    cleared by a walk that passes now: only `audit_acknowledge` clears it, audited."""
    checkpoint = _checkpoint()
    report = _tail_check(chain_walk(), checkpoint)
    outside = _outside_head()
    if outside is not None:
        report = _anchor_check(
            report, outside["seq"], outside["hash"], f"on {outside['at']} (recorded outside)"
        )
    if report.ok and checkpoint.broken_seq is not None:
        return ChainReport(
            False,
            report.verified_through,
            report.checked,
            report.head_hash,
            checkpoint.broken_seq,
            f"{checkpoint.broken_reason} (found earlier; the chain verifies now, but a break "
            "is cleared only when someone acknowledges it: manage.py verify_audit "
            "--acknowledge 'what happened').",
        )
    _save_checkpoint(report)
    if report.ok and report.verified_through:
        _publish_head(report)
    return report


def audit_acknowledge(*, reason: str) -> ChainReport:
    """Clear a recorded break after a person has looked into it; the acknowledgement is itself
    an audit event, and the chain is walked again from the start."""
    checkpoint = _checkpoint()
    if checkpoint.broken_seq is None:
        return audit_verify_full()
    audit_record(
        action="audit_break_acknowledged",
        details={
            "broken_event": checkpoint.broken_seq,
            "broken_reason": checkpoint.broken_reason,
            "reason": reason,
        },
    )
    AuditCheckpoint.objects.filter(pk=1).update(broken_seq=None, broken_reason="")
    report = chain_walk()
    _save_checkpoint(report)
    if report.ok:
        _publish_head(report)
    return report


def audit_verify_incremental() -> ChainReport:
    """Check only the events added since the last verification (the audit page calls it)."""
    checkpoint = _checkpoint()
    if checkpoint.broken_seq is not None:
        return ChainReport(
            False,
            checkpoint.broken_seq - 1,
            0,
            "",
            checkpoint.broken_seq,
            checkpoint.broken_reason,
        )
    anchor = checkpoint.verified_seq
    if anchor:
        stored = AuditEvent.objects.filter(seq=anchor).values_list("hash", flat=True).first()
        if stored != checkpoint.verified_hash:
            report = ChainReport(
                False,
                anchor - 1,
                0,
                "",
                anchor,
                "it is missing or no longer has the hash it had when it was verified.",
            )
            _save_checkpoint(report)
            return report
    report = _tail_check(
        chain_walk(after_seq=anchor, after_hash=checkpoint.verified_hash), checkpoint
    )
    _save_checkpoint(report)
    return report


# --- export ---------------------------------------------------------------------------------

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
        item["created_at"] = _canonical_time(item["created_at"])
        yield item


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet will not run: text that opens like a formula (=, +, -, @, a tab or
    a carriage return) gets a leading apostrophe. Strings from outside — a User-Agent, a
    username someone typed — land in the export, and the export is opened in Excel."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def action_label(action: str) -> str:
    return ACTIONS.get(action, action.replace("_", " "))


def known_actions(extra: Sequence[str] = ()) -> list[str]:
    return sorted(set(ACTIONS) | set(extra))


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
