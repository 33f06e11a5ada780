"""Webhook notifications: a JSON POST with a Slack-compatible `text` when a job is requested,
approved, rejected, expires or finishes, and when a rollout is requested, decided, ends a wave,
stops or ends.

Messages are written to an outbox (`Notification`) in the transaction of the change they
report, and sent by a worker after it commits: one sender per project at a time, each
project's messages in the order they were written, with a timeout per attempt and retries with
a growing delay. A receiver that is down only delays its own project's messages; it never
blocks or fails a job. After the last attempt a message is marked failed (shown in the admin)
and the next one goes. Only the URL entered is ever called: redirects are not followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from environments import dispatch
from environments.models import Job, Notification, Rollout

_PG_LOCK_KEY = 0x72746E74  # "rtnt": with the project's id, one sender per project


def _escape(text: object) -> str:
    """Slack's mrkdwn escaping: user text can neither mention @channel nor forge a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _job_link(job: Job) -> str:
    return f"<{settings.RETORT_BASE_URL}{job.get_absolute_url()}|job #{job.pk}>"


def _what(job: Job) -> str:
    environment = job.environment
    where = f"{_escape(environment.project.name)}/{_escape(environment.name)}"
    return f"{job.kind} *{where}* to `{_escape(job.target)}`"


def _text(job: Job, event: str, actor: str, comment: str, given: int, required: int) -> str:
    who = _escape(actor) if actor else "Retort"
    said = f": “{_escape(comment)}”" if comment else ""
    if event == "job_requested":
        count = len(job.revisions)
        risky = sum(1 for f in job.findings if f.get("severity") == "danger")
        risks = f", {risky} destructive" if risky else ""
        return (
            f"{who} asks to {_what(job)} ({count} revision{'s' if count != 1 else ''}{risks}); "
            f"{required} approval{'s' if required != 1 else ''} needed: {_job_link(job)}"
        )
    if event == "job_approved":
        return f"{who} approved {_job_link(job)} ({given} of {required}), {_what(job)}{said}"
    if event == "job_rejected":
        return f"{who} rejected {_job_link(job)}, {_what(job)}{said}"
    if event == "job_expired":
        return f"{_job_link(job)} expired without the approvals it needed: {_what(job)}"
    outcome = job.status
    detail = f": {_escape(job.error.splitlines()[0][:300])}" if job.error else ""
    heads = ", ".join(job.result_heads or []) or "nothing"
    if job.status == Job.Status.SUCCEEDED:
        detail = f"; the database holds {_escape(heads)}"
    return f"{_job_link(job).capitalize()} {outcome}, {_what(job)}{detail}"


def job_event(job: Job, event: str, *, actor=None, comment: str = "") -> Notification | None:
    """Put a message about `job` in the outbox (inside the caller's transaction); nothing when
    neither the project nor RETORT_WEBHOOK_URL names a webhook."""
    project = job.environment.project
    if not project.webhook_url() or job.rollout_id is not None:
        return None  # a rollout's targets say nothing each: the rollout speaks per wave
    required = job.required_approvals
    given = job.approvals_counted().count() if required else 0
    actor_name = getattr(actor, "username", "") or ""
    payload = {
        "text": _text(job, event, actor_name, comment, given, required),
        "event": event,
        "actor": actor_name or None,
        "comment": comment or None,
        "job": {
            "id": job.pk,
            "url": settings.RETORT_BASE_URL + job.get_absolute_url(),
            "project": project.slug,
            "environment": job.environment.slug,
            "kind": job.kind,
            "target": job.target,
            "status": job.status,
            "from_heads": list(job.from_heads),
            "to_heads": list(job.to_heads),
            "revisions": list(job.revisions),
            "plan_sha256": job.plan_sha256,
            "error": job.error or None,
        },
        "approvals": {"given": given, "required": required},
        "at": timezone.now().isoformat(),
    }
    message = Notification.objects.create(project=project, job=job, event=event, payload=payload)
    project_id = project.pk
    transaction.on_commit(lambda: _send_soon(project_id))
    return message


def _rollout_text(rollout: Rollout, event: str, actor: str, comment: str, wave) -> str:
    who = _escape(actor) if actor else "Retort"
    link = f"<{settings.RETORT_BASE_URL}{rollout.get_absolute_url()}|rollout #{rollout.pk}>"
    what = (
        f"*{_escape(rollout.project.name)}* ({_escape(rollout.selection)}) to "
        f"`{_escape(rollout.target)}`"
    )
    said = f": “{_escape(comment)}”" if comment else ""
    if event == "rollout_requested":
        return f"{who} asks to roll out {what}: {link}"
    if event in ("rollout_approved", "rollout_rejected"):
        return f"{who} {event.removeprefix('rollout_')} {link}, {what}{said}"
    if event == "rollout_wave_finished" and wave is not None:
        return f"{link.capitalize()}: wave {wave.number} ({_escape(wave.name)}) finished, {what}"
    note = f": {_escape(rollout.note.splitlines()[0][:300])}" if rollout.note else ""
    return f"{link.capitalize()} {rollout.status}, {what}{note}"


