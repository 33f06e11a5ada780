"""Figure 7: a backup-then-upgrade job on a PostgreSQL database of over 100 MB, against
`pg_dump -Fc` followed by `alembic upgrade head` run directly, in the same run.

The target is the sample project (examples/inventory) at its PROD_TARGET, filled with rows so
the upgrade's data migration has work to do. Every round copies that database twice (one copy
per side) and runs both sides on their copies, the order flipping from round to round.

The Retort side runs the worker's task body in this process: `execution.job_run(job_id=...)` is all
the Celery task `environments.tasks.job_run` does. Nothing is handed to a broker: the tasks that
`job_request` and `job_queue` send on commit are recorded instead of sent (and checked).

Imported only after django.setup().
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import psycopg2
import psycopg2.errors
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import override_settings

from bench.postgres import Databases
from bench.stats import Samples
from environments import approvals, dispatch, execution, planning, roles
from environments.core import runner
from environments.core.backups import api as backup_api
from environments.core.backups import postgres as backup_postgres
from environments.models import Environment, Job, JobLogLine, Project
from examples.inventory import revisions

INI = Path(settings.BASE_DIR) / "examples" / "inventory" / "alembic.ini"
ALEMBIC = [sys.executable, "-m", "alembic", "-c", "alembic.ini"]  # the project's own command
START = revisions.PROD_TARGET
PENDING = tuple(revisions.ALL_REVISIONS[revisions.ALL_REVISIONS.index(START) + 1 :])
SIDES = ("direct", "retort")
MIN_SIZE = 100 * 1000 * 1000  # bytes: the database must be at least this big (100 MB)


@dataclass(frozen=True)
class Fill:
    """Rows put into the tables of the sample schema at START."""

    users: int = 300_000
    products: int = 50_000
    orders: int = 1_500_000
    new_every: int = 4  # every 4th order has status 'new': what MARK_NEW_ORDERS_PENDING updates
    report_runs: int = 100
    order_reports: int = 200_000

    @property
    def new_orders(self) -> int:
        return self.orders // self.new_every

    def statements(self) -> list[str]:
        """INSERT ... SELECT generate_series(...) per table; every key points at a real row."""
        u, p, o, r = self.users, self.products, self.orders, self.report_runs
        return [
            "INSERT INTO users (id, name) "
            f"SELECT g, 'user ' || g || ' ' || md5(g::text) FROM generate_series(1, {u}) g",
            "INSERT INTO products (id, name, legacy_flag) "
            f"SELECT g, 'product ' || g || ' ' || md5('p' || g), g % 3 = 0 "
            f"FROM generate_series(1, {p}) g",
            "INSERT INTO orders (id, user_id, product_id, qty, status) "
            f"SELECT g, 1 + (g::bigint * 7919) % {u}, 1 + (g::bigint * 104729) % {p}, "
            f"1 + g % 9, CASE WHEN g % {self.new_every} = 0 THEN 'new' ELSE 'shipped' END "
            f"FROM generate_series(1, {o}) g",
            f"INSERT INTO report_runs (id, name) SELECT g, 'report ' || g "
            f"FROM generate_series(1, {r}) g",
            "INSERT INTO order_reports (id, report_run_id, order_id, total) "
            f"SELECT g, 1 + g % {r}, 1 + (g::bigint * 31) % {o}, g % 1000 "
            f"FROM generate_series(1, {self.order_reports}) g",
        ] + [
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count})"
            for table, count in self.rows().items()
        ]

    def rows(self) -> dict[str, int]:
        return {
            "users": self.users,
            "products": self.products,
            "orders": self.orders,
            "report_runs": self.report_runs,
            "order_reports": self.order_reports,
        }


@dataclass(frozen=True)
class Template:
    name: str
    size: int  # pg_database_size, after VACUUM (FREEZE, ANALYZE)
    seconds: float  # alembic upgrade to START, the fill, the vacuum
    fk_checks_skipped: bool  # the fill ran with session_replication_role = replica


@dataclass(frozen=True)
class DirectRun:
    seconds: float  # wall time of both commands, back to back
    dump: float  # pg_dump -Fc -f file
    upgrade: float  # python -m alembic -c alembic.ini upgrade head
    dump_size: int
    cpu: float  # user + system seconds of this process and its children over the two


@dataclass(frozen=True)
class JobRun:
    job_id: int
    plan: float  # planning.job_request
    preview: float  # planning.job_preview_sql: a worker task run between planning and queueing
    queue: float  # approvals.job_queue
    run: float  # execution.job_run: the worker's task body
    parts: dict[str, float]  # what `run` was spent on, from the probes; sums to `run`
    log: dict[str, float]  # the same run read from its log lines' timestamps
    log_lines: int
    backup_size: int
    sent: tuple[str, ...]  # the tasks planning and queueing would have sent, in order
    cpu: float  # user + system seconds of this process and its children over job_run

    @property
    def end_to_end(self) -> float:
        return self.plan + self.queue + self.run


@dataclass(frozen=True)
class Round:
    first: str  # which side ran first
    size: int  # pg_database_size of each copy before its run
    direct: DirectRun
    retort: JobRun

    @property
    def ratio(self) -> float:
        return self.retort.run / self.direct.seconds


@dataclass(frozen=True)
class JobFigures:
    fill: Fill
    template: Template
    rounds: tuple[Round, ...]
    unprobed: tuple[str, ...]  # probes that found nothing to attach to (code moved)
    budget: float
    load: tuple[tuple[float, float, float], tuple[float, float, float]]  # before, after

    def _samples(self, value: Callable[[Round], float]) -> Samples:
        return Samples(tuple(value(r) for r in self.rounds))

    @property
    def direct(self) -> Samples:
        return self._samples(lambda r: r.direct.seconds)

    @property
    def retort(self) -> Samples:
        return self._samples(lambda r: r.retort.run)

    @property
    def ratio(self) -> float:
        """Retort's median over the direct median."""
        return self.retort.median / self.direct.median

    @property
    def paired(self) -> Samples:
        """Each round's Retort time over its own direct time."""
        return self._samples(lambda r: r.ratio)

    def samples(self, value: Callable[[Round], float]) -> Samples:
        return self._samples(value)

    def part(self, name: str) -> Samples:
        return self._samples(lambda r: r.retort.parts[name])

    def log_phase(self, name: str) -> Samples:
        return self._samples(lambda r: r.retort.log[name])


