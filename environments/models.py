"""The registry (projects and their database targets) and what Retort read from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone

from dashboard.lib import secretbox
from environments.core import heads as core_heads
from environments.core import runner, scripts
from environments.core.status import Status
from environments.core.versions import display_url, url_problem


class AuditedModel(models.Model):
    """Saved and deleted inside a transaction, so the audit event (written by the signal
    receivers in `environments.signals`) commits or rolls back with the change."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)


def default_command() -> list[str]:
    return ["python", "-m", "alembic", "-c", "alembic.ini"]


class Project(AuditedModel):
    """An Alembic script directory and how to run alembic for it."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    alembic_ini = models.CharField(
        max_length=500, blank=True, help_text="Path to alembic.ini, read as configuration only."
    )
    script_location = models.CharField(
        max_length=500, blank=True, help_text="Overrides the ini's script_location."
    )
    version_locations = models.JSONField(
        default=list, blank=True, help_text="Overrides the ini's version_locations (a list)."
    )
    recursive_version_locations = models.BooleanField(
        null=True, blank=True, help_text="Overrides the ini's setting; empty means 'as the ini'."
    )
    version_table = models.CharField(max_length=200, default="alembic_version")
    version_table_schema = models.CharField(max_length=200, blank=True)
    multiple_heads = models.CharField(
        max_length=10,
        choices=[
            (core_heads.HeadsPolicy.AUTO, "judged from the history"),
            (core_heads.HeadsPolicy.EXPECTED, "expected: this project upgrades to heads"),
            (core_heads.HeadsPolicy.SINGLE, "a mistake: this project keeps one head"),
        ],
        default=core_heads.HeadsPolicy.AUTO,
        help_text="Whether several heads are intended. Judged from the history, heads on "
        "separately labelled branches or separate bases are expected; heads that diverged "
        "from one branch without a merge are not.",
    )
    command = models.JSONField(
        default=default_command, help_text="How alembic is run for this project, as a list."
    )
    working_dir = models.CharField(
        max_length=500, blank=True, help_text="Where the command runs; default: the ini's folder."
    )
    url_env_var = models.CharField(
        max_length=100,
        default="DATABASE_URL",
        help_text="The environment variable through which env.py reads the database URL.",
    )
    webhook_url_encrypted = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project_detail", args=[self.slug])

    def clean(self) -> None:
        if not self.alembic_ini and not self.script_location:
            raise ValidationError("Give the path to alembic.ini, or a script_location.")
        if not isinstance(self.command, list) or not all(isinstance(p, str) for p in self.command):
            raise ValidationError({"command": "The command must be a list of strings."})
        if not isinstance(self.version_locations, list):
            raise ValidationError({"version_locations": "version_locations must be a list."})

    @property
    def run_dir(self) -> Path:
        """Where alembic runs for this project, and what relative paths are relative to."""
        if self.working_dir:
            return Path(self.working_dir)
        if self.alembic_ini:
            return Path(self.alembic_ini).parent
        return Path(settings.BASE_DIR)

    def script_config(self) -> scripts.ScriptConfig:
        """Where the revision files are. Raises ScriptConfigError with a readable reason."""
        config = self._script_config()
        return dataclasses.replace(config, max_bytes=settings.RETORT_MAX_REVISION_BYTES)

    def _script_config(self) -> scripts.ScriptConfig:
        overrides = {
            "script_location": self.script_location or None,
            "version_locations": self.version_locations or None,
        }
        if self.alembic_ini:
            return scripts.config_from_ini(
                self.alembic_ini,
                working_dir=self.run_dir,
                recursive_version_locations=self.recursive_version_locations,
                **overrides,
            )
        return scripts.build_config(
            self.script_location,
            self.version_locations or None,
            recursive=bool(self.recursive_version_locations),
            base=self.run_dir,
        )

    def run_alembic(self, args: list[str], *, url: str, **options) -> runner.RunResult:
        """alembic for this project: its command and working directory, the URL in its
        variable, `python` meaning Retort's own interpreter. Raises runner.RunnerError."""
        return runner.run_alembic(
            self.command,
            args,
            url=url,
            url_env_var=self.url_env_var,
            working_dir=self.run_dir,
            python=sys.executable,
            **options,
        )

    def set_webhook_url(self, url: str) -> None:
        """Where job notifications go (a secret: Slack's URLs carry their key in the path)."""
        self.webhook_url_encrypted = secretbox.encrypt(url) if url else ""

    def webhook_url(self) -> str:
        """This project's webhook, else RETORT_WEBHOOK_URL; "" when neither is set."""
        if self.webhook_url_encrypted:
            try:
                return secretbox.decrypt(self.webhook_url_encrypted)
            except secretbox.DecryptionError:
                return ""
        return settings.RETORT_WEBHOOK_URL

    def heads_verdict(self, index: scripts.ScriptIndex) -> core_heads.HeadsVerdict:
        """Whether the scripts' heads are as this project intends (the CI gate fails if not)."""
        return core_heads.assess(index, self.multiple_heads)

    def load_scripts(self) -> tuple[scripts.ScriptIndex | None, str | None]:
        """The script index, or None and the reason it could not be read."""
        try:
            return scripts.load_index(self.script_config()), None
        except scripts.ScriptConfigError as exc:
            return None, str(exc)


