"""Figure 12: a rehearsal of an upgrade's plan on a copy of a PostgreSQL database of over
100 MB, against what a person would type for the same dry run — `createdb`, `pg_restore` of the
same backup file, `alembic upgrade head`, `dropdb` — in the same run.

The target is figure 7's (the sample project at its PROD_TARGET, filled), copied once and left
at that revision: a rehearsal only reads it. One untimed first rehearsal makes the backup both
sides restore from (Retort's own backup step) and builds the expected schema once (cached per
revision and file contents, as it is for every later rehearsal). Then each round runs both
sides from that one backup file, the order flipping from round to round.

The Retort side runs the worker's task body in this process: `execution.job_run(job_id=...)`
of the rehearsal job `rehearsals.rehearsal_request` queued. Nothing reaches a broker: the tasks
planning and the requests would send on commit are recorded instead (and checked).

Imported only after django.setup().
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import psycopg2
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import override_settings

from bench.jobs import (
    INI,
    PENDING,
    START,
    Fill,
    Template,
    alembic,
    build_template,
    check_upgraded,
)
from bench.postgres import Databases
from bench.report import Figure
from bench.stats import Samples
from environments import dispatch, execution, planning, rehearsals, roles
from environments.core import backups as core_backups
from environments.core import runner
from environments.models import Environment, Job, Project

SIDES = ("bare", "retort")
AIM = 1.15  # a rehearsal at most this many times the bare commands


@dataclass(frozen=True)
class BareRun:
    seconds: float  # createdb + pg_restore + alembic upgrade head + dropdb, the check apart
    parts: dict[str, float]  # each command's seconds


@dataclass(frozen=True)
class RehearsalRun:
    job_id: int
    request: float  # rehearsals.rehearsal_request
    run: float  # execution.job_run: the worker's task body
    parts: dict[str, float]  # what `run` was spent on, from the probes; sums to `run`
    recorded: float  # the rehearsal's own "seconds": the alembic command on the copy
    revisions: int  # revisions it timed
    rewrites: tuple[str, ...]
    locks: int  # lock records sampled
    schema: str  # what the schema check said


@dataclass(frozen=True)
class Round:
    first: str
    bare: BareRun
    retort: RehearsalRun

    @property
    def ratio(self) -> float:
        return self.retort.run / self.bare.seconds


@dataclass(frozen=True)
class RehearsalFigures:
    template: Template
    backup_size: int
    warm_up: float  # the first rehearsal: backup made, expected schema built, rehearsed
    rounds: tuple[Round, ...]
    budget: float

    def samples(self, value: Callable[[Round], float]) -> Samples:
        return Samples(tuple(value(r) for r in self.rounds))

    @property
    def ratio(self) -> float:
        """Retort's median over the bare median."""
        retort = self.samples(lambda r: r.retort.run)
        return retort.median / self.samples(lambda r: r.bare.seconds).median


# --- probes ---------------------------------------------------------------------------------

# Functions timed inside job_run; none of them calls another, so their spans add up.
PROBES: tuple[tuple[object, str, str], ...] = (
    (execution, "_read_heads", "read_heads"),  # the target's version table, before
    (core_backups, "restore_database", "restore"),  # rehearsals calls it through the package
    (runner, "run_alembic", "alembic"),  # Project.run_alembic calls it through the module
    (rehearsals, "_files", "storage_files"),  # before and after: the rewrites
    (rehearsals, "_schema_check", "schema_check"),
)


class Probes:
    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        self.spent = dict.fromkeys((label for _, _, label in PROBES), 0.0)
        with contextlib.ExitStack() as stack:
            for module, attr, label in PROBES:
                original = getattr(module, attr)  # AttributeError: the code moved, say so
                stack.enter_context(mock.patch.object(module, attr, self._timed(original, label)))
            yield

    def _timed(self, original: Callable, label: str) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[label] += time.perf_counter() - started

        return timed

    def parts(self, run: float) -> dict[str, float]:
        """The probed parts and the rest: claim, scratch database created and dropped, log
        lines, the lock sampler started and stopped, the result stored, the job finished."""
        return self.spent | {"rest": run - sum(self.spent.values())}


# --- the two sides --------------------------------------------------------------------------


