"""Figure 11: 200 small PostgreSQL tenants upgraded to head by a rollout with 1, 2 and 4 Celery
worker processes, against the loops people write instead — `alembic upgrade head` per database
one after another, and the same loop 8 wide with `xargs -P 8` — in one run.

Every run starts from the same state: each tenant is a fresh copy of an empty template
database (`CREATE DATABASE … TEMPLATE`), written out (a checkpoint and a sync) before the
clock starts, and the history is small (four revisions: two tables,
a column, an index). A rollout is timed from its submit to its end (every target's job ran and
the coordinator closed the last wave); its planning (every tenant read, the plan's SQL rendered)
is timed apart. Each worker process is `celery worker --concurrency=1`, so N processes run at
most N migrations at once; the rollout's one wave allows 16. Afterwards every tenant's version
table is read directly, not through Retort. One more rollout by 4 worker processes runs with
RETORT_WARM_ALEMBIC=false (a new interpreter per alembic run, as the loops start one), to show
what the warm parent is worth.

Imported only after django.setup().
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from django.contrib.auth import get_user_model

from bench.fleet import broker_check, purge, spawn_worker, stop, wait_ready
from bench.postgres import BenchSetupError, Databases
from environments import rollout_plans, rollouts
from environments.models import Environment, Project, Rollout
from environments.rollout_specs import wave_parse

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "inventory"
TENANTS = 200
WORKERS = (1, 2, 4)
XARGS_WIDTH = 8
PARALLEL = 16
HEAD = "r4"
BENCH_USER = "bench-rollout"

REVISIONS = [
    ("r1", None, 'op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True), '
     'sa.Column("name", sa.String(100)))'),
    ("r2", "r1", 'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True), '
     'sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")))'),
    ("r3", "r2", 'op.add_column("accounts", sa.Column("email", sa.String(200)))'),
    ("r4", "r3", 'op.create_index("ix_invoices_account", "invoices", ["account_id"])'),
]  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One way of bringing the 200 to head: how long it took, and how many ended at head."""

    label: str
    seconds: float
    at_head: int
    command: str = ""
    planning: float | None = None  # a rollout's planning, before its run

    @property
    def per_minute(self) -> float:
        return TENANTS / self.seconds * 60


@dataclass
class RolloutFigures:
    loop: Run | None = None
    xargs: Run | None = None
    rollouts: dict[int, Run] = field(default_factory=dict)
    cold: Run | None = None  # 4 worker processes, RETORT_WARM_ALEMBIC=false
    cores: int = os.cpu_count() or 1


def measure(
    databases: Databases, tmp: Path, *, log: Callable[[str], None] = print
) -> RolloutFigures:
    broker_check()
    tmp.mkdir(parents=True, exist_ok=True)
    ini = _project_files(tmp / "saas")
    template = databases.create("rollout_template")
    template_name = template.rsplit("/", 1)[1]
    names = [f"rollout_t{number:03}" for number in range(TENANTS)]
    urls = [databases.server.url(databases.name(name)) for name in names]
    figures = RolloutFigures()

    def fresh() -> None:
        existing = [
            databases.name(name) for name in names if databases.name(name) in databases.created
        ]
        databases.drop(*existing)
        for name in names:
            databases.copy(name, template_name, strategy="WAL_LOG")
        settle(databases)

    fresh()
    _warm(ini, urls[0])
    fresh()
    log(f"rollout: {TENANTS} tenants; a sequential `alembic upgrade head` loop")
    figures.loop = _loop(ini, urls, tmp, width=1)
    fresh()
    log(f"rollout: the same loop {XARGS_WIDTH} wide (xargs -P {XARGS_WIDTH})")
    figures.xargs = _loop(ini, urls, tmp, width=XARGS_WIDTH)
    project = _register(ini, urls)
    for count in WORKERS:
        fresh()
        log(f"rollout: a rollout by {count} worker process{'es' if count != 1 else ''}")
        with _workers(count, tmp, log=log):
            figures.rollouts[count] = _rollout(project, urls, count)
    fresh()
    count = WORKERS[-1]
    log(f"rollout: a rollout by {count} worker processes, each alembic run started cold")
    with _workers(count, tmp, log=log, env={"RETORT_WARM_ALEMBIC": "false"}):
        figures.cold = _rollout(project, urls, count, cold=True)
    return figures


def settle(databases: Databases) -> None:
    """Untimed: what making 200 databases left to write is written (a checkpoint, then the
    kernel's dirty pages), so no run pays for the copies made before it."""
    with contextlib.suppress(psycopg2.Error), databases.server.admin() as cursor:
        cursor.execute("CHECKPOINT")  # a superuser's (or pg_checkpoint's) right
    os.sync()
    time.sleep(2)


