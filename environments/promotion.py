"""The promotion rule: an environment may only move to revisions the environment it promotes
from (staging, for prod) has held for long enough, judged from that environment's reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from environments.core.status import Status
from environments.models import Job
from environments.reads import environment_read

READ_FAILURES = [status.value for status in Status if status.is_read_failure]


def _revisions(ids) -> str:
    return ", ".join(ids) or "nothing"


@dataclass(frozen=True)
class Verdict:
    """The promotion rule's answer for one job: does it apply, does it hold, and why."""

    applies: bool
    ok: bool
    text: str
    held_since: datetime | None = None
    eligible_at: datetime | None = None


def _duration(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 1:
        return f"{max(int(delta.total_seconds() // 60), 0)} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def promotion_verdict(job: Job, *, read: bool = False, now: datetime | None = None) -> Verdict:
    """Whether the environment the policy promotes from has held the job's target revisions
    for long enough. Walks that environment's changes back from the newest: it held them since
    the oldest change of the unbroken run that holds them. Failed reads say nothing and are
    skipped. `read=True` reads the source environment live first."""
    environment = job.environment
    source = environment.promotion_from
    if source is None:
        return Verdict(False, True, "No promotion rule: this environment may move to any revision.")
    if job.kind not in (Job.Kind.UPGRADE, Job.Kind.STAMP) or not job.to_heads:
        return Verdict(
            False, True, f"The promotion rule covers upgrades and stamps; this is a {job.kind}."
        )
    if read:
        environment_read(environment=source)
    index, error = environment.project.load_scripts()
    if index is None or index.revision_map is None:
        return Verdict(
            True, False, f"The scripts cannot be read, so the rule cannot be checked: {error}"
        )
    wanted = sorted(job.to_heads)
    hours = environment.promotion_min_hours
    now = now or timezone.now()
    cutoff = now - timedelta(hours=hours)
    holds_cache: dict[tuple[str, ...], bool] = {}

    def holds(heads) -> bool:
        key = tuple(sorted(heads))
        if key not in holds_cache:
            known = [head for head in key if index.knows(head)]
            applied = index.holds(known)
            holds_cache[key] = all(revision in applied for revision in wanted)
        return holds_cache[key]

    since = None
    reads = (
        source.changes.exclude(status__in=READ_FAILURES)
        .order_by("-at", "-id")
        .values_list("at", "heads")
    )
    newest_heads = None
    for checked_at, heads in reads.iterator(chunk_size=500):
        if newest_heads is None:
            newest_heads = heads
        if not holds(heads):
            break
        since = checked_at
        if checked_at <= cutoff:
            break
    what = _revisions(wanted)
    if since is None:
        if newest_heads is None:
            text = f"{source.name} has never been read, so it is not known to hold {what}."
        else:
            text = (
                f"{source.name} does not hold {what} (it holds {_revisions(newest_heads)}); "
                f"{environment.name} may only move to revisions {source.name} holds."
            )
        return Verdict(True, False, text)
    held = now - since
    eligible_at = since + timedelta(hours=hours)
    asked = f"the policy asks for {hours} h" if hours else "the policy asks only that it holds them"
    if since <= cutoff:
        if not hours:
            text = f"{source.name} holds {what}, as the policy asks."
        else:
            text = f"{source.name} has held {what} for at least {_duration(held)}; {asked}."
        return Verdict(True, True, text, since, eligible_at)
    text = (
        f"{source.name} has held {what} for only {_duration(held)}; {asked}. "
        f"Eligible from {eligible_at:%Y-%m-%d %H:%M} UTC."
    )
    return Verdict(True, False, text, since, eligible_at)
