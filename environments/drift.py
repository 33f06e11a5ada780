"""Drift: environments at different revisions, and schemas that differ where they should not.

`drift_build` reads every environment of a project live, then says
- per neighbouring pair in promotion order, which revisions one holds and the other lacks;
- per environment, revisions it holds that the scripts do not know;
- per pair of environments at the same revision (same dialect, or any with `cross_dialect`),
  every schema difference found by reflection (`core/schema.py`).
A pair at different revisions is not compared by schema: its revisions already say why.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import combinations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from environments import dispatch, reads
from environments import expected as expected_schemas
from environments.audit import audit_record
from environments.core import schema as core_schema
from environments.core.database_urls import sync_url
from environments.core.scripts import ScriptIndex
from environments.models import CurrentState, DriftState, Environment, Project, UrlUnavailable


@dataclass(frozen=True)
class Finding:
    """One thing a developer should know. `kind`: revisions, unknown_revision, schema,
    unreadable. `environments` are slugs; `object` names what differs."""

    kind: str
    environments: list[str]
    object: str
    detail: str
    # schema and expected findings: what differs (table, column, index, type, …), and for
    # expected ones whether the environment has the object its migrations lack (True) or
    # lacks one they create (False); None when both have it and it differs
    change: str = ""
    present: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MatrixRow:
    revision: str
    message: str
    is_head: bool
    held: list[bool | None]  # per environment, in promotion order; None: not read


@dataclass
class DriftReport:
    project: Project
    environments: list[Environment]
    states: dict[int, CurrentState]
    rows: list[MatrixRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    schemas_compared: list[tuple[str, str]] = field(default_factory=list)
    expected_compared: list[str] = field(default_factory=list)
    index_error: str | None = None

    @property
    def unreadable(self) -> bool:
        return any(f.kind == "unreadable" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0: no drift; 1: drift; 2: a database (or the scripts) could not be read."""
        if self.unreadable or self.index_error:
            return 2
        return 1 if self.findings else 0

    def involving(self, slug: str | None) -> list[Finding]:
        return [f for f in self.findings if slug is None or slug in f.environments]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _ids(revisions: list[str], limit: int = 12) -> str:
    shown = ", ".join(revisions[:limit])
    return shown + (f" and {len(revisions) - limit} more" if len(revisions) > limit else "")


def _applied(index: ScriptIndex, state: CurrentState) -> set[str]:
    known = [head for head in state.heads if index.knows(head)]
    return set(index.holds(known))


def drift_build(
    *,
    project: Project,
    cross_dialect: bool = False,
    schemas: bool = True,
    expected: str = "build",
) -> DriftReport:
    """Read every environment now and compare. `expected`: "build" compares each live schema
    with the one its migrations build (built here, or kept from an earlier build); "off"
    skips that. The CLI and the workers' checks call this; pages show what a check stored."""
    environments = list(project.environments.select_related("project").order_by("position", "name"))
    states = reads.environments_read(environments=environments)
    report = DriftReport(project=project, environments=environments, states=states)
    index, error = project.load_scripts()
    if index is None or index.revision_map is None:
        report.index_error = error or (index.fatal if index else "the scripts cannot be read")
        return report
    readable = []
    for environment in environments:
        state = states[environment.pk]
        if state.is_read_failure:
            report.findings.append(
                Finding("unreadable", [environment.slug], environment.name, state.error)
            )
        else:
            readable.append(environment)
    applied = {e.pk: _applied(index, states[e.pk]) for e in readable}
    _matrix(report, index, applied)
    _revision_findings(report, index, readable, applied)
    if schemas:
        _schema_findings(report, readable, cross_dialect, expected)
    return report


def _matrix(report: DriftReport, index: ScriptIndex, applied: dict[int, set[str]]) -> None:
    """Rows: every revision some environment holds and another lacks, and the heads; newest
    first, in the order Alembic walks the history."""
    held_sets = list(applied.values())
    union = set().union(*held_sets) if held_sets else set()
    common = set.intersection(*held_sets) if held_sets else set()
    matter = (union - common) | set(index.heads)
    for revision in index.applied(index.heads):
        if revision not in matter:
            continue
        held = [
            (revision in applied[e.pk]) if e.pk in applied else None for e in report.environments
        ]
        report.rows.append(
            MatrixRow(
                revision=revision,
                message=index.revisions[revision].message,
                is_head=revision in index.heads,
                held=held,
            )
        )