def _command(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{result.stderr[-2000:]}")
    return seconds


def run_bare(databases: Databases, suffix: str, dump: Path, fill: Fill) -> BareRun:
    """`createdb`, `pg_restore --no-owner -d`, `python -m alembic -c alembic.ini upgrade head`,
    `dropdb`: the dry run by hand, on the same server and from the same file."""
    name = databases.name(suffix)
    url = databases.server.url(name)
    maintenance = f"--maintenance-db={databases.server.url('postgres')}"
    databases.created.append(name)  # dropped at the end of the bench if a command fails
    parts = {
        "createdb": _command(["createdb", maintenance, name]),
        "pg_restore": _command(["pg_restore", "--no-owner", f"--dbname={url}", str(dump)]),
        "alembic": alembic(url, "upgrade", "head"),
    }
    check_upgraded(url, fill, "bare")  # untimed
    parts["dropdb"] = _command(["dropdb", maintenance, name])
    databases.created.remove(name)
    return BareRun(sum(parts.values()), parts)


def run_rehearsal(plan: Job, user, probes: Probes, scratch_exists: Callable[[str], bool]):
    """Request a rehearsal of `plan` and run it, the worker's part in this process."""
    sent: list[str] = []
    with mock.patch.object(dispatch, "send_on_commit", lambda name, *a, **k: sent.append(name)):
        gc.collect()
        started = time.perf_counter()
        job = rehearsals.rehearsal_request(job=plan, user=user)
        request = time.perf_counter() - started
    if sent != ["job_run"]:
        raise RuntimeError(f"the rehearsal request would have sent {sent}")
    gc.collect()
    with probes.attached():
        started = time.perf_counter()
        done = execution.job_run(job_id=job.pk)
        run = time.perf_counter() - started
    if done is None:
        raise RuntimeError(f"rehearsal #{job.pk} was not run")
    done.refresh_from_db()
    data = done.rehearsal
    if done.status != Job.Status.SUCCEEDED:
        raise RuntimeError(f"rehearsal #{done.pk} ended {done.status}: {done.error}")
    timed = [step["revision"] for step in data.get("revisions", [])]
    if tuple(timed) != PENDING:
        raise RuntimeError(f"rehearsal #{done.pk} timed {timed}, not {list(PENDING)}")
    if data.get("schema") != []:
        raise RuntimeError(f"rehearsal #{done.pk}: the copy's schema check said {data['schema']}")
    if scratch_exists(rehearsals.scratch_name(done)):
        raise RuntimeError(f"rehearsal #{done.pk} left its scratch database behind")
    return RehearsalRun(
        job_id=done.pk,
        request=request,
        run=run,
        parts=probes.parts(run),
        recorded=data["seconds"],
        revisions=len(timed),
        rewrites=tuple(data.get("rewrites") or ()),
        locks=len(data.get("locks") or ()),
        schema="its schema is the one the migrations build",
    )


# --- rounds ---------------------------------------------------------------------------------


@dataclass
class Setup:
    databases: Databases
    fill: Fill
    plan: Job
    user: object
    dump: Path
    probes: Probes = field(default_factory=Probes)

    def scratch_exists(self, name: str) -> bool:
        return _exists(self.databases, name)


def _exists(databases: Databases, name: str) -> bool:
    with databases.server.admin() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


def _heads(url: str) -> list[str]:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            return sorted(row[0] for row in cursor.fetchall())
    finally:
        connection.close()


def run_round(setup: Setup, index: int, first: str) -> Round:
    runs: dict[str, object] = {}
    for side in (first, *[side for side in SIDES if side != first]):
        with setup.databases.server.admin() as cursor:
            cursor.execute("CHECKPOINT")  # the other side's writes flushed, untimed
        gc.collect()
        if side == "bare":
            suffix = f"rehearse_bare_{index:02d}"
            runs[side] = run_bare(setup.databases, suffix, setup.dump, setup.fill)
        else:
            runs[side] = run_rehearsal(setup.plan, setup.user, setup.probes, setup.scratch_exists)
    bare, retort = runs["bare"], runs["retort"]
    assert isinstance(bare, BareRun) and isinstance(retort, RehearsalRun)
    return Round(first, bare, retort)


def measure(
    databases: Databases,
    folder: Path,
    *,
    template: Template | None = None,
    fill: Fill | None = None,
    rounds: int = 8,
    min_rounds: int = 4,
    budget: float = 240.0,
    log: Callable[[str], None] = print,
) -> RehearsalFigures:
    """Rehearse one plan `rounds` times against the bare commands (fewer if `budget` seconds
    run out, but at least `min_rounds`, always an even number)."""
    fill = fill or Fill()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, {"PYTHONDONTWRITEBYTECODE": "1"}))
        stack.enter_context(override_settings(RETORT_BACKUP_ROOT=folder / "backups"))
        if template is None:
            template = build_template(databases, fill)
            log(f"rehearsals: target database {template.size / 1e6:.1f} MB built")
        target = databases.copy("rehearse_target", template.name)
        project = Project.objects.create(
            name="bench-rehearse", slug="bench-rehearse", alembic_ini=str(INI)
        )
        environment = Environment(project=project, name="prod", slug="prod", position=0)
        environment.set_url(target)
        environment.save()
        user = get_user_model().objects.create_user("bench-rehearser", password=None)
        user.groups.add(Group.objects.get(name=roles.RELEASE_MANAGER))
        sent: list[str] = []
        with mock.patch.object(dispatch, "send_on_commit", lambda name, *a, **k: sent.append(name)):
            plan = planning.job_request(  # its SQL asked for, as a plan made on its page
                environment=environment, kind=Job.Kind.UPGRADE, target="head", user=user, sql=True
            )
        plan = planning.job_preview_sql(job_id=plan.pk)
        if plan is None or plan.sql_status != Job.Preview.READY or sent != ["job_preview_sql"]:
            raise RuntimeError(f"the plan to rehearse is not ready: {plan} (sent {sent})")
        probes = Probes()
        started = time.perf_counter()
        run_rehearsal(plan, user, probes, functools.partial(_exists, databases))
        warm_up = time.perf_counter() - started
        backup = rehearsals.source_for(plan)
        if backup is None:
            raise RuntimeError("the first rehearsal left no backup of the target at its start")
        log(
            f"rehearsals: first rehearsal (fresh backup, expected schema built) "
            f"{warm_up:.2f} s; backup {backup.size / 1e6:.1f} MB"
        )
        setup = Setup(databases, fill, plan, user, Path(backup.path), probes)
        done: list[Round] = []
        deadline = time.monotonic() + budget
        for index in range(rounds):
            side = SIDES[index % 2]
            done.append(run_round(setup, index, side))
            last = done[-1]
            log(
                f"rehearsals: round {index + 1}/{rounds} ({side} first): bare "
                f"{last.bare.seconds:.2f} s (pg_restore {last.bare.parts['pg_restore']:.2f}, "
                f"alembic {last.bare.parts['alembic']:.2f}), Retort {last.retort.run:.2f} s "
                f"(restore {last.retort.parts['restore']:.2f}, alembic "
                f"{last.retort.parts['alembic']:.2f}): {last.ratio:.3f}×"
            )
            if len(done) >= min_rounds and len(done) % 2 == 0 and time.monotonic() >= deadline:
                break
        heads = _heads(target)
        if heads != [START]:
            raise RuntimeError(f"the rehearsed target holds {heads}, not {START}")
    return RehearsalFigures(template, backup.size, warm_up, tuple(done), budget)


