"""Run every benchmark once and write bench/RESULTS.md.

The dashboard database and the PostgreSQL targets are throwaway databases created here on the
server that DATABASE_URL names (its own database is never opened) and dropped at the end.
"""

from __future__ import annotations

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
from bench.report import Figure, Report, command_line, machine_facts, write
from bench.stats import Samples, ms
from examples.synthetic import SyntheticHistory, write_history

if TYPE_CHECKING:
    from bench.audit import AuditFigures, ExportRun
    from bench.overview import OverviewRun, Parts
    from environments.models import Project

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REVISIONS = 2000
HISTORY_SHAPE = {"seed": 2, "branch_every": 40, "depends_on_every": 50}
ENVIRONMENTS = 20
MAX_BEHIND = 200
COLD_AIM = 10.0  # Retort's cold read at least this many times faster than Alembic's
WARM_OVERVIEW_AIM = 0.100  # seconds
SILENT_GRACE = 0.5  # seconds over the connect timeout


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def main() -> int:
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
            run(report, databases, Path(tmp))
        finally:
            _close_django()
            log(f"dropped databases: {', '.join(databases.drop_all()) or 'none'}")
    report.add(*memory_figures())
    report.duration = time.monotonic() - started
    log(f"wrote {write(report)} in {report.duration:.1f} s")
    return 0


def run(report: Report, databases: Databases, tmp: Path) -> None:
    history = write_history(tmp / "history", REVISIONS, **HISTORY_SHAPE)
    report.notes.append(describe_history(history))
    measure_reads(report, history)
    measure_graph(report, history)
    setup_django(databases.create(), tmp)
    project = measure_overviews(report, history, databases, tmp)
    measure_audit(report, history, project)


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
    report.add(*overview_figures(first, warm, overview.measure_parts(project)))
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


# --- setup -----------------------------------------------------------------------------------


def setup_django(dashboard_url: str, tmp: Path) -> None:
    """Point Django at the throwaway dashboard database before it reads its settings."""
    os.environ["DATABASE_URL"] = dashboard_url
    os.environ["RETORT_DATA_DIR"] = str(tmp / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
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
        Figure("1a. Cold read, Retort `load_index` (caches emptied)", _spread(reads.retort_cold)),
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
            "1f. First `index.problems` after a cold read (the overview page shows them)",
            _spread(reads.problems_first),
        ),
    ]


def read_notes(caches: tuple[str, ...]) -> list[str]:
    names = ", ".join(f"`{name}`" for name in caches)
    cold = (
        "Cold reads: before each timed call `gc.collect()` runs (untimed) and every "
        f"module-level cache of `environments.core.scripts` ({names}) is emptied; Alembic gets "
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
        "the cached index (checked). 1f: `problems` of an index just read cold, timed once per "
        "cold read."
    )
    return [cold, bytecode, warm]


def overview_figures(first: float, warm: OverviewRun, parts: Parts) -> list[Figure]:
    median, p95 = warm.samples.median, warm.samples.p95
    failures = _failures(warm)
    remark = f"p95 {'within' if p95 <= WARM_OVERVIEW_AIM else 'over'} the aim"
    if failures:
        remark += f"; {failures} environment(s) could not be read"
    return [
        Figure(
            f"2a. Warm overview, {ENVIRONMENTS} environments (`overview_build`)",
            f"median {ms(median)}, p95 {ms(p95)}, min {ms(warm.samples.minimum)} "
            f"(n={warm.samples.count})",
            f"median ≤ {ms(WARM_OVERVIEW_AIM)}",
            median <= WARM_OVERVIEW_AIM and not failures,
            remark,
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
            "the parallel reads, the snapshot insert)",
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
        "and the snapshot inserts into the dashboard database (PostgreSQL)."
    )


def silent_figure(silent: OverviewRun, timeout: float) -> Figure:
    limit = timeout + SILENT_GRACE
    samples = silent.samples
    unreachable = silent.statuses.get("unreachable", 0)
    met = samples.maximum <= limit and unreachable == 1 and _failures(silent) == 1
    return Figure(
        f"3. Overview, {ENVIRONMENTS} environments + 1 that accepts TCP and never answers",
        f"max {samples.maximum:.2f} s, median {samples.median:.2f} s (n={samples.count}); "
        f"{_statuses(silent)}",
        f"max ≤ {limit:g} s (RETORT_CONNECT_TIMEOUT {timeout:g} s + {SILENT_GRACE:g} s)",
        met,
    )


def silent_note(timeout: float) -> str:
    return (
        "Silent database: a socket server on 127.0.0.1 that accepts and never replies; an "
        "environment with a postgresql:// URL pointing at it is added for figure 3 and removed "
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


def memory_figures() -> list[Figure]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return [
        Figure("4. Peak RSS of the bench process", f"{own:.0f} MiB"),
        Figure("4b. Peak RSS of the largest child (an `alembic stamp`)", f"{children:.0f} MiB"),
    ]


def describe_history(history: SyntheticHistory) -> str:
    shape = ", ".join(f"{key}={value}" for key, value in HISTORY_SHAPE.items())
    return (
        f"History: `examples.synthetic.write_history(dir, {REVISIONS}, {shape})` into a temporary "
        f"directory: {len(history.revisions)} revisions, {len(history.merges)} merges, "
        f"{len(history.branch_points)} branch points, {len(history.heads)} head(s)."
    )