def rollout_event(
    rollout: Rollout, event: str, *, actor=None, comment: str = "", wave=None, counts=None
) -> Notification | None:
    """Put a message about `rollout` in the outbox (inside the caller's transaction)."""
    project = rollout.project
    if not project.webhook_url():
        return None
    actor_name = getattr(actor, "username", "") or ""
    payload = {
        "text": _rollout_text(rollout, event, actor_name, comment, wave),
        "event": event,
        "actor": actor_name or None,
        "comment": comment or None,
        "rollout": {
            "id": rollout.pk,
            "url": settings.RETORT_BASE_URL + rollout.get_absolute_url(),
            "project": project.slug,
            "target": rollout.target,
            "selection": rollout.labels,
            "status": rollout.status,
            "note": rollout.note or None,
            "plan_sha256": rollout.plan_sha256,
        },
        "wave": None
        if wave is None
        else {
            "number": wave.number,
            "name": wave.name,
            "started_at": wave.started_at.isoformat() if wave.started_at else None,
            "finished_at": wave.finished_at.isoformat() if wave.finished_at else None,
        },
        "targets": counts,
        "at": timezone.now().isoformat(),
    }
    message = Notification.objects.create(project=project, event=event, payload=payload)
    project_id = project.pk
    transaction.on_commit(lambda: _send_soon(project_id))
    return message


def _send_soon(project_id: int, countdown: float = 0) -> None:
    """Nudge a worker to deliver this project's outbox; if the broker cannot take the nudge,
    beat's schedule delivers it anyway (the messages are rows, not broker messages)."""
    dispatch.send("notifications_send", project_id, countdown=max(countdown, 0))


@contextlib.contextmanager
def _one_sender(project_id: int) -> Iterator[bool]:
    """Yield whether this process is the one sender of this project's messages now: a
    PostgreSQL advisory lock, or a file lock beside the SQLite database (the demo's workers
    share one machine). One per project: a dead receiver holds up only its own project."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_PG_LOCK_KEY, project_id])
            mine = cursor.fetchone()[0]
        try:
            yield mine
        finally:
            if mine:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_PG_LOCK_KEY, project_id])
        return
    path = Path(settings.DATA_DIR, "notifications", f"project-{project_id}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def notifications_send(project_id: int | None = None) -> int:
    """Deliver one project's due messages, oldest first; returns how many were delivered.

    Without a project (beat's sweep), each project with messages waiting gets a task of its
    own, so projects are delivered side by side and a dead receiver delays only its own."""
    pending = Notification.objects.filter(state=Notification.State.PENDING)
    if project_id is None:
        for waiting in sorted(set(pending.values_list("project_id", flat=True))):
            _send_soon(waiting)
        return 0
    with _one_sender(project_id) as mine:
        if not mine:
            return 0  # the sender at work picks ours up (and the beat task sweeps behind it)
        return _drain(project_id)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook is delivered to the URL an admin entered, never where a 3xx points: a
    redirect to an internal address would make Retort a proxy into the network."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def webhook_host_problem(url: str) -> str | None:
    """Why `url` may not be used as a webhook (None when it may): http(s) only, and a host in
    RETORT_WEBHOOK_HOSTS when that allow-list is set."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "A webhook must be an http:// or https:// URL."
    allowed = settings.RETORT_WEBHOOK_HOSTS
    if allowed and parsed.hostname.lower() not in allowed:
        return (
            f"The webhook's host is not one of RETORT_WEBHOOK_HOSTS ({', '.join(allowed)}); "
            "ask whoever runs Retort to add it."
        )
    return None


def post(url: str, payload: dict, *, timeout: float) -> str | None:
    """POST the payload as JSON; None on a 2xx answer, else what went wrong — in words that
    carry neither the URL (it may hold the receiver's key) nor what the network said (which
    would tell an admin which internal ports are open)."""
    refused = webhook_host_problem(url)
    if refused:
        return refused
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "Retort webhook"},
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return None
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            return f"the receiver answered HTTP {exc.code}; redirects are not followed"
        return f"the receiver answered HTTP {exc.code}"
    except (OSError, ValueError):
        return f"the receiver could not be reached within {timeout:g} s"


def _drain(project_id: int) -> int:
    delivered = 0
    while True:
        message = (
            Notification.objects.select_related("project")
            .filter(project_id=project_id, state=Notification.State.PENDING)
            .order_by("id")
            .first()
        )
        if message is None:
            return delivered
        now = timezone.now()
        if message.next_attempt_at > now:
            _send_soon(project_id, (message.next_attempt_at - now).total_seconds())
            return delivered  # later messages wait behind it, to keep the order
        url = message.project.webhook_url()
        error = (
            post(url, message.payload, timeout=settings.RETORT_WEBHOOK_TIMEOUT)
            if url
            else ("no webhook is configured any more")
        )
        message.attempts += 1
        if error is None:
            message.state, message.sent_at, message.last_error = (
                Notification.State.SENT,
                timezone.now(),
                "",
            )
            delivered += 1
        elif message.attempts >= settings.RETORT_WEBHOOK_ATTEMPTS or not url:
            message.state, message.last_error = Notification.State.FAILED, error
        else:
            delay = settings.RETORT_WEBHOOK_BACKOFF * 2 ** (message.attempts - 1)
            message.next_attempt_at = now + timedelta(seconds=delay)
            message.last_error = error
        message.save(
            update_fields=["state", "attempts", "sent_at", "last_error", "next_attempt_at"]
        )