# --- figures --------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _spread(samples: Samples) -> str:
    return (
        f"median {_s(samples.median)}, min {_s(samples.minimum)}, max {_s(samples.maximum)} "
        f"(n={samples.count})"
    )


def figures(f: RehearsalFigures) -> list[Figure]:
    bare = f.samples(lambda r: r.bare.seconds)
    retort = f.samples(lambda r: r.retort.run)
    paired = f.samples(lambda r: r.ratio)
    first = f.rounds[0].retort
    own = f.samples(lambda r: r.retort.run - r.retort.parts["alembic"])
    bare_own = f.samples(lambda r: r.bare.seconds - r.bare.parts["alembic"])

    def bare_part(name: str) -> str:
        return _s(f.samples(lambda r: r.bare.parts[name]).median)

    def part(name: str) -> str:
        return _s(f.samples(lambda r: r.retort.parts[name]).median)

    return [
        Figure(
            "12a. Rehearsal: the same target as 7a, copied once and only read; one backup "
            f"file ({f.backup_size / 1e6:.1f} MB, Retort's own) restored by both sides",
            f"upgrade plan {START} → head, {len(PENDING)} revisions; first rehearsal (fresh "
            f"backup, expected schema built and cached) {_s(f.warm_up)}",
        ),
        Figure(
            "12b. Bare: `createdb`, `pg_restore --no-owner -d`, `python -m alembic -c "
            "alembic.ini upgrade head`, `dropdb`",
            f"{_spread(bare)}; createdb {bare_part('createdb')}, pg_restore "
            f"{bare_part('pg_restore')}, alembic {bare_part('alembic')}, dropdb "
            f"{bare_part('dropdb')}",
        ),
        Figure(
            "12c. Retort: `execution.job_run(job_id=…)` of a rehearsal job, in process (target "
            "read, scratch database, restore, alembic with the lock sampler, rewrites, schema "
            "check, drop)",
            f"{_spread(retort)}; every rehearsal `succeeded`, {first.revisions} revisions "
            f"timed, {first.locks} locks sampled, rewrites: "
            f"{', '.join(first.rewrites) or 'none'}; {first.schema}; scratch database gone",
        ),
        Figure(
            "12d. Rehearsal ÷ bare",
            f"{f.ratio:.3f}× (medians); per round {paired.median:.3f}× median, "
            f"{paired.minimum:.3f}–{paired.maximum:.3f}×",
            f"≤ {AIM:.2f}×",
            f.ratio <= AIM,
        ),
        Figure(
            "12e. Without the alembic process on either side: (rehearsal − its alembic) ÷ "
            "(bare − its alembic)",
            f"{own.median / bare_own.median:.3f}× (medians: {_s(own.median)} ÷ "
            f"{_s(bare_own.median)}); Retort's alembic is forked from a parent that has "
            f"alembic and SQLAlchemy imported (RETORT_WARM_ALEMBIC, on by default): median "
            f"{part('alembic')} against the bare {bare_part('alembic')}",
        ),
        Figure(
            "12f. Where the rehearsal's time went (medians)",
            f"restore (`pg_restore | psql`, one transaction) {part('restore')}, alembic "
            f"{part('alembic')}, schema check (copy reflected, compared with the cached "
            f"expected schema) {part('schema_check')}, storage files ×2 "
            f"{part('storage_files')}, target's version table {part('read_heads')}, the rest "
            f"(claim, scratch create + drop, log, sampler, finish) {part('rest')}; "
            f"request {_s(f.samples(lambda r: r.retort.request).median)} (not in 12c)",
        ),
    ]


