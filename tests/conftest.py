"""Shared fixtures: real target databases (SQLite files, PostgreSQL databases made per test),
real alembic subprocesses, the sample project copied so a test may change it, named users."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psycopg2
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from environments import approvals, execution, planning
from environments.models import Environment, Job, Project
from examples.inventory import revisions as inv

pytest_plugins = ["tests.browser"]  # the Chromium fixtures, started only when a test asks

# Test databases are throwaway: let Django's flush (between transactional tests) empty the
# audit trail, which `manage.py flush` otherwise refuses.
os.environ.setdefault("RETORT_AUDIT_FLUSH_ALLOWED", "1")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "inventory"
PG_HOST = os.environ.get("RETORT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RETORT_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RETORT_TEST_PG_USER", "postgres")
ARTIFACTS = REPO / "test-artifacts"


def wait_for(condition: Callable[[], bool], *, seconds: float = 90.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass (for work a worker process does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


# --- alembic, for real ---------------------------------------------------------------------


def alembic(ini: Path, url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real alembic CLI against `url`, the way the project's env.py expects it."""
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *args],
        cwd=ini.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"alembic {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A private copy of the sample project; returns its alembic.ini."""
    target = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target / "alembic.ini"


def write_revision(
    versions: Path,
    revision: str,
    down_revision: str | tuple[str, ...] | None,
    *,
    message: str = "a change",
    body: str = "pass",
    branch_labels: tuple[str, ...] | None = None,
    depends_on: str | None = None,
) -> Path:
    """A revision file as `alembic revision` would write it."""
    path = versions / f"{revision}_change.py"
    path.write_text(
        f'"""{message}\n\nRevision ID: {revision}\nRevises: {down_revision}\n'
        f'Create Date: 2026-01-02 03:04:05.000000\n\n"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n\n"
        f"revision: str = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        f"branch_labels = {branch_labels!r}\n"
        f"depends_on = {depends_on!r}\n\n\n"
        f"def upgrade() -> None:\n    {body}\n\n\n"
        "def downgrade() -> None:\n    pass\n",
        encoding="utf-8",
    )
    return path


def three_heads_history(tmp_path: Path) -> Path:
    """Three concurrent heads, a merge of merges and a depends_on across branches."""
    root = tmp_path / "tri"
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    write_revision(versions, "a00000000000", None, message="base")
    write_revision(versions, "a10000000000", "a00000000000", message="trunk")
    write_revision(versions, "b10000000000", "a10000000000", message="left one")
    write_revision(
        versions, "c10000000000", "a10000000000", message="middle one", branch_labels=("middle",)
    )
    write_revision(versions, "d10000000000", "a10000000000", message="right one")
    write_revision(
        versions, "c20000000000", "c10000000000", message="middle two", depends_on="b10000000000"
    )
    write_revision(versions, "e10000000000", ("b10000000000", "c20000000000"), message="merge l+m")
    write_revision(
        versions, "f10000000000", ("e10000000000", "d10000000000"), message="merge of merges"
    )
    write_revision(versions, "h10000000000", "f10000000000", message="head one")
    write_revision(
        versions, "h20000000000", "f10000000000", message="head two", depends_on="h10000000000"
    )
    write_revision(versions, "h30000000000", "f10000000000", message="head three")
    return root / "alembic.ini"


# --- target databases ----------------------------------------------------------------------


def pg_url(
    name: str, *, user: str = PG_USER, password: str | None = None, port: int = PG_PORT
) -> str:
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{PG_HOST}:{port}/{name}"


def pg_admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    connection.autocommit = True
    return connection


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """Create fresh PostgreSQL databases for this test; each is dropped afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"retort_t_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(pg_admin()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return pg_url(name)

    yield make
    admin = pg_admin()
    try:
        with admin.cursor() as cursor:
            for name in created:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Callable[[str], str]:
    def make(name: str = "target") -> str:
        return f"sqlite:///{tmp_path / f'{name}.sqlite'}"

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def target_url(request, sqlite_url, pg_database) -> str:
    """One empty target database of each kind the product supports for real."""
    return sqlite_url() if request.param == "sqlite" else pg_database()


@pytest.fixture
def closed_port() -> int:
    """A TCP port on loopback with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    server.close()


# --- a PostgreSQL that checks passwords ----------------------------------------------------

PASSWORD_ROLE = "retort_pw_user"
PASSWORD = "C0rrect-Horse_Battery!"


