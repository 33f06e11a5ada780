"""Verifying the audit trail: walk the chain from the last verified checkpoint (or from the
first event), check every link with the key, and publish the verified head outside the
database (a file, the log, the webhook) so a trail wiped or shortened in the database is caught
on the next full verification."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from environments.audit import GENESIS, HASHED_FIELDS, audit_record, canonical_time, content_hash
from environments.models import AuditCheckpoint, AuditEvent
from environments.notify import post

logger = logging.getLogger(__name__)


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
            f"{canonical_time(values['created_at'])}) does not match its hash: "
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
