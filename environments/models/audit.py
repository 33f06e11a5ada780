"""The audit trail's rows: append-only events chained by SHA-256, and checkpoints."""

from __future__ import annotations

import json

from django.db import models
from django.urls import reverse


class AuditImmutable(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditImmutable("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise AuditImmutable("Audit events are append-only: they cannot be deleted.")

    def bulk_create(self, *args, **kwargs):
        raise AuditImmutable("Audit events are written one by one by audit_record().")

    def bulk_update(self, *args, **kwargs):
        raise AuditImmutable("Audit events are append-only: they cannot be updated.")


class AuditEvent(models.Model):
    """One thing that happened, chained to the event before it by a SHA-256.

    Rows are only ever inserted, by `environments.audit.audit_record`. References to users,
    projects and environments are plain ids with the names copied beside them, so deleting a
    project or a user never has to touch (and cannot break) the trail.
    """

    class ActorKind(models.TextChoices):
        USER = "user"
        SYSTEM = "system"
        ANONYMOUS = "anonymous"

    seq = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=50)
    project_id = models.BigIntegerField(null=True, blank=True)
    project_name = models.CharField(max_length=100, blank=True)
    project_slug = models.CharField(max_length=100, blank=True)
    environment_id = models.BigIntegerField(null=True, blank=True)
    environment_name = models.CharField(max_length=100, blank=True)
    environment_slug = models.CharField(max_length=100, blank=True)
    job_id = models.BigIntegerField(null=True, blank=True)
    from_revisions = models.CharField(max_length=500, blank=True)
    to_revisions = models.CharField(max_length=500, blank=True)
    details_json = models.TextField(default="{}")
    ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["action", "-seq"], name="audit_action"),
            models.Index(fields=["environment_id", "-seq"], name="audit_environment"),
            models.Index(fields=["project_id", "-seq"], name="audit_project"),
            models.Index(fields=["actor_name", "-seq"], name="audit_actor"),
            models.Index(fields=["created_at"], name="audit_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_name or self.actor_kind}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding or not getattr(self, "_chained", False):
            raise AuditImmutable(
                "Audit events are append-only and written only through audit_record()."
            )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditImmutable("Audit events are append-only: they cannot be deleted.")

    @property
    def details(self) -> dict:
        return json.loads(self.details_json)

    @property
    def from_list(self) -> list[str]:
        return self.from_revisions.split() if self.from_revisions else []

    @property
    def to_list(self) -> list[str]:
        return self.to_revisions.split() if self.to_revisions else []

    def environment_url(self) -> str | None:
        if self.environment_slug and self.project_slug:
            return reverse("environment_detail", args=[self.project_slug, self.environment_slug])
        return None


class AuditCheckpoint(models.Model):
    """How far the chain has been verified, so the audit page checks only what is new.

    A single row (pk=1). A full walk (`manage.py verify_audit`, the nightly task) starts from
    scratch and rewrites it.
    """

    verified_seq = models.PositiveBigIntegerField(default=0)
    verified_hash = models.CharField(max_length=64, default="0" * 64)
    verified_at = models.DateTimeField(null=True, blank=True)
    broken_seq = models.PositiveBigIntegerField(null=True, blank=True)
    broken_reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"audit verified through event {self.verified_seq}"
