"""Rollouts: one target (heads, a revision, label@head) across a fleet's selection, in waves.

A rollout is planned by a worker (every target read, the distinct plans worked out and their
SQL rendered), approved once for that set of plans, then run wave by wave: each target is an
ordinary job (plan, lock, backup, at-most-once, reaper, audit), started by the coordinator
(`environments.rollout_coordinator`) from what these rows say, so a worker killed anywhere
loses nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from environments.models.jobs import PersonDecision
from environments.models.registry import Environment, Project


class Rollout(models.Model):
    class Status(models.TextChoices):
        PLANNING = "planning"  # a worker reads the targets and renders the plans
        PLANNED = "planned"  # read the plans, then submit
        AWAITING_APPROVAL = "awaiting_approval"
        RUNNING = "running"
        PAUSED = "paused"
        STOPPED = "stopped"  # the failure policy stopped it: retry the failed ones, resume
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        EXPIRED = "expired"
        FAILED = "failed"  # it could not be planned at all

    FINISHED = (
        Status.COMPLETED,
        Status.CANCELLED,
        Status.REJECTED,
        Status.EXPIRED,
        Status.FAILED,
    )

    class OnFailure(models.TextChoices):
        STOP = "stop", "stop at the first failure"
        COUNT = "count", "allow this many failures"
        PERCENT = "percent", "allow this percentage of the targets to fail"
        CONTINUE = "continue", "carry on whatever fails"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rollouts")
    target = models.CharField(max_length=200, help_text="heads, a revision, or label@head.")
    labels = models.JSONField(
        default=dict, blank=True, help_text="Which environments: all of these labels."
    )
    on_failure = models.CharField(max_length=10, choices=OnFailure.choices, default=OnFailure.STOP)
    failure_threshold = models.PositiveIntegerField(default=0)
    take_backup = models.BooleanField(
        null=True, blank=True, help_text="Back each target up first; empty: each one's own policy."
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNING)
    # submitted as its requester as soon as it is planned (the API's and the CLI's "start")
    start_when_planned = models.BooleanField(default=False)
    # the distinct plans, each {from_heads, to_heads, revisions, scripts_sha256, dialect, sql,
    # sql_sha256, sql_note, example, targets}: what an approval binds to, with the SQL
    plans = models.JSONField(default=list)
    plan_sha256 = models.CharField(max_length=64, blank=True)
    required_approvals = models.PositiveSmallIntegerField(default=0)
    requester_may_approve = models.BooleanField(default=False)
    note = models.TextField(blank=True, help_text="Why it stopped, waits or failed, in words.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    planned_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # when the coordinator last looked at it (beat nudges the ones it has not seen lately)
    advanced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"], name="rollout_status")]

    def __str__(self) -> str:
        return f"rollout #{self.pk} of {self.project} to {self.target} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("rollout_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def selection(self) -> str:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(self.labels.items()))
        return labels or "every environment"

    @property
    def failure_policy(self) -> str:
        """The failure policy in words."""
        if self.on_failure == self.OnFailure.COUNT:
            count = self.failure_threshold
            return f"allow {count} failure{'s' if count != 1 else ''}, stop at the next"
        if self.on_failure == self.OnFailure.PERCENT:
            return f"allow {self.failure_threshold} % of the targets to fail"
        if self.on_failure == self.OnFailure.CONTINUE:
            return "carry on whatever fails"
        return "stop at the first failure"

    def failures_allowed(self, targets: int) -> int | None:
        """How many failed targets the policy tolerates (None: any number)."""
        if self.on_failure == self.OnFailure.CONTINUE:
            return None
        if self.on_failure == self.OnFailure.COUNT:
            return self.failure_threshold
        if self.on_failure == self.OnFailure.PERCENT:
            return targets * self.failure_threshold // 100
        return 0

    def approvals_counted(self):
        return self.approvals.filter(
            decision=RolloutApproval.Decision.APPROVE, plan_sha256=self.plan_sha256
        )

    def approvals_missing(self) -> int:
        required = self.required_approvals
        return max(required - self.approvals_counted().count(), 0) if required else 0


class RolloutWave(models.Model):
    """A group of targets run together, at most `parallel` at a time; the next wave starts
    when every target of this one has finished, and the failure policy holds."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="waves")
    number = models.PositiveSmallIntegerField()  # 1, 2, …: the order they run in
    name = models.CharField(max_length=100)
    labels = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(null=True, blank=True)
    parallel = models.PositiveSmallIntegerField(default=4)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "number"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "number"], name="rollout_wave_number")
        ]

    def __str__(self) -> str:
        return f"wave {self.number} ({self.name}) of rollout #{self.rollout_id}"

    @property
    def spec(self) -> str:
        """How targets were chosen for it, in words."""
        parts = [f"{key}={value}" for key, value in sorted(self.labels.items())]
        if self.count is not None:
            parts.append(f"{self.count} at most")
        return ", ".join(parts) or "the rest"


class RolloutTarget(models.Model):
    """One environment of a rollout: its wave, its plan, its state and its latest job."""

    class State(models.TextChoices):
        WAITING = "waiting"
        RECHECK = "recheck"  # read it again before it (re)starts: interrupted, or retried
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        UNCHANGED = "unchanged"  # it already held the target
        BLOCKED = "blocked"  # it could not be planned (unreadable, unknown revisions)
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    OPEN = (State.WAITING, State.RECHECK, State.RUNNING)
    DONE = (State.SUCCEEDED, State.UNCHANGED)

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="targets")
    wave = models.ForeignKey(RolloutWave, on_delete=models.CASCADE, related_name="targets")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0)
    plan = models.SmallIntegerField(default=-1, help_text="Index in the rollout's plans.")
    # its own plan: the approved plan's, or its end (read again after a partial run)
    from_heads = models.JSONField(default=list)
    revisions = models.JSONField(default=list)
    scripts_sha256 = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.WAITING)
    job = models.ForeignKey(
        "environments.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    note = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rollout", "wave__number", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "environment"], name="rollout_target_once")
        ]
        indexes = [models.Index(fields=["rollout", "state"], name="rollout_target_state")]

    def __str__(self) -> str:
        return f"{self.environment_id} in rollout #{self.rollout_id} ({self.state})"


class RolloutApproval(PersonDecision):
    """One person's decision on a whole rollout, bound to its set of plans (plan_sha256)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="approvals")

    class Meta(PersonDecision.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "user", "plan_sha256"], name="one_rollout_decision_per_person"
            )
        ]

    def __str__(self) -> str:
        return f"{self.username} {self.decision}d rollout #{self.rollout_id}"
