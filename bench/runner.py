"""Run every benchmark once and write bench/RESULTS.md.

The dashboard database and the PostgreSQL targets are throwaway databases created here on the
server that DATABASE_URL names (its own database is never opened) and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psycopg2

from bench import graph_layout, scripts_read
from bench.postgres import BenchSetupError, Databases, Server
from bench.report import Figure, Report, command_line, machine_facts, render, write
from bench.stats import Samples, ms
from examples.synthetic import SyntheticHistory, write_history

if TYPE_CHECKING:
    from bench.audit import AuditFigures, ExportRun
    from bench.jobs import JobFigures, Template
    from bench.overview import OverviewRun, Parts
    from environments.models import Project

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
REVISIONS = 2000
HISTORY_SHAPE = {"seed": 2, "branch_every": 40, "depends_on_every": 50}
ENVIRONMENTS = 20
MAX_BEHIND = 200
COLD_AIM = 10.0  # Retort's cold read at least this many times faster than Alembic's
SILENT_GRACE = 0.5  # seconds over the connect timeout
SILENT = 16  # silent databases ahead of the healthy ones: RETORT_READ_WORKERS by default


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        choices=[
            "reads",
            "growth",
            "jobs",
            "rehearsals",
            "overview",
            "drift",
            "load",
            "fleet",
            "rollout",
        ],
        help="run only this section and print its figures; bench/RESULTS.md is left alone",
    )
    only = parser.parse_args(argv).only
    started = time.monotonic()
    sys.dont_write_bytecode = True
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server = Server.from_url(os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL)
        report = Report(command_line(), datetime.now(UTC), machine_facts(server.version()))
    except (BenchSetupError, psycopg2.Error) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    databases = Databases(server, f"retort_bench_{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="retort-bench-") as tmp:
        try:
            if only == "reads":
                measure_reads(
                    report, write_history(Path(tmp) / "history", REVISIONS, **HISTORY_SHAPE)
                )
            elif only == "jobs":
                setup_django(databases.create(), Path(tmp))
                measure_jobs(report, databases, Path(tmp))
            elif only == "growth":
                setup_django(databases.create(), Path(tmp))
                measure_growth(report, Path(tmp))
            elif only == "rehearsals":
                setup_django(databases.create(), Path(tmp))
                measure_rehearsals(report, databases, Path(tmp))
            elif only == "drift":
                setup_django(databases.create(), Path(tmp))
                measure_drift(report, databases)
            elif only == "load":
                measure_load(report, databases, Path(tmp))
            elif only == "fleet":
                setup_django(databases.create(), Path(tmp))
                measure_fleet(report, databases, Path(tmp))
            elif only == "rollout":
                setup_django(databases.create(), Path(tmp))
                measure_rollout(report, databases, Path(tmp))
            elif only == "overview":
                history = write_history(Path(tmp) / "history", REVISIONS, **HISTORY_SHAPE)
                setup_django(databases.create(), Path(tmp))
                measure_overviews(report, history, databases, Path(tmp))
            else:
                run(report, databases, Path(tmp))
        finally:
            _close_django()
            log(f"dropped databases: {', '.join(databases.drop_all()) or 'none'}")
    report.add(*memory_figures())
    report.duration = time.monotonic() - started
    if only:
        print(render(report))
        log(f"--only {only}: printed, bench/RESULTS.md left alone ({report.duration:.1f} s)")
        return 0
    log(f"wrote {write(report)} in {report.duration:.1f} s")
    return 0


def run(report: Report, databases: Databases, tmp: Path) -> None:
    history = write_history(tmp / "history", REVISIONS, **HISTORY_SHAPE)
    report.notes.append(describe_history(history))
    measure_reads(report, history)
    measure_graph(report, history)
    setup_django(databases.create(), tmp)
    measure_fleet(report, databases, tmp)  # first: its overview is of the fleet alone
    measure_growth(report, tmp)  # its projects are gone once measured
    project = measure_overviews(report, history, databases, tmp)
    measure_audit(report, history, project)
    measure_drift(report, databases)
    measure_load(report, databases, tmp)
    measure_rollout(report, databases, tmp)  # after every overview: its 200 tenants stay
    # Last: its project's environments point at databases dropped once measured, which an
    # overview after it would try to read. The rehearsals reuse its target.
    jobs = measure_jobs(report, databases, tmp)
    measure_rehearsals(report, databases, tmp, template=jobs.template)


def measure_reads(report: Report, history: SyntheticHistory) -> None:
    log(f"1/3 cold and warm reads of {REVISIONS} revisions")
    versions = history.directory / "migrations" / "versions"
    reads = scripts_read.measure(history.alembic_ini, versions)
    report.add(*read_figures(reads))
    report.notes.extend(read_notes(reads.caches))


GRAPH_AIM = 0.300  # seconds: layout plus SVG of the 2,000-revision graph, warm


def measure_graph(report: Report, history: SyntheticHistory) -> None:
    log(f"graph: layout and SVG of {REVISIONS} revisions, and `alembic history`")
    figures = graph_layout.measure(history)
    ratio = figures.history_inprocess.median / figures.folded.median
    report.add(
        Figure(
            "5a. Graph layout + SVG, warm, folded (the page's default)",
            f"{_spread(figures.folded)}; {figures.folded_nodes} nodes drawn of {REVISIONS}",
            f"median ≤ {ms(GRAPH_AIM)}",
            figures.folded.median <= GRAPH_AIM,
        ),
        Figure(
            "5b. Graph layout + SVG, warm, nothing folded",
            _spread(figures.unfolded),
            f"median ≤ {ms(GRAPH_AIM)}",
            figures.unfolded.median <= GRAPH_AIM,
        ),
        Figure(
            "5c. SVG size (the bulk of the graph page)",
            f"folded {figures.folded_bytes / 1024:.0f} KiB, "
            f"unfolded {figures.unfolded_bytes / 1024:.0f} KiB",
        ),
        Figure(
            "5d. Baseline: `alembic history`, in process (`command.history`, no bytecode)",
            _spread(figures.history_inprocess),
        ),
        Figure(
            "5e. Baseline: `python -m alembic history`, whole CLI process",
            _spread(figures.history_cli),
        ),
        Figure(
            "5f. `alembic history` (in process) ÷ Retort's warm layout + SVG",
            f"{ratio:.1f}×",
        ),
    )
    report.notes.append(
        "Graph: markers at the head, 30 and 200 revisions back; prod (200 behind) selected, so "
        "its 200 pending revisions stay unfolded. Findings for the ⚠ marks are computed once "
        "before timing, as the page caches them per file. `alembic history` runs with its "
        "`__pycache__` deleted first, as a first call in a new process would."
    )


def measure_overviews(
    report: Report, history: SyntheticHistory, databases: Databases, tmp: Path
) -> Project:
    from django.conf import settings

    from bench import overview  # needs django.setup()

    targets = overview.plan_targets(
        history, sqlite_dir=tmp, make_pg_url=databases.create, max_behind=MAX_BEHIND
    )
    log(f"stamping {len(targets)} environments with the alembic CLI")
    stamp_started = time.monotonic()
    at_once = overview.stamp_all(history.alembic_ini, targets)
    stamping = f"{time.monotonic() - stamp_started:.1f} s, {at_once} at a time"
    project = overview.register(history.alembic_ini, targets)

    log("2/3 warm overview")
    first, warm = overview.measure_warm()
    parts = overview.measure_parts(project)
    report.add(*overview_figures(first, warm, parts))
    report.notes.append(overview_note(warm, stamping))

    timeout = float(settings.RETORT_CONNECT_TIMEOUT)
    log("3/3 overview with a database that never answers")
    silent = overview.measure_silent(project)
    report.add(silent_figure(silent, timeout))
    report.notes.append(silent_note(timeout))
    return project


AUDIT_EVENTS = 100_000
AUDIT_WRITERS = 1  # threads appending, each with its own connection


def measure_audit(report: Report, history: SyntheticHistory, project: Project) -> None:
    from bench import audit  # needs django.setup()

    log(f"audit: append {AUDIT_EVENTS:,} events, verify the chain, export it as CSV and JSONL")
    figures = audit.measure(project, history.revisions, count=AUDIT_EVENTS, writers=AUDIT_WRITERS)
    report.add(*audit_figures(figures))
    report.notes.append(audit_note(figures))


DRIFT_AIM = 2.0  # seconds: two PostgreSQL databases of 500 tables, read and compared


def measure_drift(report: Report, databases: Databases) -> None:
    from bench import drift  # needs django.setup() (the schema reader reads settings)

    log(f"drift: two PostgreSQL databases of {drift.TABLES} tables, reflected and compared")
    figures = drift.measure(databases)
    ratio = figures.reflect_baseline.median / figures.compare.median
    report.add(
        Figure(
            f"8a. Drift: read and compare two PostgreSQL databases of {figures.tables} tables",
            _spread(figures.compare),
            f"median ≤ {ms(DRIFT_AIM)}",
            figures.compare.median <= DRIFT_AIM,
        ),
        Figure(
            "8b. Baseline: SQLAlchemy `MetaData.reflect()` of the same two databases",
            _spread(figures.reflect_baseline),
        ),
        Figure("8c. `MetaData.reflect()` ÷ Retort's read and compare", f"{ratio:.1f}×"),
        Figure(
            "8d. Peak traced Python memory during one read and compare",
            f"{figures.peak_bytes / 2**20:.1f} MiB",
        ),
    )
    report.notes.append(
        f"Drift: {figures.tables} tables per database with {figures.objects:,} columns, "
        "indexes and constraints (unique, check, foreign keys), built twice from one seed, so "
        f"the comparison found {figures.differences} differences; both databases are read at "
        "once, in two threads, as the drift page and `drift_check` do."
    )


def measure_load(report: Report, databases: Databases, tmp: Path) -> None:
    from bench import load

    figures = load.measure(databases.create("load"), tmp / "load", log=log)
    errors = sum(figures.errors.values())
    report.add(
        Figure(
            f"9a. Load: gunicorn ({figures.workers} sync workers), {figures.clients} clients on "
            f"the overview for {figures.seconds:.0f} s — errors",
            f"{errors} of {figures.requests} requests"
            + (f" ({', '.join(f'{k}: {v}' for k, v in figures.errors.items())})" if errors else ""),
            "0",
            errors == 0,
        ),
        Figure(
            "9b. Load: the overview's latency under it",
            f"p50 {ms(figures.median)}, p95 {ms(figures.percentile(0.95))}, "
            f"max {ms(figures.percentile(1.0))}; {figures.requests / figures.seconds:.1f} req/s",
        ),
        Figure(
            "9c. Load: most connections to the dashboard database at once",
            f"{figures.peak_connections} (the server allows {figures.max_connections})",
        ),
    )
    report.notes.append(
        "Load: a fresh PostgreSQL dashboard database seeded with the demo (three SQLite "
        "environments), gunicorn as docker-compose.yml runs it (RETORT_DB_CONN_MAX_AGE=60), "
        f"{figures.clients} threads on loopback, each logged in with a session of its own, "
        "loading the overview one request after another; connections sampled every 0.5 s from "
        "pg_stat_activity. The overview renders the states `seed_demo` stored; no request reads "
        "a target database."
    )


def measure_fleet(report: Report, databases: Databases, tmp: Path) -> None:
    from bench import fleet  # needs django.setup()
    from bench.fleet_figures import fleet_figures, fleet_note

    figures = fleet.measure(databases, tmp / "fleet", log=log)
    report.add(*fleet_figures(figures))
    report.notes.append(fleet_note(figures))


JOB_AIM = 1.10  # Retort's backup-then-upgrade job ÷ pg_dump then alembic upgrade head, direct


def measure_rollout(report: Report, databases: Databases, tmp: Path) -> None:
    from bench import rollout  # needs django.setup()
    from bench.rollout_figures import rollout_figures, rollout_note

    figures = rollout.measure(databases, tmp / "rollout", log=log)
    report.add(*rollout_figures(figures))
    report.notes.append(rollout_note(figures))


def measure_jobs(report: Report, databases: Databases, tmp: Path) -> JobFigures:
    from bench import jobs  # needs django.setup()

    log("jobs: backup-then-upgrade on a 100+ MB PostgreSQL database vs pg_dump + alembic")
    _children_before_jobs.append(_children_maxrss())
    figures = jobs.measure(databases, tmp / "jobs", log=log)
    report.add(*job_figures(figures))
    report.notes.append(jobs_note(figures))
    return figures


def measure_growth(report: Report, tmp: Path) -> None:
    from bench import growth  # needs django.setup()

    log("growth: histories of 1,000 to 20,000 revisions, 5 % labelled; pages over HTTP")
    figures = growth.measure(tmp / "growth", log=log)
    log("growth: the CI gate against `alembic current`")
    figures.gate = growth.measure_gate(tmp)
    report.add(*growth.figures(figures))
    report.notes.append(growth.note(figures))


def measure_rehearsals(
    report: Report, databases: Databases, tmp: Path, template: Template | None = None
) -> None:
    from bench import rehearse  # needs django.setup()

    log("rehearsals: a plan rehearsed on a copy vs createdb + pg_restore + alembic + dropdb")
    figures = rehearse.measure(databases, tmp / "rehearsals", template=template, log=log)
    report.add(*rehearse.figures(figures))
    report.notes.append(rehearse.note(figures))


# --- setup -----------------------------------------------------------------------------------


def setup_django(dashboard_url: str, tmp: Path) -> None:
    """Point Django at the throwaway dashboard database before it reads its settings."""
    os.environ["DATABASE_URL"] = dashboard_url
    os.environ["RETORT_DATA_DIR"] = str(tmp / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    # the fleet's worker and this process share a Redis broker, on a queue of their own
    os.environ["CELERY_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ["RETORT_CELERY_QUEUE"] = f"retort-bench-{os.getpid()}"
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    expected = dashboard_url.rsplit("/", 1)[1]
    if settings.DATABASES["default"]["NAME"] != expected:
        raise BenchSetupError("Django is not using the benchmark's own dashboard database")
    call_command("migrate", interactive=False, verbosity=0)


def _close_django() -> None:
    """Close the dashboard's connections so its database can be dropped."""
    if "django" not in sys.modules:
        return
    from django.apps import apps

    if apps.ready:
        from django.db import connections

        connections.close_all()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    log(f"{signal.Signals(signum).name}: stopping, dropping the databases")
    raise SystemExit(128 + signum)  # unwinds through the `finally` that drops the databases