# --- probes ---------------------------------------------------------------------------------

# Functions timed inside job_run (wrapped by a timer that calls the original, nothing else):
# what the log lines cannot separate, such as the end of pg_dump and the start of verification.
PROBES: tuple[tuple[object, str, str], ...] = (
    (execution, "_execute", "execute"),
    (execution, "_read_heads", "read_heads"),
    (execution, "_make_backup", "make_backup"),
    (backup_api, "pg_dump", "pg_dump"),  # the backup API calls these by the names it imports
    (backup_api, "_verify", "verify"),
    (backup_postgres, "list_entries", "verify_list"),
    (backup_api, "size_and_sha256", "sha256"),
    (backup_api, "publish", "publish"),
    (runner, "run_alembic", "alembic"),  # Project.run_alembic calls it through the module
    (execution, "_finish", "finish"),
    (execution, "backups_prune", "prune"),
    (execution, "environment_read", "snapshot"),  # execution imports it by name
)

# What job_run's time is split into (seconds each, summing to the whole call).
PARTS = (
    "start",  # claim the job (UPDATE), re-select it, audit job_started, the log, the heartbeat
    "lock",  # decrypt the URL, first log line, connect to the target, pg_try_advisory_lock
    "read_heads",  # read the version table before and after (two reads)
    "pg_dump",
    "verify_list",  # pg_restore --list of the archive
    "verify_read",  # pg_restore of the whole archive into /dev/null
    "sha256",  # size and SHA-256 of the file, read back in 1 MiB chunks
    "publish",  # fsync the file, hard link to the final name, unlink, fsync the folder
    "backup_rest",  # folder, partial file, Backup row, job update, log lines
    "alembic",  # the alembic subprocess, streamed into the log
    "run_rest",  # log lines, lock release, heartbeat stop, the last log flush, in between
    "finish",  # status update, re-select, audit job_succeeded
    "prune",  # backups_prune
    "snapshot",  # environment_read (execution imports it): index check, read, snapshot insert
)