@pytest.fixture(scope="session")
def password_postgres() -> Iterator[int]:
    """A throwaway PostgreSQL cluster with scram-sha-256 on TCP, so wrong passwords fail.

    The machine's own server trusts every local login; this one is started for the tests that
    need a real password check and removed afterwards.
    """
    bindir = _pg_bindir()
    # Outside pytest's private tmp folder: the server runs as the postgres user.
    base = Path(tempfile.mkdtemp(prefix="retort-pgpw-"))
    os.chmod(base, 0o777)
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD)
    os.chmod(pwfile, 0o644)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PASSWORD_ROLE,
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -k {base}",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield port
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries (initdb) are not installed")
    return found[-1].parent


# --- the registry and users ----------------------------------------------------------------


@pytest.fixture
def make_project(db) -> Callable[..., Project]:
    def make(ini: Path, environments: dict[str, str] | None = None, **fields) -> Project:
        name = fields.pop("name", "inventory")
        project = Project.objects.create(
            name=name, slug=fields.pop("slug", name), alembic_ini=str(ini), **fields
        )
        for position, (env_name, url) in enumerate((environments or {}).items()):
            environment = Environment(
                project=project, name=env_name, slug=env_name, position=position
            )
            environment.set_url(url)
            environment.save()
        return project

    return make


@pytest.fixture
def users(db) -> dict[str, object]:
    """Three named users: a release manager, a developer, a viewer."""
    made = {}
    for username, group in (("alice", "release_manager"), ("bob", "developer"), ("vera", "viewer")):
        user = get_user_model().objects.create_user(username, password="pw-" + username)
        user.groups.add(Group.objects.get_or_create(name=group)[0])
        made[username] = user
    return made


@pytest.fixture
def client_alice(client, users):
    client.force_login(users["alice"])
    return client


DEMO_TARGETS = ("dev", "staging", "prod")


@pytest.fixture(scope="session")
def demo_templates(tmp_path_factory) -> Path:
    """dev at head, staging 3 behind, prod 6 behind — built once by alembic, copied per test."""
    from examples.inventory import revisions

    folder = tmp_path_factory.mktemp("demo-templates")
    targets = (revisions.DEV_TARGET, revisions.STAGING_TARGET, revisions.PROD_TARGET)
    for name, target in zip(DEMO_TARGETS, targets, strict=True):
        alembic(
            EXAMPLE / "alembic.ini", f"sqlite:///{folder / f'{name}.sqlite'}", "upgrade", target
        )
    return folder


@pytest.fixture
def demo_project(inventory, make_project, demo_templates, tmp_path) -> Project:
    """The sample project registered with its three demo environments (private copies), each
    read once, as the workers would have by the time anyone opens a page."""
    from environments import reads

    urls = {}
    for name in DEMO_TARGETS:
        shutil.copy(demo_templates / f"{name}.sqlite", tmp_path / f"{name}.sqlite")
        urls[name] = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
    project = make_project(inventory, urls)
    reads.environments_read(environments=list(project.environments.select_related("project")))
    return project


# --- approvals: people, the demo's policy, jobs asked for ---------------------------------


@pytest.fixture
def people(users) -> dict[str, object]:
    """alice, carol, dave: release managers; bob: developer; vera: viewer; dan: may approve
    jobs (through a 'dba' group), but is not in prod's approver group."""
    made = dict(users)
    release = Group.objects.get(name="release_manager")
    for name in ("carol", "dave"):
        made[name] = get_user_model().objects.create_user(name, password="pw-" + name)
        made[name].groups.add(release)
    dba, _ = Group.objects.get_or_create(name="dba")
    dba.permissions.add(Permission.objects.get(codename="approve_job"))
    made["dan"] = get_user_model().objects.create_user("dan", password="pw-dan")
    made["dan"].groups.add(dba)
    return made


@pytest.fixture
def policed(demo_project: Project) -> Project:
    """The demo's policy: staging needs 1 approval, prod 2 from release managers, a backup,
    and only revisions staging holds."""
    release = Group.objects.get(name="release_manager")
    staging = demo_project.environments.get(slug="staging")
    staging.required_approvals = 1
    staging.approver_group = release
    staging.save()
    prod = demo_project.environments.get(slug="prod")
    prod.required_approvals = 2
    prod.approver_group = release
    prod.backup_required = True
    prod.promotion_from = staging
    prod.save()
    return demo_project


def read_all(project: Project) -> None:
    """Read every environment of `project` and store what was found, as the workers' scheduled
    read does (pages only show what was stored)."""
    from environments import reads

    reads.environments_read(environments=list(project.environments.select_related("project")))


