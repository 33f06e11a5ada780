"""Figure 10: a fleet of 1,000 environments (500 PostgreSQL databases on the local server and 500
SQLite files), read by a real Celery worker of 2 processes and shown by the overview from what
the worker stored.

The fleet grows in three steps (10, 100, then 1,000 environments); after each step the worker
reads it and the overview page is timed through Django's test client (the whole request: session,
queries, template). At 1,000 the full refresh is timed from the beat's tick (`reads_send_due`,
run here as the beat's task body) until every environment's new read is stored, against the
loop a user would otherwise write: `alembic current` per database, one after another and 16
wide with `xargs -P`. Then statement-level triggers count every row the refreshes write.

The databases are stamped by SQL (an `alembic_version` row per database) from a template, since
stamping 1,000 databases by the CLI would take the section's whole budget; each environment's
revision is picked by a seeded draw, so every run builds the same fleet.

Imported only after django.setup().
"""

from __future__ import annotations

import contextlib
import html
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from bench import growth
from bench.postgres import BenchSetupError, Databases
from bench.stats import Samples, repeat
from environments import overviews, read_requests, reads
from environments.models import CurrentState, Environment, Project, StateChange
from examples.synthetic import SyntheticHistory, write_history

REPO = Path(__file__).resolve().parent.parent
SIZES = (10, 100, 1000)
HTTP_SIZES = (3, 10, 100, 1000)  # the overview over HTTP, cold and warm
REVISIONS = 100
WORKER_PROCESSES = 2
REFRESH_RUNS = 3  # timed full refreshes of the 1,000
COUNTED_CYCLES = 3  # refreshes whose writes are counted
LOOP_SAMPLE = 50  # databases `alembic current` reads one after another (then extrapolated)
XARGS_SAMPLE = 200  # databases the 16-wide loop reads (then extrapolated)
XARGS_WIDTH = 16
BENCH_USER = "bench-fleet"
VERSION_TABLE = "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"


@dataclass(frozen=True)
class Tenant:
    """One environment of the fleet: where it is, what it is stamped at, its labels."""

    name: str
    url: str
    database: str | None  # the PostgreSQL database's suffix (bench.postgres.Databases), if made
    kind: str  # "at head", "behind", "unknown revision", "no version table", "unreachable"
    revision: str | None  # None: no version table (or no database)
    labels: dict[str, str]

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")


@dataclass(frozen=True)
class RowCounts:
    """Rows written by `cycles` full refreshes, by table and operation."""

    cycles: int
    rows: dict[tuple[str, str], int]  # (table, INSERT/UPDATE/DELETE) -> rows

    def per_cycle(self, table: str, operation: str) -> float:
        return self.rows.get((table, operation), 0) / self.cycles

    def total(self, operation: str) -> float:
        return sum(n for (_, op), n in self.rows.items() if op == operation) / self.cycles


@dataclass(frozen=True)
class FleetFigures:
    kinds: Counter[str]
    statuses: Counter[str]
    setup_seconds: float
    overview: dict[int, Samples]  # page server time by number of environments
    http: dict[int, tuple[list[float], float]]  # over HTTP: [cold, warm…] seconds, worker MiB
    shown: dict[int, str]  # what the page showed at each size
    poll: Samples  # the overview region's poll when nothing changed, at 1,000
    filtered: Samples  # the overview at 1,000 filtered by status and label
    read_in_request: Samples  # at 1,000: every environment read in the request, then built
    refresh: Samples  # full refreshes of the 1,000 by the worker
    loop: LoopRun  # `alembic current` one database after another, LOOP_SAMPLE databases
    xargs: LoopRun  # the same XARGS_WIDTH wide, XARGS_SAMPLE databases
    rows: RowCounts
    state_table: str
    change_table: str
    revisions: int = REVISIONS
    worker_processes: int = WORKER_PROCESSES
    xargs_width: int = XARGS_WIDTH

    @staticmethod
    def extrapolated(run: LoopRun) -> float:
        return run.samples.median * SIZES[-1] / run.databases