# --- figures ---------------------------------------------------------------------------------


def _spread(samples: Samples) -> str:
    return f"median {ms(samples.median)}, min {ms(samples.minimum)} (n={samples.count})"


def read_figures(reads: scripts_read.ReadFigures) -> list[Figure]:
    ratio = reads.alembic_cold.median / reads.retort_cold.median
    ratio_min = reads.alembic_cold.minimum / reads.retort_cold.minimum
    cached_ratio = reads.alembic_bytecode.median / reads.retort_cold.median
    return [
        Figure(
            "1a. Cold read, Retort `load_index` (caches emptied; the index alone, no file "
            "compiled)",
            _spread(reads.retort_cold),
        ),
        Figure(
            "1b. Cold read, Alembic `walk_revisions()` (fresh ScriptDirectory, no bytecode)",
            _spread(reads.alembic_cold),
        ),
        Figure(
            "1c. Cold read: Alembic ÷ Retort",
            f"{ratio:.2f}× (medians), {ratio_min:.2f}× (mins)",
            f"≥ {COLD_AIM:g}×",
            ratio >= COLD_AIM,
        ),
        Figure(
            "1d. Alembic with its `__pycache__` reused (best case, for comparison)",
            f"{_spread(reads.alembic_bytecode)}; {cached_ratio:.2f}× Retort's cold median",
        ),
        Figure(
            "1e. Warm read, Retort (unchanged directory: fingerprint only)",
            _spread(reads.retort_warm),
        ),
        Figure(
            "1f. Cold read as the overview needs it: the index and its syntax check (every file "
            "compiled), caches emptied",
            _spread(reads.problems_first),
        ),
        Figure(
            "1g. Part of both: the revision map alone, from the same 2,000 headers — Alembic's "
            "`RevisionMap` vs Retort's `LinearRevisionMap` (Alembic's code, linear-time steps)",
            f"stock {_spread(reads.map_stock)}; linear {_spread(reads.map_linear)}; "
            f"{reads.map_stock.median / reads.map_linear.median:.1f}× faster",
        ),
    ]