def _project_files(root: Path) -> Path:
    """The sample's alembic.ini and env.py with a small history of its own."""
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")
    for revision, down, body in REVISIONS:
        (versions / f"{revision}.py").write_text(
            f'"""{revision}\n\nRevision ID: {revision}\nRevises: {down}\n"""\n'
            "from alembic import op\nimport sqlalchemy as sa\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    {body}\n\n\ndef downgrade() -> None:\n    pass\n"
        )
    return root / "alembic.ini"


def _alembic() -> Path:
    return Path(sys.executable).parent / "alembic"


def _warm(ini: Path, url: str) -> None:
    """Untimed: the revision files' bytecode written once, as on a user's machine."""
    subprocess.run(
        [str(_alembic()), "-c", str(ini), "upgrade", "head"],
        cwd=ini.parent,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        check=True,
    )


def _loop(ini: Path, urls: list[str], tmp: Path, *, width: int) -> Run:
    listing = tmp / "urls.txt"
    listing.write_text("".join(f"{url}\n" for url in urls))
    alembic = _alembic()
    if width == 1:
        command = (
            f'while read -r url; do DATABASE_URL="$url" {alembic} -c {ini} upgrade head; '
            f"done < {listing}"
        )
    else:
        command = (
            f"xargs -P {width} -I{{}} sh -c 'DATABASE_URL=\"$1\" {alembic} -c {ini} upgrade head' "
            f"_ {{}} < {listing}"
        )
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", command], cwd=ini.parent, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise BenchSetupError(f"the loop failed: {result.stderr[-2000:]}")
    shown = command.replace(str(alembic), ".venv/bin/alembic").replace(str(tmp), "$TMP")
    label = "sequential loop" if width == 1 else f"xargs -P {width}"
    return Run(label, seconds, _at_head(urls), shown)


def _at_head(urls: list[str]) -> int:
    """How many tenants' version tables say head, read directly."""
    count = 0
    for url in urls:
        with contextlib.closing(psycopg2.connect(url)) as db, db.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            count += [row[0] for row in cursor.fetchall()] == [HEAD]
    return count


def _register(ini: Path, urls: list[str]) -> Project:
    project = Project.objects.create(
        name="bench-rollout", slug="bench-rollout", alembic_ini=str(ini)
    )
    rows = []
    for number, url in enumerate(urls):
        environment = Environment(
            project=project,
            name=f"tenant-{number:03}",
            slug=f"tenant-{number:03}",
            position=number,
            labels={"tier": "tenant"},
            backup_before_jobs=False,
        )
        environment.set_url(url)
        rows.append(environment)
    Environment.objects.bulk_create(rows)
    return project


@contextlib.contextmanager
def _workers(
    count: int, tmp: Path, *, log: Callable[[str], None], env: dict[str, str] | None = None
) -> Iterator[None]:
    """`count` worker processes (`--concurrency=1` each) on the bench's queue."""
    started = []
    try:
        for number in range(count):
            path = tmp / f"worker-{count}-{number}{'-cold' if env else ''}.log"
            worker = spawn_worker(path, concurrency=1, name=f"-{number}", env=env)
            started.append((worker, path))
        wait_ready(started)
        log(f"rollout: {count} worker process{'es' if count != 1 else ''} ready")
        yield
    finally:
        for process, _ in started:
            stop(process)
        purge()


def _rollout(project: Project, urls: list[str], count: int, *, cold: bool = False) -> Run:
    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER, is_superuser=True)
    asked = time.monotonic()
    rollout = rollout_plans.rollout_request(
        project=project,
        target="heads",
        user=user,
        waves=[wave_parse(f"all: parallel={PARALLEL}")],
        take_backup=False,
    )
    rollout = _until(rollout, lambda r: r.status != Rollout.Status.PLANNING, 300)
    if rollout.status != Rollout.Status.PLANNED:
        raise BenchSetupError(f"the rollout was not planned: {rollout.note}")
    planning = time.monotonic() - asked
    started = time.monotonic()
    rollout = rollouts.rollout_submit(rollout=rollout, user=user)
    rollout = _until(rollout, lambda r: r.status in (*Rollout.FINISHED, "stopped"), 1800)
    seconds = time.monotonic() - started
    if rollout.status != Rollout.Status.COMPLETED:
        raise BenchSetupError(f"the rollout ended {rollout.status}: {rollout.note}")
    label = f"rollout, {count} worker process{'es' if count != 1 else ''}"
    label += ", alembic started cold (RETORT_WARM_ALEMBIC=false)" if cold else ""
    return Run(label, seconds, _at_head(urls), planning=planning)


def _until(rollout: Rollout, done: Callable[[Rollout], bool], timeout: float) -> Rollout:
    deadline = time.monotonic() + timeout
    while True:
        rollout.refresh_from_db()
        if done(rollout) or time.monotonic() > deadline:
            return rollout
        time.sleep(0.05)