class Probes:
    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.missing: list[str] = []

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        self.spans.clear()
        with contextlib.ExitStack() as stack:
            for module, attr, label in PROBES:
                original = getattr(module, attr, None)
                if original is None:
                    name = f"{getattr(module, '__name__', module)}.{attr}"
                    if name not in self.missing:
                        self.missing.append(name)
                    continue
                stack.enter_context(mock.patch.object(module, attr, self._timed(original, label)))
            yield

    def _timed(self, original: Callable, label: str) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((label, started, time.perf_counter()))

        return timed

    def parts(self, started: float, ended: float) -> dict[str, float]:
        """Split [started, ended] by the probes' spans: each part is the time of one function
        not spent in another probed function it called, so the parts add up to the whole
        whatever order job_run calls them in."""
        exclusive: dict[str, float] = dict.fromkeys((label for _, _, label in PROBES), 0.0)
        first: dict[str, tuple[float, float]] = {}
        stack: list[tuple[str, float, float]] = []
        covered = 0.0  # by spans no other span contains
        opened = ended  # where the first of those began
        for label, begin, end in sorted(self.spans, key=lambda span: (span[1], -span[2])):
            while stack and stack[-1][2] <= begin:
                stack.pop()
            exclusive[label] += end - begin
            first.setdefault(label, (begin, end))
            if stack:
                exclusive[stack[-1][0]] -= end - begin
            else:
                covered += end - begin
                opened = min(opened, begin)
            stack.append((label, begin, end))
        lock = 0.0
        if "execute" in first and "read_heads" in first:
            lock = first["read_heads"][0] - first["execute"][0]
        parts = {
            "start": opened - started,
            "lock": lock,
            "read_heads": exclusive["read_heads"],
            "pg_dump": exclusive["pg_dump"],
            "verify_list": exclusive["verify_list"],
            "verify_read": exclusive["verify"],
            "sha256": exclusive["sha256"],
            "publish": exclusive["publish"],
            "backup_rest": exclusive["make_backup"],
            "alembic": exclusive["alembic"],
            "run_rest": exclusive["execute"] - lock + (ended - opened - covered),
            "finish": exclusive["finish"],
            "prune": exclusive["prune"],
            "snapshot": exclusive["snapshot"],
        }
        return {name: parts[name] for name in PARTS}


# --- the target database --------------------------------------------------------------------


def alembic(url: str, *args: str) -> float:
    """`python -m alembic -c alembic.ini <args>` in the project's folder; returns its seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        ALEMBIC + list(args),
        cwd=INI.parent,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"alembic {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds


def build_template(databases: Databases, fill: Fill) -> Template:
    """The sample project at START, filled, vacuumed and closed to connections."""
    started = time.perf_counter()
    suffix = "jobs_template"
    url = databases.create(suffix)
    name = databases.name(suffix)
    alembic(url, "upgrade", START)
    skipped = True
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            try:
                # The keys are built valid; skipping the per-row foreign key triggers makes the
                # fill some ten times faster (needs a superuser; without one they just run).
                cursor.execute("SET session_replication_role = replica")
            except psycopg2.errors.InsufficientPrivilege:
                skipped = False
            for statement in fill.statements():
                cursor.execute(statement)
            cursor.execute("RESET session_replication_role")
            cursor.execute("VACUUM (FREEZE, ANALYZE)")  # no hint bits left for a reader to set
    finally:
        connection.close()
    with databases.server.admin() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    checkpoint(databases)
    size = database_size(databases, name)
    if size < MIN_SIZE:
        raise RuntimeError(f"the target database is only {size:,} bytes; raise the fill")
    return Template(name, size, time.perf_counter() - started, skipped)


def checkpoint(databases: Databases) -> None:
    with databases.server.admin() as cursor:
        cursor.execute("CHECKPOINT")


def database_size(databases: Databases, name: str) -> int:
    with databases.server.admin() as cursor:
        cursor.execute("SELECT pg_database_size(%s)", [name])
        return cursor.fetchone()[0]


def check_upgraded(url: str, fill: Fill, side: str) -> None:
    """At HEAD, with every 'new' order now 'pending'."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            heads = sorted(row[0] for row in cursor.fetchall())
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 'pending'), "
                "count(*) FILTER (WHERE status = 'new') FROM orders"
            )
            pending, new = cursor.fetchone()
    finally:
        connection.close()
    if heads != [revisions.HEAD] or (pending, new) != (fill.new_orders, 0):
        raise RuntimeError(
            f"{side}: the database holds {heads} with {pending} pending and {new} new orders; "
            f"expected {[revisions.HEAD]}, {fill.new_orders} and 0"
        )


