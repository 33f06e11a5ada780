"""Retort's models, one module per concept; every model is importable from here, as Django
and the migrations expect."""

# The receivers that audit registry edits and logins, and make the roles after migrate: they
# import the models' own modules (never this package), so importing them here connects them
# in every process that loads the app, as soon as its models are.
from environments import roles, signals  # noqa: F401
from environments.models.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditEventQuerySet,
    AuditImmutable,
)
from environments.models.fleets import Discovery
from environments.models.jobs import Approval, Backup, Job, JobLogLine, Notification
from environments.models.reads import (
    CurrentState,
    DriftState,
    ExpectedSchema,
    RoundTripState,
    ScriptsDigest,
    StateChange,
)
from environments.models.registry import (
    AuditedModel,
    Environment,
    Project,
    ProjectRole,
    UrlUnavailable,
    default_command,
)
from environments.models.rollouts import Rollout, RolloutApproval, RolloutTarget, RolloutWave
from environments.models.tokens import ApiToken

__all__ = [
    "ApiToken",
    "Approval",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditEventQuerySet",
    "AuditImmutable",
    "AuditedModel",
    "Backup",
    "CurrentState",
    "Discovery",
    "DriftState",
    "Environment",
    "ExpectedSchema",
    "Job",
    "JobLogLine",
    "Notification",
    "Project",
    "ProjectRole",
    "Rollout",
    "RolloutApproval",
    "RolloutTarget",
    "RolloutWave",
    "RoundTripState",
    "ScriptsDigest",
    "StateChange",
    "UrlUnavailable",
    "default_command",
]