def read_notes(caches: tuple[str, ...]) -> list[str]:
    names = ", ".join(f"`{name}`" for name in caches)
    cold = (
        "Cold reads: before each timed call `gc.collect()` runs (untimed) and every "
        f"module-level cache of Retort's reader ({names}) is emptied; Alembic gets "
        "a fresh `ScriptDirectory.from_config(Config(ini))` and its `walk_revisions()` iterator "
        "is consumed. The two alternate (the order flips every round), after one untimed call "
        "of each, which imports what the revision files import and checks both see the same "
        "revisions."
    )
    bytecode = (
        "Bytecode: the bench process sets `sys.dont_write_bytecode = True` and deletes "
        "`versions/__pycache__` before every Alembic call, so Alembic compiles every revision "
        "file each time, as a process does the first time it reads a directory. Figure 1d shows "
        "Alembic's best case with `__pycache__` written once and reused; Retort never reads "
        "bytecode. The files sit in the OS page cache throughout (they were just written), for "
        "both readers."
    )
    warm = (
        "Warm read: `load_index(config_from_ini(ini))` on the unchanged directory, which lists "
        "the version directory and stats every file to compare the fingerprint; it must return "
        "the cached index (checked). 1f: `load_index` as the pages call it and `problems`, "
        "with every cache emptied first (the syntax verdicts included), three times."
    )
    return [cold, bytecode, warm]


