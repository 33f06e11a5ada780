"""Figure 10's lines in bench/RESULTS.md (bench/fleet.py measures them)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from bench.report import Figure
from bench.stats import Samples, ms

if TYPE_CHECKING:
    from bench.fleet import FleetFigures, LoopRun

OVERVIEW_AIM = 0.100  # seconds, median, at 1,000 environments
GROWTH_AIM = 3.0  # median at 1,000 ÷ median at 10 (linear in environments would be 100)
REFRESH_AIM = 10.0  # seconds: a full refresh of 1,000 by 2 worker processes
REFRESH_PER_HOUR = 60  # refreshes an hour at the default RETORT_REFRESH_SECONDS = 60


def _spread(samples: Samples) -> str:
    return (
        f"median {ms(samples.median)}, p95 {ms(samples.p95)}, "
        f"min {ms(samples.minimum)} ({samples.count} requests)"
    )


def _seconds(samples: Samples) -> str:
    if samples.count == 1:
        return f"{samples.median:.1f} s"
    return f"median {samples.median:.2f} s (min {samples.minimum:.2f}, max {samples.maximum:.2f})"


def _loop(run: LoopRun, whole: float, refresh: float) -> str:
    return (
        f"{run.samples.median:.1f} s for {run.databases} databases → {whole:.0f} s for 1,000; "
        f"÷ Retort's refresh: {whole / refresh:.0f}× (it printed a revision for {run.printed} "
        f"of the {run.readable} readable)"
    )


def fleet_figures(f: FleetFigures) -> list[Figure]:
    small, middle, large = (f.overview[size] for size in sorted(f.overview))
    growth = large.median / small.median
    refresh = f.refresh.median
    loop = f.extrapolated(f.loop)
    xargs = f.extrapolated(f.xargs)
    changes = f.rows.per_cycle(f.change_table, "INSERT")
    updates = f.rows.per_cycle(f.state_table, "UPDATE")
    other = {
        key: n
        for key, n in f.rows.rows.items()
        if key not in {(f.state_table, "UPDATE"), (f.change_table, "INSERT")}
    }
    per_database = f.loop.samples.median / f.loop.databases
    over_http = "; ".join(
        f"{size:,}: {ms(times[0])} cold, {ms(statistics.median(times[1:]))} warm "
        f"(`alembic current` × {size:,} in a loop ≈ {per_database * size:.1f} s)"
        for size, (times, _) in sorted(f.http.items())
    )
    return [
        Figure(
            "10a. Fleet: the overview page, server time, 1,000 environments as the worker "
            f"stored them ({f.shown[1000]})",
            _spread(large),
            f"median ≤ {ms(OVERVIEW_AIM)}",
            large.median <= OVERVIEW_AIM,
        ),
        Figure(
            "10b. Fleet: the overview's growth, 10 → 100 → 1,000 environments (the page shows "
            f"{f.shown[10]} → {f.shown[100]} → {f.shown[1000]})",
            f"{ms(small.median)} → {ms(middle.median)} → {ms(large.median)}: "
            f"×{growth:.1f} for 100× the environments (×{large.median / middle.median:.1f} "
            "from 100 to 1,000)",
            f"×{GROWTH_AIM:g} at most (linear in environments would be ×100)",
            growth <= GROWTH_AIM,
        ),
        Figure(
            "10c. Fleet: the overview's poll when nothing changed (204), 1,000 environments",
            _spread(f.poll),
        ),
        Figure(
            "10d. Fleet: the overview filtered (`?status=behind&label=tier:enterprise`), 1,000",
            _spread(f.filtered),
        ),
        Figure(
            "10e. Baseline: the page's work before the workers, 1,000 environments: every one "
            "read, stored and the overview built in one call (`environments_read` + "
            "`overview_build`; no request, no template)",
            f"{_seconds(f.read_in_request)}; ÷ the whole request of 10a: "
            f"{f.read_in_request.median / large.median:.0f}×",
        ),
        Figure(
            f"10f. Fleet: a full refresh of 1,000 environments by {f.worker_processes} worker "
            "processes, from beat's tick until every read is stored",
            _seconds(f.refresh),
            f"≤ {REFRESH_AIM:g} s",
            refresh <= REFRESH_AIM,
        ),
        Figure(
            f"10g. Baseline: `alembic current` per database, in a loop — `{f.loop.command}`",
            _loop(f.loop, loop, refresh),
        ),
        Figure(
            f"10h. Baseline: the same loop {f.xargs_width} wide — `{f.xargs.command}`",
            _loop(f.xargs, xargs, refresh),
        ),
        Figure(
            "10i. Fleet: change rows written per hour by 1,000 steady environments at a 60 s "
            "refresh",
            f"{changes * REFRESH_PER_HOUR:.0f} (measured over {f.rows.cycles} refreshes)",
            "0",
            changes == 0,
        ),
        Figure(
            "10j. Fleet: rows updated in place per hour by the same",
            f"{updates * REFRESH_PER_HOUR:,.0f} ({updates:,.0f} a refresh: each state row "
            "marked sent, then its read stored); other rows written: "
            + (", ".join(f"{op.lower()} {table} {n}" for (table, op), n in other.items()) or "0"),
        ),
        Figure(
            "10k. Fleet: the overview over HTTP (gunicorn, 1 sync worker, loopback), the first "
            "request after the server started and the median of 5 more, as the fleet grows",
            f"{over_http}; worker peak RSS at 1,000 {f.http[max(f.http)][1]:.0f} MiB",
        ),
    ]


def fleet_note(f: FleetFigures) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in f.kinds.most_common())
    statuses = ", ".join(
        f"{n} {status.replace('_', ' ')}" for status, n in f.statuses.most_common()
    )
    return (
        f"Fleet: one project of {sum(f.kinds.values()):,} environments over a {f.revisions}-"
        "revision history, PostgreSQL databases and SQLite files alternating (so the 10 and "
        f"the 100 are half and half too), stamped by SQL from templates ({kinds}; built in "
        f"{f.setup_seconds:.0f} s); the worker stored {statuses}. Each environment carries "
        "three labels (tier, region, tenant). A real `celery worker` with "
        f"{f.worker_processes} prefork processes on a Redis broker reads; beat's tick "
        "(`read_requests.reads_send_due`, the task body beat runs) is called in the bench process "
        "with RETORT_REFRESH_SECONDS shortened to 1 s, so each refresh makes every environment due "
        "at once (a 60 s refresh does the same each minute). Pages are timed through Django's test "
        "client, logged in: the whole request, middleware, session, queries on the PostgreSQL "
        "dashboard database, and template; past 24 environments the overview is a table of 100 rows"
        " a page with the attention list (up to 50), so what it renders is bounded by design and "
        "what grows is what the database counts and sorts. `alembic "
        f"current` is timed once over {f.loop.databases} (loop) and {f.xargs.databases} "
        "(xargs) "
        "databases picked at even steps through the fleet, PostgreSQL and SQLite in turn, "
        "after one untimed call wrote the revision files' "
        "bytecode, and scaled to "
        "1,000; the loops would take minutes in full. Rows written are counted by "
        "statement-level triggers on every table of the dashboard database, whichever process "
        "writes them. This section alone: `.venv/bin/python -m bench --only fleet`."
    )