class ProjectRole(models.Model):
    """A person's role in one project, which replaces their global role there: a developer of
    `billing` who is a viewer everywhere else, or a release manager of one team's project."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        DEVELOPER = "developer"
        RELEASE_MANAGER = "release_manager"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="roles")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_roles"
    )
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_role_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


class UrlUnavailable(LookupError):
    """An environment's URL cannot be had (missing variable, undecryptable value)."""


class Environment(AuditedModel):
    """One database the project's migrations run against."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100)
    position = models.PositiveIntegerField(
        default=0, help_text="Order in the promotion chain: dev before staging before prod."
    )
    url_encrypted = models.TextField(blank=True, editable=False)
    url_from_env = models.CharField(
        max_length=100, blank=True, help_text="Name of an environment variable holding the URL."
    )
    backup_before_jobs = models.BooleanField(
        default=True, help_text="Back the database up before every upgrade and downgrade."
    )
    keep_backups = models.PositiveIntegerField(
        default=5, help_text="How many of this environment's backups to keep (older are removed)."
    )
    # The approval policy: who must agree before a job may run here.
    required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvals a job needs before it is queued (0: none)."
    )
    approver_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Only members of this group may approve; empty: anyone who may approve jobs.",
    )
    requester_may_approve = models.BooleanField(
        default=False, help_text="Let the requester approve their own job (off: four eyes)."
    )
    backup_required = models.BooleanField(
        default=False, help_text="Every upgrade and downgrade must back the database up first."
    )
    promotion_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Upgrades here may only go to revisions this environment already holds…",
    )
    promotion_min_hours = models.PositiveIntegerField(
        default=0, help_text="…and has held for at least this many hours."
    )
    approval_expiry_hours = models.PositiveIntegerField(
        default=24, help_text="A request not approved within this many hours expires."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__name", "position", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "slug"], name="environment_slug_per_project"
            ),
            models.UniqueConstraint(
                fields=["project", "name"], name="environment_name_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.name} / {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("environment_detail", args=[self.project.slug, self.slug])

    def set_url(self, url: str) -> None:
        """Store the URL encrypted. Raises ValueError (a sentence) for a URL that does not
        parse one way only."""
        problem = url_problem(url) if url else None
        if problem:
            raise ValueError(problem)
        self.url_encrypted = secretbox.encrypt(url) if url else ""

    def get_url(self) -> str:
        """The database URL, decrypted or read from the named variable."""
        if self.url_from_env:
            value = os.environ.get(self.url_from_env)
            if not value:
                raise UrlUnavailable(
                    f"The environment variable {self.url_from_env} that should hold this "
                    "database's URL is not set for the Retort process."
                )
            return value
        if not self.url_encrypted:
            raise UrlUnavailable("No database URL is configured for this environment.")
        try:
            return secretbox.decrypt(self.url_encrypted)
        except secretbox.DecryptionError:
            raise UrlUnavailable(
                "The stored database URL cannot be decrypted: RETORT_ENCRYPTION_KEY changed "
                "since it was saved. Enter the URL again."
            ) from None

    @property
    def url_for_display(self) -> str:
        if self.url_from_env:
            return f"from ${self.url_from_env}"
        try:
            return display_url(self.get_url())
        except UrlUnavailable as exc:
            return str(exc)

    def latest_snapshot(self) -> Snapshot | None:
        return self.snapshots.order_by("-checked_at", "-id").first()

    def clean(self) -> None:
        if self.promotion_from_id and self.promotion_from_id == self.pk:
            raise ValidationError({"promotion_from": "An environment cannot promote from itself."})
        if self.promotion_from_id and self.promotion_from.project_id != self.project_id:
            raise ValidationError(
                {"promotion_from": "Promote from an environment of the same project."}
            )


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


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, *, user, name: str) -> tuple[ApiToken, str]:
        """Create a token; the plain value is returned once and never stored."""
        token = "rt_" + secrets.token_urlsafe(32)
        return cls.objects.create(user=user, name=name, token_hash=cls.digest(token)), token


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


class Backup(models.Model):
    """A verified copy of an environment's database, made before a job touched it."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="backups")
    made_by_job = models.ForeignKey(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20)  # "pg_dump" or "sqlite"
    path = models.CharField(max_length=1000)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    verified = models.CharField(max_length=300, blank=True)
    heads = models.JSONField(default=list, help_text="What the version table held when copied.")
    created_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.environment} at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def available(self) -> bool:
        return self.removed_at is None and Path(self.path).exists()

    @property
    def file_name(self) -> str:
        """What pages show: the file's name, not where the server keeps it."""
        return Path(self.path).name