def overview_figures(first: float, warm: OverviewRun, parts: Parts) -> list[Figure]:
    median, p95 = warm.samples.median, warm.samples.p95
    failures = _failures(warm)
    return [
        Figure(
            f"2a. A worker's batch, {ENVIRONMENTS} environments: all read and stored, then the "
            "overview built from what was stored (`overview_build(refresh=True)`, as "
            "`migration_status` does; a page no longer reads: its time is 10a)",
            f"median {ms(median)}, p95 {ms(p95)}, min {ms(warm.samples.minimum)} "
            f"(n={warm.samples.count})",
            "every environment read",
            not failures,
            f"{failures} environment(s) could not be read" if failures else "",
        ),
        Figure(
            "2b. First overview from cold: reader caches emptied, nothing read before "
            "(the warm-up call, not in 2a)",
            ms(first),
        ),
        Figure("2c. What the overview read", _statuses(warm)),
        Figure(
            "2d. Part of 2a: one warm index check, `Project.load_scripts()`",
            _spread(parts.index_check),
        ),
        Figure(
            f"2e. Part of 2a: `environments_read()` of the {ENVIRONMENTS} (its index check, "
            "the parallel reads, the state update)",
            _spread(parts.environments_read),
        ),
    ]


def overview_note(warm: OverviewRun, stamping: str) -> str:

    return (
        f"Overview: one project (the {REVISIONS}-revision history) with {ENVIRONMENTS} "
        f"environments, alternately SQLite files and PostgreSQL databases, each stamped by "
        f"`python -m alembic -c alembic.ini stamp <rev>` (DATABASE_URL in its environment) at a "
        f"revision from the head back to {MAX_BEHIND} created before it, so "
        f"{min(warm.pending)}–{max(warm.pending)} revisions pending (stamping took "
        f"{stamping}). Each timed call is "
        '`overview_build(projects=Project.objects.prefetch_related("environments__project"))` '
        "with a fresh queryset: the registry query, the script index check, the parallel reads "
        "and the state updates in the dashboard database (PostgreSQL). Each read opens its own "
        "connection and closes it, as the workers' do (nothing read is cached): 2a once had "
        "an aim of 100 ms, when it was the overview page's time and a keep-alive cache held "
        "the connections open between views; the pages no longer read (they render what the "
        "workers stored, 10a), and the cache is gone, so each batch pays its connections."
    )