def measure(databases: Databases, tmp: Path, *, log: Callable[[str], None] = print) -> FleetFigures:
    history = write_history(tmp / "history", REVISIONS, seed=18)
    before = set(databases.created)
    started = time.monotonic()
    log(f"fleet: {SIZES[-1] // 2} PostgreSQL databases and {SIZES[-1] // 2} SQLite files")
    tenants = plan(history, databases, tmp)
    try:
        make_targets(tenants, databases, tmp)
        setup_seconds = time.monotonic() - started
        project = Project.objects.create(
            name="tenants", slug="tenants", alembic_ini=history.alembic_ini
        )
        client = _logged_in_client()
        growth.bench_user()  # who logs in over HTTP (a viewer)
        with worker(tmp / "worker.log", log=log):
            overview: dict[int, Samples] = {}
            http: dict[int, tuple[list[float], float]] = {}
            shown: dict[int, str] = {}
            registered = 0
            for size in HTTP_SIZES:
                register(project, tenants[registered:size], start=registered)
                registered = size
                refresh_all(project)
                log(f"fleet: the overview of {size} environments")
                if size in SIZES:
                    overview[size], shown[size] = time_page(client, reverse("overview"))
                http[size] = growth.over_http("/", b'data-testid="counts"')
            statuses = Counter(
                CurrentState.objects.filter(environment__project=project).values_list(
                    "status", flat=True
                )
            )
            poll = time_poll(client)
            filtered, _ = time_page(
                client, reverse("overview") + "?status=behind&label=tier:enterprise"
            )
            log(f"fleet: {REFRESH_RUNS} full refreshes by {WORKER_PROCESSES} worker processes")
            refresh = Samples(tuple(refresh_all(project) for _ in range(REFRESH_RUNS)))
            log(f"fleet: rows written by {COUNTED_CYCLES} more refreshes")
            with counting_rows() as counted:
                for _ in range(COUNTED_CYCLES):
                    refresh_all(project)
            rows = RowCounts(COUNTED_CYCLES, counted)
        log("fleet: every environment read in the request (the design before the workers)")
        read_in_request = time_read_in_request(project)
        log("fleet: `alembic current` per database, in a loop and with xargs -P")
        loop = alembic_loop(history, tenants, tmp, sample=LOOP_SAMPLE, width=1)
        xargs = alembic_loop(history, tenants, tmp, sample=XARGS_SAMPLE, width=XARGS_WIDTH)
    finally:
        try:
            Project.objects.filter(slug="tenants").delete()
            get_user_model().objects.filter(username=BENCH_USER).delete()
        finally:
            databases.drop(*(set(databases.created) - before))
    return FleetFigures(
        kinds=Counter(tenant.kind for tenant in tenants),
        statuses=statuses,
        setup_seconds=setup_seconds,
        overview=overview,
        http=http,
        shown=shown,
        poll=poll,
        filtered=filtered,
        read_in_request=read_in_request,
        refresh=refresh,
        loop=loop,
        xargs=xargs,
        rows=rows,
        state_table=CurrentState._meta.db_table,
        change_table=StateChange._meta.db_table,
    )


# --- the fleet -------------------------------------------------------------------------------


def plan(history: SyntheticHistory, databases: Databases, tmp: Path) -> list[Tenant]:
    """1,000 tenants, PostgreSQL and SQLite alternating (so every prefix is half and half):
    most at head, some behind, a few at a revision the scripts do not know, without a version
    table, or unreachable."""
    rng = random.Random(18)
    order = history.revisions
    tenants = []
    for i in range(SIZES[-1]):
        name = f"tenant-{i:04d}"
        draw = rng.random()
        if draw < 0.90:
            kind, revision = "at head", history.heads[0]
        elif draw < 0.96:
            kind, revision = "behind", order[len(order) - 1 - rng.randint(1, 30)]
        elif draw < 0.985:
            kind, revision = "unknown revision", f"{i:04x}deadbeef"
        elif draw < 0.995:
            kind, revision = "no version table", None
        else:
            kind, revision = "unreachable", None
        database = None
        if i % 2:
            database = f"f{i:04d}" if kind != "unreachable" else None
            url = databases.server.url(databases.name(f"f{i:04d}" if database else f"gone{i:04d}"))
        else:
            folder = "sqlite" if kind != "unreachable" else "no-such-directory"
            url = f"sqlite:///{tmp / folder / f'{name}.sqlite'}"
        labels = {
            "tier": "internal" if i < 20 else rng.choice(["standard"] * 4 + ["enterprise"]),
            "region": rng.choice(["eu", "us", "ap"]),
            "tenant": f"t{i:04d}",
        }
        tenants.append(Tenant(name, url, database, kind, revision, labels))
    return tenants