def add_tenants(
    project: Project, templates: Path, folder: Path, numbers: range, *, missing=frozenset()
) -> None:
    """SQLite tenants t000, t001, …: at head, 3 behind and 6 behind in turn (copies of the
    demo's databases; those in `missing` have no file, so cannot be reached), labelled tier,
    region and tenant, registered at once and each read once."""
    rows = []
    for number in numbers:
        kind = DEMO_TARGETS[number % 3]
        path = folder / f"t{number:03}.sqlite"
        if number not in missing:
            shutil.copy(templates / f"{kind}.sqlite", path)
        environment = Environment(
            project=project,
            name=f"t{number:03}",
            slug=f"t{number:03}",
            position=number,
            labels={
                "tier": kind,
                "region": "eu" if number % 2 else "us",
                "tenant": f"acme{number:03}",
            },
        )
        environment.set_url(f"sqlite:///{path}")
        rows.append(environment)
    Environment.objects.bulk_create(rows)
    read_all(project)


@pytest.fixture
def saas(inventory, make_project, demo_templates, tmp_path) -> Callable[[int], Project]:
    """A project `saas` with `count` SQLite tenants from `add_tenants` (t000, t001, …)."""

    def make(count: int) -> Project:
        project = make_project(inventory, {}, name="saas")
        add_tenants(project, demo_templates, tmp_path, range(count))
        return project

    return make


@pytest.fixture
def unconsumed_queue(settings) -> Iterator[str]:
    """Messages for the workers go to a queue nobody reads: the test runs the tasks itself.
    The queue is emptied afterwards."""
    from dashboard.celery import app as celery_app

    queue = settings.CELERY_TASK_DEFAULT_QUEUE = f"retort-test-unconsumed-{uuid.uuid4().hex[:6]}"
    yield queue
    with contextlib.suppress(Exception), celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


def env(project: Project, slug: str) -> Environment:
    return Environment.objects.select_related("project").get(project=project, slug=slug)


def planned(
    environment: Environment, user, target: str = inv.STAGING_TARGET, kind: str = "upgrade"
) -> Job:
    """Plan a job, asking for its SQL, and render it (real `alembic --sql`, in this process)."""
    job = planning.job_request(
        environment=environment, kind=kind, target=target, user=user, sql=True
    )
    planning.job_preview_sql(job_id=job.pk)
    job.refresh_from_db()
    assert job.sql_status == "ready", job.sql_note
    return job


def requested(
    environment: Environment, user, target: str = inv.STAGING_TARGET, kind: str = "upgrade"
) -> Job:
    job = planned(environment, user, target, kind)
    return approvals.job_submit(job=job, user=user)


def approve(job: Job, user, *, comment: str = "", plan: str | None = None) -> Job:
    job = Job.objects.select_related("environment__project").get(pk=job.pk)
    return approvals.job_decide(
        job=job,
        user=user,
        decision="approve",
        plan_sha256=job.plan_sha256 if plan is None else plan,
        comment=comment,
    )


def drive(rollout, *, steps: int = 200):
    """Step a rollout's coordinator and run the jobs it queues in this process, one after
    another (what workers do), until nothing moves."""
    from environments import execution, rollout_coordinator
    from environments.models import Rollout, RolloutTarget

    for _ in range(steps):
        rollout = rollout_coordinator.rollout_advance(rollout_id=rollout.pk)
        queued = list(Job.objects.filter(rollout=rollout, status="queued").order_by("pk"))
        if not queued and rollout.status != Rollout.Status.RUNNING:
            return rollout
        if not queued and not rollout.targets.filter(state__in=RolloutTarget.OPEN).exists():
            continue
        for job in queued:
            execution.job_run(job_id=job.pk)
    return rollout


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- a real Celery worker ------------------------------------------------------------------