def silent_figure(silent: OverviewRun, timeout: float) -> Figure:
    # the silent ones fill every read slot for one timeout; the healthy ones follow
    limit = 2 * (timeout + SILENT_GRACE)
    samples = silent.samples
    unreachable = silent.statuses.get("unreachable", 0)
    met = samples.maximum <= limit and unreachable == SILENT and _failures(silent) == SILENT
    return Figure(
        f"3. Overview, {ENVIRONMENTS} environments behind {SILENT} that accept TCP and never "
        "answer (placed first: they take every read slot)",
        f"max {samples.maximum:.2f} s, median {samples.median:.2f} s (n={samples.count}); "
        f"{_statuses(silent)}",
        f"max ≤ {limit:g} s (2 × (RETORT_CONNECT_TIMEOUT {timeout:g} s + {SILENT_GRACE:g} s)); "
        f"only the {SILENT} silent ones unreachable",
        met,
    )


def silent_note(timeout: float) -> str:
    return (
        "Silent databases: a socket server on 127.0.0.1 that accepts and never replies; "
        f"{SILENT} environments with a postgresql:// URL pointing at it are added for figure 3 "
        "before every healthy one (positions first, so they fill the read slots) and removed "
        f"afterwards. RETORT_CONNECT_TIMEOUT was {timeout:g} s."
    )


def _failures(run: OverviewRun) -> int:
    return sum(
        count
        for status, count in run.statuses.items()
        if status in {"unreachable", "auth_failed", "error"}
    )


def _statuses(run: OverviewRun) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in sorted(run.statuses.items()))
    return f"{counts}; {min(run.pending)}–{max(run.pending)} revisions pending"


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def _writers(count: int) -> str:
    return "1 writer" if count == 1 else f"{count} writer threads"


def audit_figures(figures: AuditFigures) -> list[Figure]:
    append, verify = figures.append, figures.verify
    latencies = append.latencies
    return [
        Figure(
            f"6a. Audit: append {append.count:,} events, one `audit_record` per transaction "
            f"({_writers(append.writers)})",
            f"{append.per_second:,.0f} events/s ({append.count:,} in {append.seconds:.1f} s); "
            f"per append median {ms(latencies.median)}, p95 {ms(latencies.p95)}, "
            f"max {ms(latencies.maximum)}",
        ),
        Figure(
            "6b. Audit: verify the whole chain, `audit_verify_full()` from the first event",
            f"{verify.per_second:,.0f} events/s ({verify.report.checked:,} events in "
            f"{verify.seconds:.2f} s); chain ok",
        ),
        Figure(
            "6c. Audit: CSV export of every event, peak traced Python memory (`tracemalloc`)",
            _export_memory(figures.csv_traced),
        ),
        Figure(
            "6d. Audit: CSV export of every event, time (`tracemalloc` off)",
            f"{figures.csv.seconds:.2f} s, {figures.csv.rows_per_second:,.0f} rows/s; "
            f"{_mib(figures.csv.size)}; RSS +{_mib(figures.csv.rss_growth)}",
        ),
        Figure(
            "6e. Audit: JSON Lines export of every event, peak traced Python memory",
            _export_memory(figures.jsonl_traced),
        ),
    ]


def _export_memory(run: ExportRun) -> str:
    assert run.traced_peak is not None
    header = " + header" if run.fmt == "csv" else ""
    return (
        f"{_mib(run.traced_peak)} peak; {run.events:,} rows{header}, {_mib(run.size)} in "
        f"{run.chunks:,} chunks; RSS +{_mib(run.rss_growth)}, ru_maxrss "
        f"+{_mib(run.maxrss_growth)} ({run.seconds:.1f} s with tracing)"
    )