def note(f: RehearsalFigures) -> str:
    return (
        "Rehearsals: the plan is an upgrade of a copy of 7a's target (at "
        f"`{START}`), planned once by `planning.job_request` and its SQL rendered; the target "
        "is never written and is checked to hold the same revision at the end. The first "
        "rehearsal (untimed in 12c/12d, shown in 12a) makes the backup both sides restore from "
        "and builds the expected schema, which is cached per revision and file contents as it "
        "is in production. Each round then asks `rehearsals.rehearsal_request` for a new "
        "rehearsal of the same plan (dispatch recorded, not sent) and calls `job_run` on it: "
        "that call is the whole body of the Celery task, so no broker or queue latency is in "
        "it. It takes the existing backup (`rehearsals.source_for`), creates "
        "`retort_rehearsal_<id>` on the same server, restores it with `pg_restore --clean "
        "--if-exists --no-owner --single-transaction | psql`, runs `python -m alembic -c "
        "alembic.ini upgrade head` with the plan's timeouts while a thread samples `pg_locks`, "
        "compares the tables' storage files, reflects the copy and compares it with the "
        "expected schema, and drops the copy. Checked after each: `succeeded`, every pending "
        "revision timed, no schema difference, the scratch database gone. Bare: the same "
        "backup file restored by `pg_restore --no-owner --dbname=<url>` into a database "
        "`createdb` made, `alembic upgrade head`, then `dropdb`, each a subprocess timed by "
        "wall clock; the database's state is checked (at head, every 'new' order 'pending') "
        "between the upgrade and the drop, untimed. The side that goes first alternates; a "
        "`CHECKPOINT` and `gc.collect()` run before each side, untimed. "
        f"{len(f.rounds)} rounds (an even number; more stop once {f.budget:.0f} s have passed)."
    )