def dashboard_database_url() -> str:
    """The URL of the test run's dashboard database, for processes that must share it."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., str]]:
    """Start `celery worker` processes on a private queue; returns the queue name."""
    processes: list[subprocess.Popen] = []

    def start(
        broker_url: str | None = None,
        *,
        beat: bool = False,
        env: dict[str, str] | None = None,
        queue: str | None = None,
    ) -> str:
        from django.conf import settings

        queue = queue or f"retort-test-{uuid.uuid4().hex[:8]}"
        log_name = f"{queue}-{len(processes)}.log"  # each process its own (several share a queue)
        log = open(tmp_path / log_name, "w")  # noqa: SIM115 - closed with the process
        env = {
            **os.environ,
            "DATABASE_URL": dashboard_database_url(),
            "CELERY_BROKER_URL": broker_url or settings.CELERY_BROKER_URL,
            "RETORT_CELERY_QUEUE": queue,
            "RETORT_BACKUP_ROOT": str(settings.RETORT_BACKUP_ROOT),
            **(env or {}),
        }
        extra = ["-B", "--schedule", str(tmp_path / f"{queue}-beat")] if beat else []
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "worker",
                "-Q",
                queue,
                "--concurrency=1",
                "--pool=prefork",
                "--loglevel=INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"{queue}@%h",
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log_path = log.name  # type: ignore[attr-defined]
        processes.append(process)
        return queue

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- no test password in the audit trail ---------------------------------------------------

# Every password the suite uses, typed or stored. Each audit event written during the run is
# scanned for them when the run ends (per xdist worker); one found fails the run.
TEST_SECRETS = (
    "pw-alice",
    "pw-bob",
    "pw-vera",
    "retort-demo",
    PASSWORD,
    "not-alices-password",
    "Pr0d-Pa55word",  # tests/test_apply_config.py
    "N3w-Secret",
    "Zebra-Quartz-9137",  # tests/test_secrets.py
    "p@ss:w/rd%1",
    "p%40ss%3Aw%2Frd%251",
    "S3cret-pw",
    "Hunter2-secret",
    "Wr0ng-Pa55word%!",
    "s3cret",  # README.md's TOML example (tests/test_apply_config.py)
)


def secrets_in(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """`label: secret` for every (label, text) that contains one of the secrets."""
    return [
        f"{label}: {secret[:2]}…" for label, text in texts for secret in secrets if secret in text
    ]


@pytest.fixture(scope="session", autouse=True)
def audit_events_hold_no_test_password() -> Iterator[list[tuple[str, str]]]:
    from django.db.models.signals import post_save

    from environments.models import AuditEvent

    seen: list[tuple[str, str]] = []

    def remember(sender, instance, created, **kwargs) -> None:
        text = " ".join(str(getattr(instance, f.attname)) for f in AuditEvent._meta.fields)
        seen.append((f"event {instance.seq} ({instance.action})", text))

    post_save.connect(remember, sender=AuditEvent, dispatch_uid="test-secret-scan")
    yield seen
    post_save.disconnect(sender=AuditEvent, dispatch_uid="test-secret-scan")
    found = secrets_in(seen, TEST_SECRETS)
    ARTIFACTS.mkdir(exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (ARTIFACTS / f"audit-secret-scan-{worker}.txt").write_text(
        f"{len(seen)} audit events written in this run were scanned for "
        f"{len(TEST_SECRETS)} test passwords: {len(found)} found.\n" + "\n".join(found)
    )
    assert not found, f"test passwords appear in audit events: {found}"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Real hashing costs about a second per user on this machine; tests need none of it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _private_backup_root(settings, tmp_path_factory) -> None:
    """Backups of a test go to a folder of its own, never the developer's var/backups."""
    settings.RETORT_BACKUP_ROOT = tmp_path_factory.mktemp("backups")


@pytest.fixture(autouse=True)
def _private_audit_head(settings, tmp_path_factory) -> None:
    """Each test's audit chain is its own: so is the head its verifications write outside."""
    settings.RETORT_AUDIT_HEAD_FILE = tmp_path_factory.mktemp("audit") / "audit-head.json"


# --- a shop with an `orders` table (safe runs on PostgreSQL) ------------------------------


@pytest.fixture
def orders_project(tmp_path, make_project, pg_database, sqlite_url, unconsumed_queue):
    """r1 makes `orders`; r2 adds a column to it; r3 asks for a longer statement_timeout."""
    root = tmp_path / "shop"
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(EXAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")
    write_revision(
        versions,
        "r1",
        None,
        message="orders",
        body='op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))',
    )
    write_revision(
        versions,
        "r2",
        "r1",
        message="orders get a note",
        body='op.add_column("orders", sa.Column("note", sa.String(100)))',
    )
    r3 = write_revision(versions, "r3", "r2", message="a slow index", body="pass")
    r3.write_text(r3.read_text() + '\nretort_statement_timeout = "2h"  # the index takes long\n')
    project = make_project(
        root / "alembic.ini", {"prod": pg_database(), "dev": sqlite_url("dev.db")}, name="shop"
    )
    return project


def orders_prod(project) -> Environment:
    return Environment.objects.select_related("project").get(project=project, slug="prod")


def at_r1(environment: Environment, user) -> None:
    job = requested(environment, user, target="r1")
    execution.job_run(job_id=job.pk)
    assert Job.objects.get(pk=job.pk).status == "succeeded"


@pytest.fixture
def index_on_orders(orders_project):
    """r2 builds an index on `orders` without CONCURRENTLY, and one more in raw SQL."""
    r2 = next((Path(orders_project.alembic_ini).parent / "migrations/versions").glob("r2_*"))
    r2.write_text(
        r2.read_text().replace(
            '    op.add_column("orders", sa.Column("note", sa.String(100)))',
            '    op.add_column("orders", sa.Column("note", sa.String(100)))\n'
            '    op.create_index("ix_orders_note", "orders", ["note"])\n'
            '    op.execute("ALTER TABLE orders ADD CONSTRAINT ck_orders_id CHECK (id > 0)")',
        )
    )
    return orders_project