def audit_note(figures: AuditFigures) -> str:
    append = figures.append
    cursors = all(
        run.server_side_cursor for run in (figures.csv, figures.csv_traced, figures.jsonl_traced)
    )
    cursor = (
        "Each export read through a server-side cursor (`pg_cursors` showed it open mid-stream)"
        if cursors
        else "**an export did not show a server-side cursor open mid-stream**"
    )
    return (
        f"Audit: in the same dashboard database, after the overview figures (which left "
        f"{append.events_before} events in it). 6a: {append.count:,} calls of "
        "`audit_record(action=…, environment=…, from_revisions=[rev], to_revisions=[next rev], "
        'details={"status": …, "checked_at": …}, system_actor="reader")`, what the reader '
        "records for a change it sees, alternately `revision_changed` and "
        f"`out_of_band_change`, spread over the {ENVIRONMENTS} environments and the history's "
        "revisions; "
        f"{_writers(append.writers)} in autocommit, so every call is its own transaction "
        "(advisory lock, read of the last event, insert, commit; the server's "
        f"`synchronous_commit` was `{append.synchronous_commit}`). Each call's arguments are "
        "made just before it, inside the wall time; events/s is the count over that wall "
        "time; the per-append times are each `audit_record` call alone, as its writer saw it. "
        f"Afterwards the table held exactly {append.events_after:,} events with seq "
        f"1–{append.events_after:,} (checked). 6b: one "
        "`audit_verify_full()` after `gc.collect()`; it must report the chain ok with every "
        "event checked. 6c–6e: a Django test `Client` logged in by `force_login` (which "
        "records a `login` event) GETs `/audit/export.csv` or `.jsonl` with no filters and "
        "consumes `streaming_content` chunk by chunk (one row per chunk), counting bytes and "
        "lines, never joining them; the lines must be the events plus the `audit_exported` "
        "event the view records first (plus the CSV header). Peak: `tracemalloc` runs for "
        "6c and 6e, `reset_peak()` right before the GET, figure = peak minus what was traced "
        "at the reset; tracing slows allocation, so 6d's time is a separate run with it off. "
        "RSS: `/proc/self/statm` read before and every 1,000 chunks, highest minus before; "
        f"ru_maxrss: its growth over the call. {cursor}; Django declares it WITH HOLD in "
        "autocommit, so PostgreSQL materialises the result on the server before the first "
        "row arrives."
    )


def _duration(seconds: float) -> str:
    if abs(seconds) >= 1:
        return f"{seconds:.2f} s"
    if abs(seconds) >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.1f} ms"


def _spread_s(samples: Samples) -> str:
    return (
        f"median {_duration(samples.median)}, min {_duration(samples.minimum)}, "
        f"max {_duration(samples.maximum)} (n={samples.count})"
    )


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB"


