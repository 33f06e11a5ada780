"""Jobs and what belongs to them: backups, log lines, approvals, and the webhook outbox."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from environments.core.findings.locks import reaches
from environments.core.lock_waits import LockWait
from environments.core.run_limits import RunLimits
from environments.models.registry import Environment, Project


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
        REHEARSE = "rehearse"  # the plan of `rehearses`, run on a restored copy (rehearsals.py)

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
        ON_REQUEST = "on_request"  # nobody has to read it yet: rendered when someone asks

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    target = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNED)
    from_heads = models.JSONField(default=list)
    to_heads = models.JSONField(default=list)
    revisions = models.JSONField(default=list, help_text="In the order they will run.")
    findings = models.JSONField(default=list)
    # PostgreSQL: the run's timeouts (core/run_limits.RunLimits.as_json); {} elsewhere
    run_limits = models.JSONField(default=dict, blank=True)
    # while a run waits for a lock: what it waits for and who holds it (core/lock_waits.py
    # LockWait.as_json list, written by the worker as it watches; null when not waiting)
    lock_wait = models.JSONField(null=True, blank=True)
    scripts_sha256 = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the planned revision files' contents."
    )
    sql_status = models.CharField(max_length=20, choices=Preview.choices, default=Preview.PENDING)
    sql_preview = models.TextField(blank=True)
    sql_sha256 = models.CharField(max_length=64, blank=True)
    sql_note = models.TextField(blank=True)
    # a rehearsal: the job whose plan it runs on a copy, and what it measured there
    rehearses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="rehearsals"
    )
    rehearsal = models.JSONField(default=dict, blank=True)
    # proof after the run (proofs.py): the live schema against the one its revisions build
    proof = models.JSONField(default=dict, blank=True)
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
    # a target of a rollout: approved with the rollout's plans, started by its coordinator
    rollout = models.ForeignKey(
        "environments.Rollout",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
    )

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
    def proof_expected(self) -> bool:
        """A worker proves this job's result after it (proofs.py): a succeeded upgrade or
        downgrade, while RETORT_PROOF_AFTER_RUN is on."""
        changed = self.kind in (self.Kind.UPGRADE, self.Kind.DOWNGRADE)
        return settings.RETORT_PROOF_AFTER_RUN and self.status == self.Status.SUCCEEDED and changed

    @property
    def settled(self) -> bool:
        """Finished, with nothing more to come: its page stops following it (a proof comes
        from a worker soon after a success; one not come within 2 minutes is not awaited)."""
        if not self.is_finished:
            return False
        waiting = self.proof_expected and not self.proof and self.finished_at is not None
        return not (waiting and timezone.now() - self.finished_at < timedelta(minutes=2))

    @property
    def progress_total(self) -> int:
        return len(self.revisions)

    @property
    def limits_sentence(self) -> str:
        """The run's PostgreSQL timeouts in words ("" when it has none)."""
        return RunLimits.from_json(self.run_limits).sentence() if self.run_limits else ""

    @property
    def retries_sentence(self) -> str:
        """What the run does on a lock timeout ("" when it has no timeouts)."""
        return RunLimits.from_json(self.run_limits).retries() if self.run_limits else ""

    @property
    def lock_waits(self) -> list[str]:
        """What the run waits for now, in words (empty: nothing)."""
        return [LockWait.from_json(wait).sentence() for wait in self.lock_wait or ()]

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
        """How many more approvals the environment's policy asks for before this job may run
        (a rollout's target: how many its rollout's plans still need)."""
        if self.rollout_id is not None:
            return self.rollout.approvals_missing()
        required = self.required_approvals
        return max(required - self.approvals_counted().count(), 0) if required else 0

    @property
    def required_approvals(self) -> int:
        """The approvals this plan needs: its environment's, and one more when the policy asks
        for it for what the lock review found (`lock_review_approval`)."""
        if self.kind == self.Kind.REHEARSE:
            return 0  # it changes no environment: the plan it rehearses is what is approved
        extra = self.lock_findings_at(self.environment.lock_review_approval)
        return self.environment.required_approvals + (1 if extra else 0)

    def lock_findings_at(self, threshold: str) -> list[dict]:
        """The plan's lock-review findings of `threshold` severity or worse (none for "")."""
        return [
            finding
            for finding in self.findings
            if finding.get("kind") == "lock" and reaches(finding.get("severity", ""), threshold)
        ]

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
        if self.run_limits:  # (plans made before timeouts existed keep their digest)
            content["run_limits"] = self.run_limits
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


class PersonDecision(models.Model):
    """One person's approval or rejection of what they read, bound to its SHA-256: a job's
    plan (`Approval`) or a rollout's set of plans (`RolloutApproval`)."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]


class Approval(PersonDecision):
    """One person's decision on one job, bound to the plan they read (its SHA-256).

    Written only by `environments.approvals`. When the job is planned again its plan_sha256
    changes and approvals given for the earlier plan stop counting (they stay, shown as such).
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="approvals")

    class Meta(PersonDecision.Meta):
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
