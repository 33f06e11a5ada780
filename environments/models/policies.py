"""An environment's policy for safe runs on PostgreSQL (an abstract part of `Environment`):
the timeouts alembic's connection gets (core/run_limits.py), retries on a lock timeout
(lock_retries.py), what the lock review of a plan may find (core/findings/locks.py), and
whether a plan needs a rehearsal on a copy (rehearsals.py) before its approval counts."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def _lock_review(help_text: str) -> models.CharField:
    """A severity of the lock review (core/findings/locks.py) a policy acts on ("": none)."""
    choices = [("", "never"), ("warning", "a warning or worse"), ("danger", "a danger")]
    return models.CharField(
        max_length=10, choices=choices, blank=True, default="", help_text="PostgreSQL: " + help_text
    )


class SafeRunPolicy(models.Model):
    # Safe runs on PostgreSQL (core/run_limits.py): alembic's connection gets these timeouts.
    lock_timeout_seconds = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0), MaxValueValidator(7 * 86400)],
        help_text="PostgreSQL: how long a statement of a run may wait for a lock (0: no limit).",
    )
    statement_timeout_seconds = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0), MaxValueValidator(7 * 86400)],
        help_text="PostgreSQL: how long one statement of a run may take (0: no limit).",
    )
    # ...and a run that gives up waiting for a lock is tried again (lock_retries.py)
    lock_attempts = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="PostgreSQL: how many times a run that times out waiting for a lock is tried "
        "(1: never again), when it is safe to try again.",
    )
    lock_retry_seconds = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0), MaxValueValidator(3600)],
        help_text="Seconds before the first retry; each next wait is twice the one before.",
    )

    # ...and what the lock-aware review of a plan may find (core/findings/locks.py)
    lock_review_blocks = _lock_review("a plan whose lock review finds this is not run.")
    lock_review_approval = _lock_review(
        "a plan whose lock review finds this needs one approval more."
    )
    rehearsal_required_hours = models.PositiveIntegerField(
        default=0,
        help_text="An approval counts only after a successful rehearsal of the plan within this "
        "many hours (0: no rehearsal needed).",
    )

    class Meta:
        abstract = True