def job_figures(f: JobFigures) -> list[Figure]:
    from bench.jobs import MIN_SIZE, PENDING, START

    def median(value) -> float:
        return f.samples(value).median

    def part(name: str) -> str:
        return _duration(f.part(name).median)

    def phase(name: str) -> str:
        return _duration(f.log_phase(name).median)

    fill, paired = f.fill, f.paired
    own = [name for name in f.rounds[0].retort.parts if name not in {"pg_dump", "alembic"}]
    rows = ", ".join(f"{table} {count:,}" for table, count in fill.rows().items())
    size = f.rounds[0].size
    e2e = f.samples(lambda r: r.retort.end_to_end)
    extra = f.samples(lambda r: r.retort.run - r.direct.seconds)
    own_sum = f.samples(lambda r: sum(r.retort.parts[name] for name in own))
    dump_diff = f.samples(lambda r: r.retort.parts["pg_dump"] - r.direct.dump)
    alembic_diff = f.samples(lambda r: r.retort.parts["alembic"] - r.direct.upgrade)
    verify = f.samples(lambda r: r.retort.parts["verify_list"] + r.retort.parts["verify_read"])
    cpu_extra = f.samples(lambda r: r.retort.cpu - r.direct.cpu)
    backup_parts = ("pg_dump", "verify_list", "verify_read", "sha256", "publish", "backup_rest")
    backup_step = f.samples(lambda r: sum(r.retort.parts[name] for name in backup_parts))
    direct_dump = f.samples(lambda r: r.direct.dump)
    backup_ratio = f.samples(
        lambda r: sum(r.retort.parts[name] for name in backup_parts) / r.direct.dump
    )
    return [
        Figure(
            f"7a. Jobs: the target, a PostgreSQL database of the sample project at its "
            f"PROD_TARGET `{START}`, filled; one copy per side per round",
            f"`pg_database_size` {size:,} bytes ({_mb(size)}) each copy; rows: {rows} "
            f"({fill.new_orders:,} orders 'new'); {len(PENDING)} revisions to head",
            f"≥ {_mb(MIN_SIZE)}",
            size >= MIN_SIZE,
        ),
        Figure(
            "7b. Direct: `pg_dump -Fc -f file db`, then `python -m alembic -c alembic.ini "
            "upgrade head`",
            f"{_spread_s(f.direct)}; pg_dump median {_duration(median(lambda r: r.direct.dump))}"
            f", upgrade median {_duration(median(lambda r: r.direct.upgrade))}; dump "
            f"{_mb(median(lambda r: r.direct.dump_size))}",
        ),
        Figure(
            "7c. Retort: `execution.job_run(job_id=…)`, the worker task's body, in process "
            "(lock, re-reads, backup + verification, alembic, state re-read, recording, prune)",
            f"{_spread_s(f.retort)}; backup {_mb(median(lambda r: r.retort.backup_size))}; "
            f"every job `succeeded` at head",
        ),
        Figure(
            "7d. Retort job ÷ direct",
            f"{f.ratio:.3f}× (medians); per round {paired.median:.3f}× median, "
            f"{paired.minimum:.3f}–{paired.maximum:.3f}×",
            f"≤ {JOB_AIM:.2f}×",
            f.ratio <= JOB_AIM,
        ),
        Figure(
            "7e. Planning, `planning.job_request` (reads the database, plans, records the job); "
            "queueing, `approvals.job_queue`",
            f"planning {_spread_s(f.samples(lambda r: r.retort.plan))}; queueing median "
            f"{_duration(median(lambda r: r.retort.queue))}",
        ),
        Figure(
            "7f. End to end: `job_request` + `job_queue` + `job_run` (no broker, no preview)",
            f"{_spread_s(e2e)}; {e2e.median / f.direct.median:.3f}× direct (medians)",
        ),
        Figure(
            "7g. SQL preview, `planning.job_preview_sql` (a worker task between planning and "
            "queueing, `alembic upgrade --sql`; not in 7c or 7f)",
            _spread_s(f.samples(lambda r: r.retort.preview)),
        ),
        Figure(
            "7h. Where `job_run`'s time went (median of each part over the rounds)",
            f"pg_dump {part('pg_dump')} (direct {_duration(median(lambda r: r.direct.dump))})"
            f", alembic {part('alembic')} (direct "
            f"{_duration(median(lambda r: r.direct.upgrade))}); Retort's own: verification "
            f"{_duration(verify.median)} (`pg_restore --list` {part('verify_list')} + "
            f"the rest of `_verify` {part('verify_read')}: the full read of the archive happens "
            f"before a restore, not here), SHA-256 "
            f"{part('sha256')}, fsync + rename {part('publish')}, rest of the backup step "
            f"{part('backup_rest')}, start (claim, audit) {part('start')}, advisory lock "
            f"{part('lock')}, version re-reads ×2 {part('read_heads')}, log + lock release "
            f"+ heartbeat stop {part('run_rest')}, finish (status, audit) {part('finish')}, "
            f"prune {part('prune')}, state re-read {part('snapshot')}",
        ),
        Figure(
            "7i. Retort's extra time over direct, per round (`job_run` − direct)",
            f"median {_duration(extra.median)} ({_duration(extra.minimum)} to "
            f"{_duration(extra.maximum)}) = Retort's own parts (median "
            f"{_duration(own_sum.median)}, {own_sum.median / f.direct.median:.1%} of the "
            f"direct median) + its pg_dump − the direct one (median "
            f"{_duration(dump_diff.median)}) + its alembic − the direct one (median "
            f"{_duration(alembic_diff.median)})",
        ),
        Figure(
            "7j. The backup alone: Retort's backup step (pg_dump, verification, SHA-256, "
            "fsync, Backup row) ÷ the direct `pg_dump`",
            f"{backup_step.median / direct_dump.median:.3f}× (medians: "
            f"{_duration(backup_step.median)} ÷ {_duration(direct_dump.median)}); per round "
            f"{backup_ratio.median:.3f}× median, {backup_ratio.minimum:.3f}–"
            f"{backup_ratio.maximum:.3f}×",
        ),
        Figure(
            "7k. The same runs from their log timestamps (`JobLogLine.at`), medians",
            f"started_at → first line {phase('claim')}; first line → lock held "
            f"{phase('lock')}; `Running pg_dump` → `Verified:` {phase('pg_dump_verify')}; "
            f"`Verified:` → `Backup written` (SHA-256, fsync, rename) "
            f"{phase('sha256_publish')}; `Running pg_dump` → `Backup #` {phase('backup')}; "
            f"`$ python -m alembic …` → `Done:` {phase('alembic')}; `Done:` → finished_at "
            f"(state re-read, status) {phase('after')}; {f.rounds[0].retort.log_lines} log "
            "lines per job",
        ),
        Figure(
            "7l. CPU time (user + system) of the bench process and its children, not the server's",
            f"direct median {_duration(median(lambda r: r.direct.cpu))}, Retort `job_run` "
            f"median {_duration(median(lambda r: r.retort.cpu))}; per round Retort − direct "
            f"median {_duration(cpu_extra.median)} ({_duration(cpu_extra.minimum)} to "
            f"{_duration(cpu_extra.maximum)}); load average (1 min) {f.load[0][0]:.2f} before "
            f"the section, {f.load[1][0]:.2f} after",
        ),
    ]