# --- the two sides --------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system time of this process (all its threads) and its waited-for children; the
    server's backends are not in it."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_direct(url: str, dump: Path) -> DirectRun:
    """`pg_dump -Fc -f file db`, then `python -m alembic -c alembic.ini upgrade head`."""
    cpu = cpu_seconds()
    started = time.perf_counter()
    result = subprocess.run(
        ["pg_dump", "-Fc", "-f", str(dump), f"--dbname={url}"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    dumped = time.perf_counter()
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed:\n{result.stderr[-2000:]}")
    upgrade = alembic(url, "upgrade", "head")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    return DirectRun(seconds, dumped - started, upgrade, dump.stat().st_size, cpu)


def run_job(environment: Environment, user, probes: Probes) -> JobRun:
    """Plan, preview, queue and run one upgrade to head, the worker's part in this process."""
    sent: list[str] = []

    def record(task_name: str, *args, then=None) -> None:
        sent.append(task_name)

    with mock.patch.object(dispatch, "send_on_commit", record):
        gc.collect()
        started = time.perf_counter()
        job = planning.job_request(  # its SQL asked for, as a plan made on its page
            environment=environment, kind=Job.Kind.UPGRADE, target="head", user=user, sql=True
        )
        plan = time.perf_counter() - started

        started = time.perf_counter()
        previewed = planning.job_preview_sql(job_id=job.pk)
        preview = time.perf_counter() - started
        if previewed is None or previewed.sql_status != Job.Preview.READY:
            raise RuntimeError(f"the SQL preview of job #{job.pk} is not ready: {previewed}")

        started = time.perf_counter()
        job = approvals.job_queue(job=job, user=user)
        queue = time.perf_counter() - started

    gc.collect()
    after: list[str] = []  # the proof's task (proofs.py), recorded: the copy is dropped soon
    with (
        probes.attached(),
        mock.patch.object(dispatch, "send", lambda name, *a, **k: after.append(name)),
    ):
        cpu = cpu_seconds()
        started = time.perf_counter()
        done = execution.job_run(job_id=job.pk)
        ended = time.perf_counter()
        cpu = cpu_seconds() - cpu
    run = ended - started
    if done is None:
        raise RuntimeError(f"job #{job.pk} was not run")
    done.refresh_from_db()
    if done.status != Job.Status.SUCCEEDED or done.result_heads != [revisions.HEAD]:
        raise RuntimeError(f"job #{done.pk} ended {done.status}: {done.error}")
    if tuple(done.revisions) != PENDING:
        raise RuntimeError(f"job #{done.pk} planned {done.revisions}, not {list(PENDING)}")
    if sent != ["job_preview_sql", "job_run"]:
        raise RuntimeError(f"job #{done.pk}: planning and queueing would have sent {sent}")
    if after != (["job_prove"] if settings.RETORT_PROOF_AFTER_RUN else []):
        raise RuntimeError(f"job #{done.pk}: its run would have sent {after}")
    backup = done.backup
    if backup is None or not backup.verified or not Path(backup.path).is_file():
        raise RuntimeError(f"job #{done.pk} left no verified backup on disk: {backup}")
    if Path(backup.path).stat().st_size != backup.size:
        raise RuntimeError(f"backup #{backup.pk} is not the size it recorded")
    lines = list(JobLogLine.objects.filter(job=done).order_by("seq").values_list("at", "text"))
    return JobRun(
        job_id=done.pk,
        plan=plan,
        preview=preview,
        queue=queue,
        run=run,
        parts=probes.parts(started, ended),
        log=log_phases(done, lines),
        log_lines=len(lines),
        backup_size=backup.size,
        sent=tuple(sent),
        cpu=cpu,
    )


# Log lines that open each phase of the run, in the order they are written.
LOG_MARKS = (
    ("first", lambda text: text.startswith("Job #")),
    ("locked", lambda text: text.startswith("Holding the migration lock")),
    ("pg_dump", lambda text: text.startswith("Running pg_dump of")),
    ("verified", lambda text: text.startswith("Verified:")),
    ("written", lambda text: text.startswith("Backup written to")),
    ("recorded", lambda text: text.startswith("Backup #")),
    ("alembic", lambda text: text.startswith("$ ")),
    ("done", lambda text: text.startswith("Done:")),
)


def log_phases(job: Job, lines: Sequence[tuple]) -> dict[str, float]:
    """Seconds between the log lines (JobLogLine.at) that mark the steps of the run."""
    at = {}
    for name, matches in LOG_MARKS:
        found = next((when for when, text in lines if matches(text)), None)
        if found is None:
            raise RuntimeError(f"job #{job.pk}: no {name!r} line in its log")
        at[name] = found

    def between(a, b) -> float:
        return (b - a).total_seconds()

    return {
        "claim": between(job.started_at, at["first"]),
        "lock": between(at["first"], at["locked"]),
        "pg_dump_verify": between(at["pg_dump"], at["verified"]),
        "sha256_publish": between(at["verified"], at["written"]),
        "backup": between(at["pg_dump"], at["recorded"]),
        "alembic": between(at["alembic"], at["done"]),
        "after": between(at["done"], job.finished_at),
    }


# --- rounds ---------------------------------------------------------------------------------


@dataclass
class Setup:
    databases: Databases
    template: Template
    fill: Fill
    project: Project
    user: object
    folder: Path
    probes: Probes = field(default_factory=Probes)


def run_round(setup: Setup, index: int, first: str) -> Round:
    databases = setup.databases
    names = {side: f"jobs_{index:02d}_{side}" for side in SIDES}
    urls = {side: databases.copy(names[side], setup.template.name) for side in SIDES}
    environment = Environment(
        project=setup.project, name=f"round-{index:02d}", slug=f"round-{index:02d}", position=index
    )
    environment.set_url(urls["retort"])
    environment.save()
    size = database_size(databases, databases.name(names["retort"]))
    dump = setup.folder / "direct" / f"round-{index:02d}.dump"
    dump.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, object] = {}
    order = (first, *[side for side in SIDES if side != first])
    for side in order:
        checkpoint(databases)  # the copies and the other side's writes flushed, untimed
        gc.collect()
        if side == "direct":
            runs[side] = run_direct(urls[side], dump)
            dump.unlink()
        else:
            job = run_job(environment, setup.user, setup.probes)
            runs[side] = job
            backup = Job.objects.get(pk=job.job_id).backup
            assert backup is not None  # checked by run_job
            Path(backup.path).unlink()
        check_upgraded(urls[side], setup.fill, side)
        # Dropped at once: autovacuum, drawn by the UPDATE's dead rows, must not work on this
        # copy while the other side runs.
        databases.drop(databases.name(names[side]))
    direct, retort = runs["direct"], runs["retort"]
    assert isinstance(direct, DirectRun) and isinstance(retort, JobRun)
    if not 0.5 <= retort.backup_size / direct.dump_size <= 2.0:
        raise RuntimeError(
            f"round {index}: Retort's backup is {retort.backup_size:,} bytes, the direct "
            f"dump {direct.dump_size:,}"
        )
    return Round(first, size, direct, retort)


def measure(
    databases: Databases,
    folder: Path,
    *,
    fill: Fill | None = None,
    rounds: int = 8,
    min_rounds: int = 4,
    budget: float = 180.0,
    log: Callable[[str], None] = print,
) -> JobFigures:
    """Build the target, then `rounds` rounds of both sides (fewer if `budget` seconds run
    out, but at least `min_rounds`, and always an even number so each side goes first as
    often as the other)."""
    fill = fill or Fill()
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        # The alembic children (both sides) write no __pycache__ into examples/.
        stack.enter_context(mock.patch.dict(os.environ, {"PYTHONDONTWRITEBYTECODE": "1"}))
        stack.enter_context(override_settings(RETORT_BACKUP_ROOT=folder / "backups"))
        with connection.cursor() as cursor:  # the dashboard's: nothing left for autovacuum
            cursor.execute("VACUUM (ANALYZE)")
        template = build_template(databases, fill)
        log(f"jobs: target database {template.size / 1e6:.1f} MB built in {template.seconds:.1f} s")
        project = Project.objects.create(
            name="bench-inventory", slug="bench-inventory", alembic_ini=str(INI)
        )
        user = get_user_model().objects.create_user("bench-release", password=None)
        user.groups.add(Group.objects.get(name=roles.RELEASE_MANAGER))
        setup = Setup(databases, template, fill, project, user, folder)
        done: list[Round] = []
        deadline = time.monotonic() + budget
        for index in range(rounds):
            first = SIDES[index % 2]
            done.append(run_round(setup, index, first))
            last = done[-1]
            direct, retort = last.direct, last.retort
            log(
                f"jobs: round {index + 1}/{rounds} ({first} first): direct "
                f"{direct.seconds:.2f} s (pg_dump {direct.dump:.2f}, alembic "
                f"{direct.upgrade:.2f}), Retort job_run {retort.run:.2f} s (pg_dump "
                f"{retort.parts['pg_dump']:.2f}, alembic {retort.parts['alembic']:.2f}): "
                f"{last.ratio:.3f}×"
            )
            enough = len(done) >= min_rounds and len(done) % 2 == 0
            if enough and time.monotonic() >= deadline:
                break
    load = (load_before, os.getloadavg())
    return JobFigures(fill, template, tuple(done), tuple(setup.probes.missing), budget, load)
