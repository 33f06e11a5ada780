"""A plan's risks: what its revision files will do, and what Retort already knows about the
database they will run on.

Two sources, one list per plan, shown beside each revision on the job page and the approval:
- the files' static findings (`core/findings.py`): steps that lose data, move data, or that a
  downgrade cannot undo;
- the drift the last check found on the target (`drift.py`), set against the tables and
  columns each pending revision creates, alters or drops: a table the target already has that
  the next revision creates is an upgrade that will fail there, said before anyone approves it.
"""

from __future__ import annotations

from environments import revision_analysis, safe_runs
from environments.core.findings import IRREVERSIBLE_DOWNGRADE, Touch
from environments.core.findings.lock_sql import sql_lock_findings
from environments.core.findings.locks import LockFinding
from environments.core.scripts import ScriptIndex
from environments.models import DriftState, Environment, Job

_THING = {
    "table": "table {}",
    "column": "column {}",
    "index": "an index on {}",
    "unique": "a unique constraint on {}",
    "fk": "a foreign key on {}",
    "check": "a check constraint on {}",
    "primary_key": "a primary key on {}",
    "constraint": "a constraint on {}",
}


def plan_risks(
    environment: Environment, index: ScriptIndex, revisions: list[str], kind: str
) -> list[dict]:
    """Every risk of running `revisions` (`kind`: upgrade, downgrade, stamp) on `environment`,
    in plan order; each a dict with the revision, a severity and a sentence."""
    if kind == Job.Kind.STAMP:
        return []  # a stamp runs no code
    found = file_risks(index, revisions, kind) + drift_risks(environment, index, revisions, kind)
    if safe_runs.applies_to(environment):
        found += lock_risks(index, revisions, kind)
    order = {revision: position for position, revision in enumerate(revisions)}
    return sorted(found, key=lambda risk: order.get(risk["revision"], len(order)))


def file_risks(index: ScriptIndex, revisions: list[str], kind: str) -> list[dict]:
    """The static findings of the steps this job runs: upgrade() for an upgrade (and whether
    it can be undone), downgrade() for a downgrade."""
    found = []
    for revision_id in revisions:
        revision = index.revisions.get(revision_id)
        if revision is None:
            continue
        result = revision_analysis.revision_findings(revision)
        if isinstance(result, str):
            found.append({"revision": revision_id, "severity": "warning", "detail": result})
            continue
        for finding in result:
            runs = finding.function == kind
            undo = kind == Job.Kind.UPGRADE and finding.kind == IRREVERSIBLE_DOWNGRADE
            if runs or undo:
                found.append({"revision": revision_id, **revision_analysis.finding_dict(finding)})
    return found


def lock_risks(index: ScriptIndex, revisions: list[str], kind: str) -> list[dict]:
    """The lock-aware review of the steps this job runs on PostgreSQL (`core/findings/
    locks.py`): each finding with its squawk id, line, table, lock and safer spelling."""
    found = []
    for revision_id in revisions:
        revision = index.revisions.get(revision_id)
        result = revision_analysis.revision_lock_findings(revision) if revision else []
        if isinstance(result, str):
            continue  # the file's own risks already say it cannot be read
        found += [lock_dict(revision_id, f) for f in result if f.function == kind]
    return found


def sql_lock_risks(job: Job, sql: str) -> list[dict]:
    """The lock rules over the plan's rendered SQL (`core/findings/lock_sql.py`), for what the
    file's op.* calls did not already show (a step the revision computes, raw SQL)."""
    if job.kind not in (Job.Kind.UPGRADE, Job.Kind.DOWNGRADE) or not job.run_limits:
        return []  # a stamp runs no step; no run limits: not PostgreSQL
    seen = {
        (risk["revision"], risk.get("rule"), risk.get("table"))
        for risk in job.findings
        if risk.get("kind") == "lock"
    }
    found = []
    for revision_id, finding in sql_lock_findings(sql, job.kind):
        key = (revision_id, finding.rule, finding.table)
        if revision_id in job.revisions and key not in seen:
            seen.add(key)
            found.append(lock_dict(revision_id, finding))
    return found


def lock_dict(revision_id: str, finding: LockFinding) -> dict:
    return {
        "revision": revision_id,
        "kind": "lock",
        "rule": finding.rule,
        "severity": finding.severity,
        "line": finding.line,
        "table": finding.table,
        "lock": finding.lock,
        "engine": finding.engine,
        "detail": finding.sentence(),
    }


def drift_risks(
    environment: Environment, index: ScriptIndex, revisions: list[str], kind: str
) -> list[dict]:
    """The last drift check's schema findings on `environment` that touch what the pending
    revisions create, alter or drop: "column orders.qty already exists on prod …"."""
    state = DriftState.objects.filter(project=environment.project_id).first()
    if state is None or state.checked_at is None:
        return []
    drifts = state.involving(environment.slug, kinds=("expected", "schema"))
    if not drifts:
        return []
    checked = f"drift check of {state.checked_at:%Y-%m-%d %H:%M} UTC"
    found: dict[tuple[str, str], dict] = {}
    for revision_id in revisions:
        revision = index.revisions.get(revision_id)
        touched = revision_analysis.revision_touches(revision) if revision is not None else []
        if isinstance(touched, str):
            continue  # the file's own risks already say it cannot be read
        for touch in touched:
            if touch.function != kind:
                continue
            for drift in drifts:
                risk = _conflict(environment.name, kind, touch, drift)
                if risk is None:
                    continue
                severity, sentence = risk
                key = (revision_id, drift["detail"])
                if key in found and found[key]["severity"] == "danger":
                    continue  # one risk per drift and revision, the gravest
                found[key] = {
                    "revision": revision_id,
                    "kind": "drift",
                    "severity": severity,
                    "line": touch.line,
                    "detail": f"{sentence} (line {touch.line}; {checked}).",
                }
    return list(found.values())


def _conflict(name: str, kind: str, touch: Touch, drift: dict) -> tuple[str, str] | None:
    """How one drift finding bears on one step: ("danger", …) when the step cannot succeed,
    ("warning", …) when it works on a table that has drifted, None when unrelated."""
    obj, change, present = drift["object"], drift.get("change", ""), drift.get("present")
    thing = _THING.get(touch.what, "{}").format(touch.obj)
    # Only a table or a column is named by the drift finding itself; an index or a constraint
    # is known by its table, so a different one on the same table is no certain failure.
    named = touch.what in {"table", "column"}
    if named and obj == touch.obj and change == touch.what:
        if present is True and touch.action == "creates":
            return (
                "danger",
                f"{thing[0].upper()}{thing[1:]} already exists on {name}, though no migration "
                f"creates it: the {kind} will fail at this revision, which creates it",
            )
        if present is False and touch.action in {"alters", "drops"}:
            return (
                "danger",
                f"{name} has no {thing}, though its migrations create it: the {kind} will "
                f"fail at this revision, which {touch.action} it",
            )
    if obj.split(".")[0] == touch.table:
        return (
            "warning",
            f"This revision {touch.action} {thing}, where {name} has drifted from its "
            f"migrations: {drift['detail']}",
        )
    return None