def make_targets(tenants: Sequence[Tenant], databases: Databases, tmp: Path) -> None:
    """Create every database and file, each with its version table stamped by SQL."""
    template = databases.create("fleet_template")
    with contextlib.closing(psycopg2.connect(template)) as conn, conn, conn.cursor() as cursor:
        cursor.execute(VERSION_TABLE)
    (tmp / "sqlite").mkdir()
    template_file = tmp / "template.sqlite"
    with contextlib.closing(sqlite3.connect(template_file)) as conn, conn:
        conn.execute(VERSION_TABLE)
    for tenant in tenants:
        if tenant.kind == "unreachable":
            continue
        if tenant.database:
            databases.copy(tenant.database, databases.name("fleet_template"), strategy="WAL_LOG")
        elif not tenant.postgres:
            shutil.copyfile(template_file, tenant.url.removeprefix("sqlite:///"))
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="bench-stamp") as pool:
        list(pool.map(_stamp, [t for t in tenants if t.kind != "unreachable"]))


def _stamp(tenant: Tenant) -> None:
    statement, args = (
        ("INSERT INTO alembic_version VALUES (%s)", (tenant.revision,))
        if tenant.revision
        else ("DROP TABLE alembic_version", ())
    )
    if tenant.postgres:
        with contextlib.closing(psycopg2.connect(tenant.url)) as conn, conn, conn.cursor() as cur:
            cur.execute(statement, args)
    else:
        path = tenant.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(statement.replace("%s", "?"), args)


def register(project: Project, tenants: Sequence[Tenant], *, start: int) -> None:
    """Register each tenant as an environment (saved one by one, audited, as the admin does)."""
    for position, tenant in enumerate(tenants, start=start):
        environment = Environment(
            project=project,
            name=tenant.name,
            slug=tenant.name,
            position=position,
            labels=tenant.labels,
        )
        environment.set_url(tenant.url)
        environment.save()


# --- the worker ------------------------------------------------------------------------------


@contextlib.contextmanager
def worker(log_path: Path, *, log: Callable[[str], None]) -> Iterator[None]:
    """A real `celery worker` with WORKER_PROCESSES processes on the bench's own queue, in a
    process group of its own (stopped whole); the queue is emptied afterwards."""
    broker_check()
    process = spawn_worker(log_path, concurrency=WORKER_PROCESSES)
    try:
        wait_ready([(process, log_path)])
        log(f"fleet: worker ready ({WORKER_PROCESSES} processes, broker {_broker()})")
        yield
    finally:
        stop(process)
        purge()