def _revision_findings(
    report: DriftReport, index: ScriptIndex, readable: list[Environment], applied
) -> None:
    order = index.applied(index.heads)  # newest first
    rank = {revision: position for position, revision in enumerate(order)}
    for earlier, later in itertools.pairwise(readable):
        a, b = applied[earlier.pk], applied[later.pk]
        for has, lacks, held in ((earlier, later, a - b), (later, earlier, b - a)):
            if not held:
                continue
            ids = sorted(held, key=lambda r: -rank.get(r, 0))  # in apply order
            report.findings.append(
                Finding(
                    "revisions",
                    [lacks.slug, has.slug],
                    f"{has.slug}..{lacks.slug}",
                    f"{lacks.name} lacks {'this' if len(ids) == 1 else 'these'} "
                    f"{_plural(len(ids), 'revision')} that {has.name} has: {_ids(ids)}",
                )
            )
    for environment in readable:
        unknown = list(report.states[environment.pk].unknown)
        if unknown:
            report.findings.append(
                Finding(
                    "unknown_revision",
                    [environment.slug],
                    ", ".join(unknown),
                    f"{environment.name} holds {_plural(len(unknown), 'revision')} unknown to "
                    f"the scripts: {', '.join(unknown)}",
                )
            )


def _read_schema(environment: Environment):
    project = environment.project
    exclude = [project.version_table or "alembic_version"]
    try:
        return core_schema.read_schema(
            environment.get_url(),
            schema=environment.schema or environment.version_table_schema,
            exclude=exclude,
            timeout=settings.RETORT_CONNECT_TIMEOUT,
        )
    except (UrlUnavailable, core_schema.SchemaReadError) as exc:
        return exc


def _schema_findings(
    report: DriftReport, readable: list[Environment], cross: bool, expected: str
) -> None:
    pairs = []
    for a, b in combinations(readable, 2):
        same_revision = sorted(report.states[a.pk].heads) == sorted(report.states[b.pk].heads)
        if not same_revision:
            continue
        dialects = {_dialect(a), _dialect(b)}
        if len(dialects) > 1 and not cross:
            continue
        pairs.append((a, b))
    with_expected = (
        []
        if expected == "off"
        else [e for e in readable if report.states[e.pk].heads and not report.states[e.pk].unknown]
    )
    needed = {e.pk: e for pair in pairs for e in pair} | {e.pk: e for e in with_expected}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(needed)))) as pool:
        read = dict(zip(needed, pool.map(_read_schema, needed.values()), strict=True))
    for environment_id, result in read.items():
        if isinstance(result, Exception):
            environment = needed[environment_id]
            report.findings.append(
                Finding(
                    "unreadable",
                    [environment.slug],
                    environment.name,
                    f"{environment.name}'s schema could not be read: {result}",
                )
            )
    for a, b in pairs:
        left, right = read[a.pk], read[b.pk]
        if isinstance(left, Exception) or isinstance(right, Exception):
            continue
        report.schemas_compared.append((a.slug, b.slug))
        cross_pair = len({_dialect(a), _dialect(b)}) > 1
        for difference in core_schema.compare_schemas(
            left, right, left_name=a.name, right_name=b.name, cross_dialect=cross_pair
        ):
            report.findings.append(
                Finding(
                    "schema",
                    [a.slug, b.slug],
                    difference.object,
                    difference.detail,
                    change=difference.kind,
                )
            )
    for environment in with_expected:
        live = read[environment.pk]
        if not isinstance(live, Exception):
            _expected_findings(report, environment, live)


def _expected_findings(report: DriftReport, environment: Environment, live) -> None:
    heads = list(report.states[environment.pk].heads)
    built = expected_schemas.build(environment=environment, heads=heads, dialect=live.dialect)
    if built.error:
        report.findings.append(
            Finding(
                "unreadable",
                [environment.slug],
                environment.name,
                f"The schema {environment.name} should have could not be built: {built.error}",
            )
        )
        return
    report.expected_compared.append(environment.slug)
    for difference in expected_schemas.compare_with_expected(environment, built, live):
        report.findings.append(
            Finding(
                "expected",
                [environment.slug],
                difference.object,
                difference.detail,
                change=difference.kind,
                present=(difference.only_in == environment.name) if difference.only_in else None,
            )
        )


def _dialect(environment: Environment) -> str:
    try:
        return sync_url(environment.get_url()).get_backend_name()
    except Exception:  # noqa: BLE001 - an unusable URL is reported by the read itself
        return ""


# --- the scheduled check --------------------------------------------------------------------


def _key(finding: dict) -> tuple:
    """What makes a finding the same one next time: a pair's revisions may change while the
    pair still differs, so revision findings are known by their pair alone."""
    identity = (finding["kind"], tuple(finding["environments"]), finding["object"])
    return identity if finding["kind"] == "revisions" else (*identity, finding["detail"])


