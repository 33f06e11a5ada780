"""What Retort read from the target databases and found: each read of a version table, the
schemas migrations build, and a project's drift as the last check found it."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from environments.core.status import Status
from environments.models.registry import Environment, Project


class SnapshotQuerySet(models.QuerySet):
    def newest_ids(self, environments: models.QuerySet) -> models.QuerySet:
        """`environments` (a queryset) annotated with `newest`: the id of each one's newest
        read, found along the `snapshot_latest` index; None for one never read."""
        newest = (
            self.filter(environment=models.OuterRef("pk"))
            .order_by("-checked_at", "-id")
            .values("id")
        )
        return environments.annotate(newest=models.Subquery(newest[:1]))

    def latest_of(self, environments) -> dict[int, Snapshot]:
        """Each environment's newest read, by environment id, in two queries however many
        environments there are; none for one never read."""
        ids = [environment.pk for environment in environments]
        if not ids:
            return {}
        wanted = self.newest_ids(Environment.objects.filter(pk__in=ids))
        found = self.filter(pk__in=wanted.values("newest"))
        return {snapshot.environment_id: snapshot for snapshot in found}


class Snapshot(models.Model):
    """One read of an environment's version table: what it held and what that meant."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="snapshots")
    checked_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=20, choices=[(s.value, s.value) for s in Status])
    heads = models.JSONField(default=list)
    script_heads = models.JSONField(default=list)
    pending = models.JSONField(default=list)
    unknown = models.JSONField(default=list)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [models.Index(fields=["environment", "-checked_at"], name="snapshot_latest")]

    def __str__(self) -> str:
        return f"{self.environment} {self.status} at {self.checked_at:%Y-%m-%d %H:%M:%S}"

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
            "status": self.status,
            "heads": list(self.heads),
            "script_heads": list(self.script_heads),
            "pending": list(self.pending),
            "unknown": list(self.unknown),
            "error": self.error or None,
            "checked_at": self.checked_at.isoformat(),
        }


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
