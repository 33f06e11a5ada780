"""Round-trip tests of a project's history: on a scratch database of each dialect its
environments use, every revision in apply order is upgraded, downgraded and upgraded again,
and the schema after the downgrade is compared with the schema before the upgrade (what
pytest-alembic's `test_up_down_consistency` checks), the schema after the second upgrade with
the first's. A revision whose downgrade() does nothing is named too, and so are several heads
the project does not intend (a merge is missing). `manage.py
migration_test PROJECT` runs it for CI (exit 0: clean, 1: a revision failed).

It runs the project's own alembic (through its command, in subprocesses) on scratch
databases only: never on an environment, never in the web process.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from environments import dispatch, expected, revision_analysis
from environments.core import backups, failures
from environments.core import schema as core_schema
from environments.core.findings import IRREVERSIBLE_DOWNGRADE
from environments.core.runner import RunnerError
from environments.models import Project, RoundTripState, UrlUnavailable


class RoundTripError(Exception):
    """The round trip could not be made at all (no scripts, no scratch database)."""


def round_trip_request(*, project: Project, user) -> bool:
    """A person's "Run the round trips": a worker runs them; the page follows until they are
    stored. False when the broker could not take it (nothing is left waiting)."""
    with transaction.atomic():
        state, _ = RoundTripState.objects.select_for_update().get_or_create(project=project)
        if state.running:
            return True  # one under way already
        previous = state.requested_at, state.requested_by
        state.requested_at, state.requested_by = timezone.now(), user
        state.save(update_fields=["requested_at", "requested_by"])
    if dispatch.send("round_trips_run", project.pk):
        return True
    state.requested_at, state.requested_by = previous
    state.save(update_fields=["requested_at", "requested_by"])
    return False


def round_trips_record(*, project: Project) -> RoundTripState:
    """Run the round trips on every dialect of the project and store what they found (the
    worker's part)."""
    results, error = [], ""
    try:
        dialects = dialects_of(project)
        if not dialects:
            error = (
                f"{project.name} has no SQLite or PostgreSQL environment to take a dialect from."
            )
        results = [round_trip(project, dialect, url) for dialect, url in dialects.items()]
    except RoundTripError as exc:
        error = str(exc)
    state, _ = RoundTripState.objects.get_or_create(project=project)
    state.results, state.error, state.checked_at = results, error, timezone.now()
    state.save(update_fields=["results", "error", "checked_at"])
    return state


def dialects_of(project: Project) -> dict[str, str]:
    """Each dialect the project's environments use, with one of their URLs (a PostgreSQL
    scratch database is made on that server unless RETORT_SCRATCH_POSTGRES_URL names one)."""
    found: dict[str, str] = {}
    for environment in project.environments.filter(gone_at=None).order_by("position", "pk"):
        try:
            url = environment.get_url()
        except UrlUnavailable:
            continue
        dialect = backups.dialect_of(url)
        if dialect in ("sqlite", "postgresql"):
            found.setdefault(dialect, url)
    return found


def round_trip(project: Project, dialect: str, like_url: str) -> dict:
    """{"dialect", "ok", "revisions": [{"revision", "ok", "problems"}]} for one dialect."""
    index, error = project.load_scripts()
    if index is None or index.revision_map is None:
        raise RoundTripError(f"The scripts cannot be read: {error or index.fatal}")
    order = list(index.pending(()))
    results = []
    try:
        with expected.scratch_database(dialect, like_url) as scratch:
            before, at = core_schema.Schema(dialect=dialect), ()
            for revision_id in order:
                parents = _parents(index, revision_id)
                if parents != at:  # another branch, or a merge: start from its parents
                    failed = _reset(project, scratch, parents)
                    if failed:
                        results.append({"revision": revision_id, "ok": False, "problems": [failed]})
                        break
                    before = _schema(scratch, dialect)
                problems, before = _one(project, scratch, revision_id, before)
                at = (revision_id,)
                problems += _empty_downgrade(index, revision_id)
                results.append({"revision": revision_id, "ok": not problems, "problems": problems})
                if before is None:  # the database is in no known state: stop here
                    break
            models = _models(project, scratch) if len(results) == len(order) else None
    except expected.ExpectedSchemaError as exc:
        raise RoundTripError(str(exc)) from None
    heads = project.heads_verdict(index)  # several heads the project does not intend
    problems = [] if heads.expected else [heads.sentence]
    if models and models != MODELS_MATCH and models != MODELS_UNNAMED:
        problems.append(models)
    return {
        "dialect": dialect,
        "ok": not problems
        and all(result["ok"] for result in results)
        and len(results) == len(order),
        "problems": problems,
        "models": models,
        "revisions": results,
        "not_reached": order[len(results) :],
    }


MODELS_MATCH = "the models match the migrations at head"
MODELS_UNNAMED = "env.py names no models (target_metadata), so they were not compared"


def _models(project: Project, scratch: str) -> str:
    """Whether the models env.py names (its target_metadata) match what the migrations build
    at head, by Alembic's own autogenerate comparison (`alembic check`)."""
    failed = _alembic(project, scratch, "upgrade", "heads")
    if failed:
        return failed
    try:
        result = project.run_alembic(["check"], url=scratch, timeout=settings.RETORT_JOB_TIMEOUT)
    except RunnerError as exc:
        return f"`alembic check` could not run: {exc}"
    if result.ok:
        return MODELS_MATCH
    if "does not provide a MetaData object" in result.output:
        return MODELS_UNNAMED
    detected = [line for line in result.output.splitlines() if "New upgrade operations" in line]
    cause = detected[-1].split("FAILED: ", 1)[-1] if detected else result.output.strip()[-500:]
    return f"the models and the migrations differ at head: {cause[:1000]}"


def _parents(index, revision_id: str) -> tuple[str, ...]:
    down = index.revisions[revision_id].down_revision
    return tuple(sorted([down] if isinstance(down, str) else down or ()))


def _reset(project: Project, scratch: str, parents: tuple[str, ...]) -> str:
    """Bring the scratch database to exactly `parents` (from base); "" or what failed."""
    for command, target in [("downgrade", "base")] + [("upgrade", p) for p in parents]:
        failed = _alembic(project, scratch, command, target)
        if failed:
            return failed
    return ""


def _one(
    project: Project, scratch: str, revision: str, before: core_schema.Schema
) -> tuple[list[str], core_schema.Schema | None]:
    """Upgrade to `revision`, downgrade one step, upgrade again; the problems in words and the
    schema it leaves (None when a command failed)."""
    dialect = before.dialect
    failed = _alembic(project, scratch, "upgrade", revision)
    if failed:
        return [failed], None
    after = _schema(scratch, dialect)
    # one step down from the single head it is now (a merge: back to both its parents)
    failed = _alembic(project, scratch, "downgrade", "-1")
    if failed:
        return [failed], None
    problems = [
        f"its downgrade does not undo its upgrade: {detail}"
        for detail in _differences(
            before, _schema(scratch, dialect), "before its upgrade", "after its downgrade"
        )
    ]
    failed = _alembic(project, scratch, "upgrade", revision)
    if failed:
        return [*problems, f"upgrading again after the downgrade: {failed}"], None
    again = _schema(scratch, dialect)
    problems += [
        f"upgrading again after the downgrade gives another schema: {detail}"
        for detail in _differences(after, again, "after its upgrade", "after upgrading again")
    ]
    return problems, again


def _alembic(project: Project, scratch: str, command: str, target: str) -> str:
    """Run one alembic command on the scratch database; "" or what went wrong, in words."""
    try:
        result = project.run_alembic(
            [command, target], url=scratch, timeout=settings.RETORT_JOB_TIMEOUT
        )
    except RunnerError as exc:
        return f"`alembic {command} {target}` could not run: {exc}"
    if result.ok:
        return ""
    cause = failures.read_failure(result.output, []).cause or f"exit code {result.exit_code}"
    return f"`alembic {command} {target}` failed: {cause}"


def _schema(scratch: str, dialect: str) -> core_schema.Schema:
    try:
        return core_schema.read_schema(scratch, timeout=settings.RETORT_CONNECT_TIMEOUT)
    except core_schema.SchemaReadError:
        return core_schema.Schema(dialect=dialect)  # a SQLite file not made yet: empty


def _differences(
    left: core_schema.Schema, right: core_schema.Schema, left_name: str, right_name: str
) -> list[str]:
    def phrasing(has: str, thing: str) -> str:
        if has == right_name:
            return f"{thing} is there {right_name} but was not {left_name}"
        return f"{thing} was there {left_name} but is not {right_name}"

    return [
        difference.detail
        for difference in core_schema.compare_schemas(
            left, right, left_name=left_name, right_name=right_name, phrasing=phrasing
        )
    ]


def _empty_downgrade(index, revision_id: str) -> list[str]:
    revision = index.revisions.get(revision_id)
    found = revision_analysis.revision_findings(revision) if revision is not None else []
    if isinstance(found, str):
        return [found]
    return [
        finding.detail
        for finding in found
        if finding.kind == IRREVERSIBLE_DOWNGRADE and finding.operation in ("pass", "missing")
    ]