def jobs_note(f: JobFigures) -> str:
    from bench.jobs import PENDING, START

    t = f.template
    fk = (
        "with `session_replication_role = replica` (the foreign keys are built valid; their "
        "per-row checks would make the fill ten times slower)"
        if t.fk_checks_skipped
        else "with the foreign key checks on"
    )
    unprobed = (
        f" **Probes that found nothing to attach to (the code moved): {', '.join(f.unprobed)}; "
        "their time is counted in the neighbouring parts.**"
        if f.unprobed
        else ""
    )
    return (
        "Jobs: the sample project `examples/inventory` was upgraded to its PROD_TARGET "
        f"`{START}` by `python -m alembic -c alembic.ini upgrade {START}`, then filled by "
        f"`INSERT … SELECT generate_series(…)` {fk}, every {f.fill.new_every}th order with "
        "status 'new' so that the pending revision `mark new orders pending` updates "
        f"{f.fill.new_orders:,} rows; then `VACUUM (FREEZE, ANALYZE)`, connections to it "
        f"closed, `CHECKPOINT` (building it took {t.seconds:.1f} s). The upgrade to head runs "
        f"{len(PENDING)} revisions ({', '.join(PENDING)}): two added columns, a dropped "
        "column, two new tables and the UPDATE. Each round makes two copies with `CREATE "
        "DATABASE … TEMPLATE … STRATEGY FILE_COPY`, one per side, so both start from identical "
        "files (in the OS page cache, not in shared_buffers); before each side a `CHECKPOINT` "
        "and `gc.collect()` run, untimed; the side that goes first alternates "
        f"(direct in rounds 1, 3, …), {len(f.rounds)} rounds (an even number; more stop once "
        f"{f.budget:.0f} s have passed). "
        "Direct: `pg_dump -Fc -f <file> --dbname=<url>` and then `python -m alembic -c "
        "alembic.ini upgrade head` in the project's folder with DATABASE_URL set, both "
        "subprocesses, timed together by wall clock. Retort: one project (alembic_ini = the "
        "sample's) and one environment per round (`backup_before_jobs` on, `keep_backups` 5), "
        "registered untimed; `job_request(kind='upgrade', target='head', sql=True)` (its SQL "
        "asked for, as a plan made on its page is), then "
        "`job_preview_sql` (7g), `job_queue`, and `job_run(job_id=…)` called in this process: "
        "that call is the whole body of the Celery task `environments.tasks.job_run`, so the "
        "figure holds no broker or queue latency. `dispatch.send_on_commit` (planning, "
        "queueing) and `dispatch.send` (the run) were replaced by recorders: nothing reached "
        "a broker (a real worker on the default queue could otherwise have picked up the job "
        "ids), each job's planning and queueing were checked to have sent exactly "
        "`job_preview_sql` and `job_run`, and its run `job_prove` (the proof after the run, "
        "a task of its own that the job does not wait for, is not in these figures). "
        "RETORT_BACKUP_ROOT was a folder in the bench's temporary directory, on the same "
        "filesystem as the direct dumps; RETORT_JOB_TIMEOUT and the heartbeat as configured; "
        "PYTHONDONTWRITEBYTECODE=1 for every alembic child of both sides. Checked after each "
        "round: every job `succeeded` with result heads [head] and the 6 planned revisions, "
        "its backup verified, on disk at its recorded size and within 0.5–2× the direct dump; "
        "both databases at head with all 'new' orders now 'pending'. Each side's copy, dump "
        "or backup file is removed as soon as it is checked, so autovacuum (which the "
        "UPDATE's dead rows call in) never works on one side's copy while the other runs; "
        "the dashboard database was vacuumed and analysed before the section. 7h: timers "
        "wrapped around "
        "`execution._execute`, `_read_heads`, `_make_backup`, `runner.run_alembic`, "
        "`_finish`, `backups_prune`, `environment_read` (as `execution` imports it) and the "
        "backup API's `pg_dump`, `_verify`, `size_and_sha256`, `publish` and "
        "`postgres.list_entries` (each wrapper reads the clock "
        "and calls the original) split the `job_run` call into parts that add up to it; 7k "
        "reads the same runs from their log lines, which cannot separate pg_dump's end from "
        "the verification. 7d depends on how heavy the migration is: here the upgrade takes "
        "about as long as the dump, so Retort's own parts (mostly `pg_restore --list` and the "
        "SHA-256) are diluted by half; 7j is the backup step alone, the ratio a migration that "
        "takes no time would approach. 7l: `getrusage` of the bench process (every thread) and its "
        "waited-for children, so pg_dump, pg_restore and alembic are in it and the PostgreSQL "
        f"backends are not; less sensitive than wall time to other load on the machine.{unprobed}"
    )


def _children_maxrss() -> float:
    """MiB: the largest peak RSS of any child process waited for so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# The largest child's peak just before the jobs section (which spawns many more children).
_children_before_jobs: list[float] = []


def memory_figures() -> list[Figure]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = [Figure("4. Peak RSS of the bench process", f"{own:.0f} MiB")]
    if _children_before_jobs and _children_before_jobs[0] >= 1:
        figures.append(
            Figure(
                "4b. Peak RSS of the largest child before the jobs section (an `alembic stamp`)",
                f"{_children_before_jobs[0]:.0f} MiB",
            )
        )
    figures.append(
        Figure(
            "4c. Peak RSS of the largest child, whole run (a child's peak includes the bench "
            "process's own pages, which it shares until it execs)",
            f"{_children_maxrss():.0f} MiB",
        )
    )
    return figures


def describe_history(history: SyntheticHistory) -> str:
    shape = ", ".join(f"{key}={value}" for key, value in HISTORY_SHAPE.items())
    return (
        f"History: `examples.synthetic.write_history(dir, {REVISIONS}, {shape})` into a temporary "
        f"directory: {len(history.revisions)} revisions, {len(history.merges)} merges, "
        f"{len(history.branch_points)} branch points, {len(history.heads)} head(s)."
    )