class Job(models.Model):
    """One change to one environment's database, run by a Celery worker.

    Planned in the web process (statically, from the scripts), previewed and run by a worker.
    `from_heads` is what the database held when planned: the worker refuses to run if it holds
    anything else; `to_heads` is what it must hold afterwards, or the job fails.
    """

    class Kind(models.TextChoices):
        UPGRADE = "upgrade"
        DOWNGRADE = "downgrade"
        STAMP = "stamp"
        RESTORE = "restore"

    class Status(models.TextChoices):
        PLANNED = "planned"
        AWAITING_APPROVAL = "awaiting_approval"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        INTERRUPTED = "interrupted"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        EXPIRED = "expired"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    WAITING = (Status.PLANNED, Status.AWAITING_APPROVAL, Status.QUEUED)
    FINISHED = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.INTERRUPTED,
        Status.CANCELLED,
        Status.REJECTED,
        Status.EXPIRED,
    )

    class Preview(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        UNAVAILABLE = "unavailable"
        NOT_NEEDED = "not_needed"

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    target = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNED)
    from_heads = models.JSONField(default=list)
    to_heads = models.JSONField(default=list)
    revisions = models.JSONField(default=list, help_text="In the order they will run.")
    findings = models.JSONField(default=list)
    scripts_sha256 = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the planned revision files' contents."
    )
    sql_status = models.CharField(max_length=20, choices=Preview.choices, default=Preview.PENDING)
    sql_preview = models.TextField(blank=True)
    sql_sha256 = models.CharField(max_length=64, blank=True)
    sql_note = models.TextField(blank=True)
    restore_from = models.ForeignKey(
        Backup, null=True, blank=True, on_delete=models.PROTECT, related_name="restored_by"
    )
    backup = models.ForeignKey(
        Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    take_backup = models.BooleanField(
        default=True, help_text="Back the database up before changing it (upgrades, downgrades)."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    replanned_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    # when its run (and its SQL preview) were last handed to the broker; null: never taken
    dispatched_at = models.DateTimeField(null=True, blank=True)
    preview_sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=200, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    result_heads = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_job_per_environment",
            )
        ]
        indexes = [
            models.Index(fields=["environment", "-created_at"], name="job_latest"),
            models.Index(fields=["status", "expires_at"], name="job_status_expiry"),
        ]
        permissions = [
            ("request_job", "Can plan jobs and ask for them to run"),
            ("approve_job", "Can approve or reject jobs"),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.kind} {self.environment} to {self.target} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("job_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def awaiting_broker(self) -> bool:
        """Queued, but the broker has not taken its message yet (the dispatcher retries)."""
        return self.status == self.Status.QUEUED and self.dispatched_at is None

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_total(self) -> int:
        return len(self.revisions)

    @property
    def backs_up(self) -> bool:
        """Whether the run takes a backup first: upgrades, downgrades, and restores (so a
        restore can itself be undone); a stamp changes no data."""
        changes = self.kind in (self.Kind.UPGRADE, self.Kind.DOWNGRADE, self.Kind.RESTORE)
        return changes and (self.take_backup or self.environment.backup_required)

    def approvals_counted(self):
        """Approvals given for the plan as it stands now; those for an earlier plan are stale."""
        return self.approvals.filter(
            decision=Approval.Decision.APPROVE, plan_sha256=self.plan_sha256
        )

    def approvals_missing(self) -> int:
        """How many more approvals the environment's policy asks for before this job may run."""
        required = self.environment.required_approvals
        return max(required - self.approvals_counted().count(), 0) if required else 0

    @property
    def plan_sha256(self) -> str:
        """What an approval binds to: the plan and the exact SQL it previews."""
        content = {
            "environment": self.environment_id,
            "kind": self.kind,
            "target": self.target,
            "from_heads": sorted(self.from_heads),
            "to_heads": sorted(self.to_heads),
            "revisions": list(self.revisions),
            "restore_from": self.restore_from_id,
            "sql_sha256": self.sql_sha256,
            "scripts_sha256": self.scripts_sha256,
            "backup": self.backs_up,
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class JobLogLine(models.Model):
    """One line of a job's log: Retort's own steps, pg_dump's and alembic's output."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    seq = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_log_line_seq")]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.seq} {self.text[:60]}"


class Approval(models.Model):
    """One person's decision on one job, bound to the plan they read (its SHA-256).

    Written only by `environments.approvals`. When the job is planned again its plan_sha256
    changes and approvals given for the earlier plan stop counting (they stay, shown as such).
    """

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "user", "plan_sha256"], name="one_decision_per_person_and_plan"
            )
        ]

    def __str__(self) -> str:
        return f"{self.username} {self.decision}d job #{self.job_id}"

    @property
    def is_current(self) -> bool:
        return self.plan_sha256 == self.job.plan_sha256


class Notification(models.Model):
    """A webhook message waiting to be sent (an outbox): written with the change it reports,
    delivered by a worker in order, retried, never in the way of a job."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, null=True, on_delete=models.SET_NULL, related_name="+")
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "id"], name="notification_outbox")]

    def __str__(self) -> str:
        return f"{self.event} for job #{self.job_id} ({self.state})"


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
    def checking(self) -> bool:
        """A check someone asked for has not finished yet (nor given up)."""
        return (
            self.requested_at is not None
            and (self.checked_at is None or self.requested_at > self.checked_at)
            and timezone.now() - self.requested_at < self.CHECK_GIVES_UP
        )

    @property
    def gave_up(self) -> bool:
        """The last check asked for never reported back."""
        return (
            self.requested_at is not None
            and (self.checked_at is None or self.requested_at > self.checked_at)
            and not self.checking
        )

    def involving(self, slug: str, *, kinds=("schema", "expected", "unknown_revision")) -> list:
        return [f for f in self.findings if slug in f["environments"] and f["kind"] in kinds]
