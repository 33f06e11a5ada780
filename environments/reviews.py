"""What an approver reads about a job: where it stands with its policy (approvals counted,
stale and rejected, the promotion rule's verdict, whether the plan is out of date, whether this
person may decide) and what the project's other environments hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from environments.approvals import decision_refusal
from environments.models import Approval, CurrentState, Environment, Job
from environments.planning import plan_outdated
from environments.promotion import Verdict, promotion_verdict


@dataclass
class ApprovalState:
    """Where a job stands with its policy, for the pages and the API."""

    required: int
    counted: list[Approval]
    stale: list[Approval]
    rejected: list[Approval]
    verdict: Verdict
    outdated: list[str]
    may_decide: bool
    why_not: str

    @property
    def given(self) -> int:
        return len(self.counted)


def approval_state(job: Job, user, *, check_plan: bool = True, state=None) -> ApprovalState:
    approvals = list(job.approvals.all())
    current = job.plan_sha256
    counted = [a for a in approvals if a.plan_sha256 == current and a.decision == "approve"]
    stale = [a for a in approvals if a.plan_sha256 != current]
    rejected = [a for a in approvals if a.plan_sha256 == current and a.decision == "reject"]
    replannable = job.status in (Job.Status.PLANNED, Job.Status.AWAITING_APPROVAL)
    outdated = plan_outdated(job, state) if check_plan and replannable else []
    refusal = None
    if job.status == Job.Status.AWAITING_APPROVAL:
        refusal = decision_refusal(job, user, "approve", current, None, expire=False)
    return ApprovalState(
        required=job.required_approvals,
        counted=counted,
        stale=stale,
        rejected=rejected,
        verdict=promotion_verdict(job),
        outdated=outdated,
        may_decide=job.status == Job.Status.AWAITING_APPROVAL and refusal is None,
        why_not=refusal[1] if refusal else "",
    )


@dataclass(frozen=True)
class OtherEnvironment:
    environment: Environment
    heads: list[str]
    status: str
    checked_at: datetime | None
    holds_target: bool | None  # None: unknown (never read, or unknown revisions)


def other_environments(job: Job) -> list[OtherEnvironment]:
    """What the project's other environments hold (their latest reads), and whether each
    already holds the revisions this job moves to: the approver's view of the promotion."""
    index, _ = job.environment.project.load_scripts()
    wanted = sorted(job.to_heads)
    found = []
    siblings = list(
        job.environment.project.environments.exclude(pk=job.environment_id).order_by(
            "position", "name"
        )
    )
    states = CurrentState.objects.of(siblings)
    for environment in siblings:
        state = states.get(environment.pk)
        holds = None
        if state is not None and index is not None and index.revision_map is not None:
            heads = list(state.heads)
            if not state.is_read_failure and all(index.knows(h) for h in heads):
                applied = index.holds(heads)
                holds = all(revision in applied for revision in wanted)
        found.append(
            OtherEnvironment(
                environment=environment,
                heads=list(state.heads) if state else [],
                status=state.status if state else "",
                checked_at=state.checked_at if state else None,
                holds_target=holds,
            )
        )
    return found