def drift_record(*, project: Project) -> tuple[list[dict], list[dict]]:
    """Check a project, keep what was found, and write an audit event for drift that appeared
    and for drift that cleared since the last check. Databases that could not be read are
    neither: their findings wait for a read that works. Returns (appeared, cleared).

    The check is stamped with the time it started: a "Check now" asked for after that is not
    answered by it. Checks of one project are serialised on its row, and a check that started
    before the one stored keeps nothing (the newer word stands)."""
    started = timezone.now()
    report = drift_build(project=project, expected="build")
    unreadable = {
        slug for f in report.findings if f.kind == "unreadable" for slug in f.environments
    }
    now = [f.as_dict() for f in report.findings if f.kind != "unreadable"]
    with transaction.atomic():
        state, _ = DriftState.objects.select_for_update().get_or_create(
            project=project, defaults={"checked_at": None}
        )
        if state.checked_at is not None and state.checked_at > started:
            return [], []
        state.checked_at, state.report = started, _stored_report(report)
        if report.index_error:
            state.save(update_fields=["checked_at", "report"])
            return [], []
        before = state.findings
        # A finding about a database that could not be read is carried over, not cleared.
        kept = [f for f in before if set(f["environments"]) & unreadable]
        current = now + [f for f in kept if _key(f) not in {_key(n) for n in now}]
        before_keys, current_keys = {_key(f) for f in before}, {_key(f) for f in current}
        appeared = [f for f in current if _key(f) not in before_keys]
        cleared = [f for f in before if _key(f) not in current_keys]
        state.findings = current
        state.save(update_fields=["checked_at", "report", "findings"])
        if appeared:
            audit_record(
                action="drift_found",
                system_actor="drift check",
                project=project,
                details={"findings": [f["detail"] for f in appeared]},
            )
        if cleared:
            audit_record(
                action="drift_cleared",
                system_actor="drift check",
                project=project,
                details={"findings": [f["detail"] for f in cleared]},
            )
    return appeared, cleared


def _stored_report(report: DriftReport) -> dict:
    """What the drift page shows besides the findings, as the check found it."""
    return {
        "environments": [{"slug": e.slug, "name": e.name} for e in report.environments],
        "rows": [asdict(row) for row in report.rows],
        "schemas_compared": [list(pair) for pair in report.schemas_compared],
        "expected_compared": list(report.expected_compared),
        "unreadable": [f.as_dict() for f in report.findings if f.kind == "unreadable"],
        "index_error": report.index_error or "",
    }


def drift_request(*, project: Project, user) -> bool:
    """A person's "Check now": a worker checks the project (reading every environment and
    building the schemas their migrations give); the page follows until it is done. False
    when the broker could not take it (nothing is left waiting)."""
    with transaction.atomic():
        state, _ = DriftState.objects.select_for_update().get_or_create(
            project=project, defaults={"checked_at": None}
        )
        if state.checking:
            return True  # one under way already
        previous = state.requested_at, state.requested_by
        state.requested_at, state.requested_by = timezone.now(), user
        state.save(update_fields=["requested_at", "requested_by"])
    if dispatch.send("drift_check", project.pk):
        return True
    state.requested_at, state.requested_by = previous
    state.save(update_fields=["requested_at", "requested_by"])
    return False


@dataclass
class DriftPage:
    """The drift page: the last check as it was stored, and whether a new one is under way."""

    project: Project
    state: DriftState | None
    groups: list[tuple[str, list[dict]]]
    report: dict

    @property
    def checked(self) -> bool:
        return self.state is not None and self.state.checked_at is not None

    @property
    def checking(self) -> bool:
        return self.state is not None and self.state.checking

    @property
    def settled(self) -> bool:
        return not self.checking

    @property
    def clean(self) -> bool:
        """The last check found nothing and read everything: the page may say "No drift"."""
        return (
            self.checked
            and not any(findings for _, findings in self.groups)
            and not self.report.get("index_error")
        )


_GROUPS = [
    ("revisions", "Revisions"),
    ("unknown_revision", "Revisions unknown to the scripts"),
    ("schema", "Schema differences between environments at one revision"),
    ("expected", "Live schemas against what their migrations build"),
    ("unreadable", "Could not be read"),
]


def drift_page(*, project: Project) -> DriftPage:
    """What the last stored check found (the overview's drift badges show the same check)."""
    state = DriftState.objects.filter(project=project).select_related("requested_by").first()
    report = state.report if state is not None else {}
    findings = (state.findings if state is not None else []) + report.get("unreadable", [])
    groups = [(title, [f for f in findings if f["kind"] == kind]) for kind, title in _GROUPS]
    return DriftPage(project=project, state=state, groups=groups, report=report)
