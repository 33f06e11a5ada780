"""What Retort read from the target databases and found: each environment's current state
and its changes, the schemas migrations build, and a project's drift as the last check found
it."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from environments.core.status import Status
from environments.models.registry import Environment, Project


class CurrentStateQuerySet(models.QuerySet):
    def ensure(self, environment_ids) -> None:
        """A row for each of these environments (unread ones get an empty one)."""
        self.bulk_create(
            [CurrentState(environment_id=pk) for pk in environment_ids], ignore_conflicts=True
        )

    def of(self, environments, *, unread: bool = False) -> dict[int, CurrentState]:
        """Each environment's current state, by environment id, in one query however many
        environments there are; none for one never read (unless `unread`: a row may say a
        first read was asked for)."""
        ids = [environment.pk for environment in environments]
        if not ids:
            return {}
        found = self.filter(environment_id__in=ids)
        if not unread:
            found = found.filter(checked_at__isnull=False)
        return {state.environment_id: state for state in found}


class CurrentState(models.Model):
    """What the newest read of an environment found: one row per environment, updated in
    place when a newer read lands. Its changes are kept as `StateChange` rows."""

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, primary_key=True, related_name="current_state"
    )
    checked_at = models.DateTimeField(null=True, blank=True)  # None: asked for, never read
    status = models.CharField(max_length=20, blank=True)  # a `Status`; "" never read
    heads = models.JSONField(default=list)
    script_heads = models.JSONField(default=list)
    pending = models.JSONField(default=list)
    unknown = models.JSONField(default=list)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # since when the status and heads are what they are (the newest StateChange's time)
    changed_at = models.DateTimeField(null=True, blank=True)
    # the heads of the newest read that succeeded, and when: what a failed read leaves known
    known_heads = models.JSONField(default=list)
    known_at = models.DateTimeField(null=True, blank=True)
    # PostgreSQL: another session held the migration lock when it was read (a migration is
    # running there): pid, client, application, user, since (core/versions.lock_holder)
    migration_lock = models.JSONField(null=True, blank=True)
    # someone asked for a read (Refresh): it is under way until a read is stored (which clears it)
    requested_at = models.DateTimeField(null=True, blank=True)
    # the scheduled refresh sent a read to the workers (so the next tick does not send another)
    queued_at = models.DateTimeField(null=True, blank=True)

    objects = CurrentStateQuerySet.as_manager()

    def __str__(self) -> str:
        when = f"{self.checked_at:%Y-%m-%d %H:%M:%S}" if self.checked_at else "never"
        return f"{self.environment} {self.status or 'not read'} at {when}"

    # a read asked for and not done after this long has failed on its way: say so
    READ_GIVES_UP = timedelta(minutes=2)

    @property
    def migration_lock_since(self) -> datetime | None:
        """When the session holding the migration lock began (None: nobody holds it)."""
        since = (self.migration_lock or {}).get("since")
        return datetime.fromisoformat(since) if since else None

    @property
    def unanswered(self) -> bool:
        """A read was asked for and none was stored since."""
        return self.requested_at is not None

    @property
    def reading(self) -> bool:
        """A read someone asked for is under way (and has not given up)."""
        return self.unanswered and timezone.now() - self.requested_at < self.READ_GIVES_UP

    @property
    def read_gave_up(self) -> bool:
        return self.unanswered and not self.reading

    @property
    def status_enum(self) -> Status:
        return Status(self.status)

    @property
    def is_read_failure(self) -> bool:
        return self.status_enum.is_read_failure

    def as_status_dict(self) -> dict[str, object]:
        """The shape `migration_status --json` and /api/v1/status promise."""
        return {
            "project": self.environment.project.slug,
            "environment": self.environment.slug,
            "labels": dict(self.environment.labels or {}),
            "status": self.status,
            "heads": list(self.heads),
            "script_heads": list(self.script_heads),
            "pending": list(self.pending),
            "unknown": list(self.unknown),
            "error": self.error or None,
            "checked_at": self.checked_at.isoformat(),
        }


class StateChange(models.Model):
    """A read that found another status or other heads than the read before it: the
    environment's history. Reads that change nothing write no row."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField()  # the read that saw it
    from_status = models.CharField(max_length=20, blank=True)  # "" for the first read
    status = models.CharField(max_length=20)
    from_heads = models.JSONField(default=list)
    heads = models.JSONField(default=list)
    pending = models.PositiveIntegerField(default=0)  # how many revisions were pending
    error = models.TextField(blank=True)
    # a change of revisions: the Retort job that explains it, or made outside Retort
    job = models.ForeignKey(
        "environments.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    out_of_band = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["environment", "-at"], name="change_latest")]

    def __str__(self) -> str:
        return f"{self.environment} {self.from_status or 'new'} → {self.status} at {self.at}"

    @property
    def revisions_changed(self) -> bool:
        """The revisions changed (not just the status): by a Retort job, or outside Retort."""
        return self.job_id is not None or self.out_of_band


class ExpectedSchema(models.Model):
    """The schema a database at `heads` should have: built by running the project's
    migrations from base on a scratch database of `dialect`, reflected, kept per revision
    files' contents (`scripts_sha256`), so an edited migration builds anew."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    heads_key = models.CharField(max_length=500)  # the heads, sorted, space-separated
    dialect = models.CharField(max_length=30)
    scripts_sha256 = models.CharField(max_length=64)
    schema_json = models.TextField(blank=True)
    error = models.TextField(blank=True)
    built_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "heads_key", "dialect", "scripts_sha256"],
                name="one_expected_schema_per_revision",
            )
        ]

    def __str__(self) -> str:
        return f"expected {self.dialect} schema of {self.project} at {self.heads_key}"


class DriftState(models.Model):
    """A project's drift as the last scheduled check found it (one row per project)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="drift_state")
    findings = models.JSONField(default=list)  # Finding.as_dict() for each
    checked_at = models.DateTimeField(null=True, blank=True)  # None: asked for, never checked
    # what the drift page shows besides the findings: the environments in promotion order, the
    # revision matrix, the pairs compared, and what could not be read (drift.drift_record)
    report = models.JSONField(default=dict, blank=True)
    # a person's "Check now": a check is under way while requested_at is after checked_at
    requested_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"drift of {self.project}: {len(self.findings)} finding(s)"

    # a check asked for and not done after this long has failed on its worker: ask again
    CHECK_GIVES_UP = timedelta(minutes=15)

    @property
    def unanswered(self) -> bool:
        """A check was asked for after the last one stored."""
        return self.requested_at is not None and (
            self.checked_at is None or self.requested_at > self.checked_at
        )

    @property
    def checking(self) -> bool:
        """A check someone asked for has not finished yet (nor given up)."""
        return self.unanswered and timezone.now() - self.requested_at < self.CHECK_GIVES_UP

    @property
    def gave_up(self) -> bool:
        """The last check asked for never reported back."""
        return self.unanswered and not self.checking

    def involving(self, slug: str, *, kinds=("schema", "expected", "unknown_revision")) -> list:
        return [f for f in self.findings if slug in f["environments"] and f["kind"] in kinds]


class RoundTripState(models.Model):
    """A project's round-trip tests as a worker last ran them (round_trips.py): one row per
    project, the results per dialect and revision; a run asked for is under way while
    requested_at is after checked_at."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, related_name="round_trip_state"
    )
    results = models.JSONField(default=list)  # round_trips.round_trip() for each dialect
    error = models.TextField(blank=True)  # why it could not run at all
    checked_at = models.DateTimeField(null=True, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    GIVES_UP = timedelta(minutes=30)

    def __str__(self) -> str:
        return f"round trips of {self.project}"

    @property
    def running(self) -> bool:
        asked = self.requested_at is not None and (
            self.checked_at is None or self.requested_at > self.checked_at
        )
        return asked and timezone.now() - self.requested_at < self.GIVES_UP

    @property
    def ok(self) -> bool:
        return bool(self.results) and not self.error and all(r["ok"] for r in self.results)


class ScriptsDigest(models.Model):
    """What the newest full read of a project's scripts found that the CI gate can reuse while
    none of their files changed: the heads, whether a database at them is current, and the
    heads verdict, with `key` saying what it holds for (the project's settings, the config
    files', revision files' and consulted modules' sizes and mtimes). Written by the workers'
    and the gate's reads, never by a page (environments/script_digests.py)."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="scripts_digest"
    )
    key_hash = models.CharField(max_length=64)
    key = models.JSONField()
    answer = models.JSONField()
    made_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project} scripts at {', '.join(self.answer.get('heads', [])) or 'base'}"