def spawn_worker(
    log_path: Path, *, concurrency: int, name: str = "", env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start `celery worker` on the bench's queue, in a process group of its own (`env`: more
    variables for it)."""
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with open(log_path, "w") as output:
        return subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "dashboard", "worker",
                "-Q", queue, f"--concurrency={concurrency}", "--pool=prefork", "--loglevel=INFO",
                "--without-heartbeat", "--without-gossip", "--without-mingle",
                "-n", f"{queue}{name}@%h",
            ],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_ready(workers: Sequence[tuple[subprocess.Popen, Path]], timeout: float = 90) -> None:
    """Until every worker's log says it is ready (or one died: a BenchSetupError)."""
    deadline = time.monotonic() + timeout
    while not all(" ready." in path.read_text() for _, path in workers):
        for process, path in workers:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchSetupError(f"a Celery worker did not start:\n{path.read_text()}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def broker_check() -> None:
    from dashboard.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
        raise BenchSetupError(
            f"the fleet section needs the Redis broker at {_broker()} (BENCH_BROKER_URL): {exc}"
        ) from exc


def purge() -> None:
    """Empty the bench's queue (reads a failed run left there)."""
    from dashboard.celery import app

    with contextlib.suppress(Exception), app.connection_for_write() as connection:
        connection.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def _broker() -> str:
    return settings.CELERY_BROKER_URL.split("@")[-1]


def refresh_all(project: Project, *, timeout: float = 180.0) -> float:
    """Seconds from the beat's tick until every environment's new read is stored. Each read
    is made due first (RETORT_REFRESH_SECONDS shortened for the tick; 1.1 s wait, untimed)."""
    time.sleep(1.1)
    states = CurrentState.objects.filter(environment__project=project)
    expected = Environment.objects.filter(project=project).count()
    with override_settings(RETORT_REFRESH_SECONDS=1.0):
        started = time.perf_counter()
        since = timezone.now()
        sent = read_requests.reads_send_due()
        if sent != expected:
            raise BenchSetupError(f"the tick sent {sent} reads, not {expected}")
        while states.filter(checked_at__gte=since).count() < expected:
            if time.perf_counter() - started > timeout:
                raise BenchSetupError(f"the worker did not read {expected} in {timeout:.0f} s")
            time.sleep(0.02)
        return time.perf_counter() - started


# --- the page --------------------------------------------------------------------------------


def _logged_in_client() -> Client:
    user, _ = get_user_model().objects.get_or_create(
        username=BENCH_USER, defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client()
    client.force_login(user)
    return client


def time_page(
    client: Client, url: str, *, count: int = 30, budget: float = 30.0
) -> tuple[Samples, str]:
    """The page's server time, and what it showed (cards, table rows, attention rows)."""

    def get() -> bytes:
        response = client.get(url)
        if response.status_code != 200 or b'data-testid="counts"' not in response.content:
            raise BenchSetupError(f"GET {url}: {response.status_code}, no counts on the page")
        return response.content

    page = get()  # warm-up: templates compiled, scripts indexed
    shown = {
        "cards": page.count(b'<article class="card'),
        "table rows": page.count(b'data-testid="environment-row"'),
        "attention rows": page.count(b'data-testid="attention-row"'),
    }
    said = ", ".join(f"{n} {what}" for what, n in shown.items() if n)
    return repeat(get, count=count, budget=budget), said


def time_poll(client: Client, *, count: int = 30, budget: float = 20.0) -> Samples:
    """The region's poll as htmx sends it, with the fingerprint the page shows (taken again if
    the page's minute of "3 minutes ago" turned between the page and its first poll)."""

    def poll_url() -> str:
        page = client.get(reverse("overview")).content.decode()
        match = re.search(r'<div id="projects" hx-get="([^"]+)"', page)
        if match is None:
            raise BenchSetupError("the overview has no live region")
        return html.unescape(match.group(1))

    def poll(url: str) -> int:
        return client.get(url, headers={"HX-Request": "true"}).status_code

    url = poll_url()
    if poll(url) != 204:
        url = poll_url()

    def unchanged() -> None:
        if (status := poll(url)) != 204:
            raise BenchSetupError(f"the unchanged overview's poll answered {status}")

    return repeat(unchanged, count=count, budget=budget)


def time_read_in_request(project: Project, *, count: int = 3, budget: float = 60.0) -> Samples:
    """The design before the workers: every environment read in the request, then the
    overview built from the reads."""
    environments = list(project.environments.select_related("project"))
    projects = Project.objects.prefetch_related("environments__project")

    def view() -> None:
        reads.environments_read(environments=environments)
        overviews.overview_build(projects=projects)

    return repeat(view, count=count, budget=budget)


# --- the user's alternative ------------------------------------------------------------------


_UNKNOWN = re.compile(r"FAILED: Can't locate revision identified by '[^']*'")


@dataclass(frozen=True)
class LoopRun:
    """`alembic current` over a sample of the fleet: the command, its time, and how many of
    the sample's readable databases it printed a revision for."""

    command: str
    samples: Samples
    databases: int
    printed: int
    readable: int


def alembic_loop(
    history: SyntheticHistory, tenants: Sequence[Tenant], tmp: Path, *, sample: int, width: int
) -> LoopRun:
    """`alembic current` for every `len(tenants) // sample`-th database (all kinds alike),
    `width` at a time; the command shown and its time (once: it is long)."""
    step = len(tenants) // sample
    # every step-th, one even and one odd in turn: PostgreSQL and SQLite half and half
    picked = [tenants[i * step + i % 2] for i in range(sample)]
    urls = tmp / f"urls-{width}.txt"
    urls.write_text("".join(f"{tenant.url}\n" for tenant in picked))
    alembic = Path(sys.executable).parent / "alembic"
    ini = history.alembic_ini
    if width == 1:
        command = (
            f'while read -r url; do DATABASE_URL="$url" {alembic} -c {ini} current; done < {urls}'
        )
    else:
        # `|| true`: alembic exits 255 on an unknown revision, which would stop xargs there
        command = (
            f"xargs -P {width} -I{{}} sh -c "
            f"'DATABASE_URL=\"$1\" {alembic} -c {ini} current || true' _ {{}} < {urls}"
        )
    # warm-up, untimed: the revision files' bytecode written once, as on a user's machine
    subprocess.run(
        [str(alembic), "-c", str(ini), "current"],
        cwd=ini.parent,
        env={**os.environ, "DATABASE_URL": picked[0].url},
        capture_output=True,
        check=False,
    )

    readable = sum(tenant.kind in {"at head", "behind"} for tenant in picked)
    counted: list[int] = []

    def run() -> None:
        with open(urls.with_suffix(".err"), "w") as errors:  # kept for a look
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=ini.parent,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                check=False,
            )
        # the revisions printed (the processes' lines may run together), not the quoted one
        # of an unknown revision's failure
        printed = _UNKNOWN.sub("", result.stdout)
        counted.append(len(re.findall(r"\b[0-9a-f]{12}\b", printed)))

    samples = repeat(run, count=1, budget=0)
    shown = command.replace(str(alembic), ".venv/bin/alembic").replace(str(tmp), "$TMP")
    return LoopRun(shown, samples, sample, counted[-1], readable)


# --- counting writes -------------------------------------------------------------------------

_COUNT_FUNCTION = """
CREATE FUNCTION bench_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO bench_rows SELECT TG_TABLE_NAME, TG_OP, count(*) FROM gone HAVING count(*) > 0;
    ELSE
        INSERT INTO bench_rows SELECT TG_TABLE_NAME, TG_OP, count(*) FROM came HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END $$
"""


@contextlib.contextmanager
def counting_rows() -> Iterator[dict[tuple[str, str], int]]:
    """Statement-level triggers on every table of the dashboard database count the rows each
    statement inserts, updates or deletes, whichever process writes them; yields a dict
    filled with the counts on exit, when the triggers are removed."""
    counted: dict[tuple[str, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
    triggers = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_rows (tbl text, op text, n bigint)")
            cursor.execute(_COUNT_FUNCTION)
            for table in tables:
                for operation, transition in (
                    ("INSERT", "NEW TABLE AS came"),
                    ("UPDATE", "NEW TABLE AS came"),
                    ("DELETE", "OLD TABLE AS gone"),
                ):
                    name = f"bench_count_{operation.lower()}"
                    cursor.execute(
                        f'CREATE TRIGGER {name} AFTER {operation} ON "{table}" '
                        f"REFERENCING {transition} FOR EACH STATEMENT "
                        "EXECUTE FUNCTION bench_count_rows()"
                    )
                    triggers.append((name, table))
        yield counted
        with connection.cursor() as cursor:
            cursor.execute("SELECT tbl, op, sum(n) FROM bench_rows GROUP BY tbl, op")
            counted.update({(table, op): int(n) for table, op, n in cursor.fetchall()})
    finally:
        with connection.cursor() as cursor:
            for name, table in triggers:
                cursor.execute(f'DROP TRIGGER {name} ON "{table}"')
            cursor.execute("DROP FUNCTION IF EXISTS bench_count_rows()")
            cursor.execute("DROP TABLE IF EXISTS bench_rows")
