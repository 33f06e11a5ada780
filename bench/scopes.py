"""What each figure of bench/RESULTS.md times, in one line: what is inside the timer and what
is not. `bench.report.render` writes them under the table; a figure without a line here fails
the render (tests/test_bench_scopes.py checks every figure the bench code names has one)."""

from __future__ import annotations

SCOPES: dict[str, str] = {
    "1a": "inside: `load_index(syntax=False)` with Retort's module caches emptied (listing, "
    "header reads, the revision map: the index as the workers and the CI gate read it), in "
    "process; not: imports, the syntax check (1f), the OS page cache (warm)",
    "1b": "inside: `ScriptDirectory.from_config` + `walk_revisions()` in process with "
    "`__pycache__` removed (every file compiled and executed); not: importing alembic itself",
    "1c": "the ratio of 1b to 1a (medians, and minimums)",
    "1d": "inside: 1b with `__pycache__` written once and reused; not: the run that wrote it",
    "1e": "inside: `load_index` of an unchanged directory (listing, a stat per file, the "
    "fingerprint compared); no file is read",
    "1f": "inside: `load_index` as pages call it + the first `index.problems`, caches "
    "emptied (every file compiled; from 200 files on two cores, a forked child shares it); "
    "not: imports",
    "1g": "inside: the revision map built from 2,000 `Revision` objects already made, stock and "
    "linear; not: reading the files",
    "2a": "inside: `overview_build(refresh=True)` in process — every environment read "
    "(connections, version tables), stored, the overview built; not: HTTP, templates",
    "2b": "inside: the first 2a call after the reader caches were emptied; not: imports",
    "2c": "no timer: what the overview of 2a read",
    "2d": "inside: `Project.load_scripts()` on an unchanged directory (the warm index check)",
    "2e": "inside: `environments_read()` of the 20 (index check, parallel reads, state rows); "
    "not: building the overview",
    "3": "inside: 2a with 16 silent databases ahead of the 20 (the connect timeouts included); "
    "not: HTTP",
    "4": "no timer: the bench process's peak RSS (`ru_maxrss`)",
    "4b": "no timer: the largest waited-for child's peak RSS before the jobs section",
    "4c": "no timer: the largest waited-for child's peak RSS over the whole run",
    "5a": "inside: layout + SVG of 2,000 revisions, folded, prod selected, in process; not: the "
    "index read, `applied`/`pending`/findings (computed before the timer), HTTP, the template",
    "5b": "as 5a, nothing folded",
    "5c": "no timer: the SVG's size in bytes",
    "5d": "inside: `command.history` in process without bytecode; not: interpreter start, "
    "importing alembic",
    "5e": "inside: the whole `python -m alembic history` process (start-up, imports, output)",
    "5f": "the ratio of 5d to 5a (not a page against a page: 13b has the page over HTTP)",
    "6a": "inside: each `audit_record` in a transaction of its own (chain hash, insert, commit), "
    "100,000 times; not: setup",
    "6b": "inside: `audit_verify_full()` from the first event to the head",
    "6c": "memory: `tracemalloc` peak while the CSV export is read to the end (time with "
    "tracing shown in brackets); not: HTTP",
    "6d": "inside: the CSV export read to the end, tracing off; not: HTTP",
    "6e": "memory: as 6c, for the JSON Lines export",
    "7a": "no timer: the target database (its build time in the note)",
    "7b": "inside: the `pg_dump -Fc` and `alembic upgrade head` subprocesses, wall clock; not: "
    "copying the database, the CHECKPOINT before each side",
    "7c": "inside: `execution.job_run` in process — lock, re-reads, backup + `pg_restore "
    "--list` + SHA-256, the alembic subprocess, state re-read, finish, prune; not: planning, "
    "the preview, queueing, broker latency, the proof task after the job",
    "7d": "the ratio of 7c to 7b (medians; and per round)",
    "7e": "inside: `planning.job_request` (reads the target, plans, records) and "
    "`approvals.job_queue`; not: the preview (7g)",
    "7f": "inside: 7e + 7c of each round; not: the preview, a broker",
    "7g": "inside: `planning.job_preview_sql` (an `alembic upgrade --sql` subprocess); in "
    "neither 7c nor 7f",
    "7h": "7c split by timers wrapped around the functions it calls; the parts add up to 7c",
    "7i": "per round, 7c − 7b, split into Retort's own parts and the differences of the two "
    "tools' runs",
    "7j": "the ratio of Retort's backup step (pg_dump, check, SHA-256, fsync, row) to 7b's "
    "`pg_dump`",
    "7k": "7c read from the job's log timestamps instead of timers",
    "7l": "CPU seconds (`getrusage`) of the bench process and its children; not the server's",
    "8a": "inside: Retort's read and compare of two PostgreSQL databases of 500 tables; not: "
    "creating them",
    "8b": "inside: SQLAlchemy `MetaData.reflect()` of the same two",
    "8c": "the ratio of 8b to 8a",
    "8d": "memory: `tracemalloc` peak during one 8a",
    "9a": "errors of 50 client threads loading the overview over HTTP for 60 s (gunicorn, 3 "
    "sync workers, loopback)",
    "9b": "inside: each request of 9a, client side, over loopback",
    "9c": "no timer: the most connections to the dashboard database, sampled every 0.5 s",
    "10a": "inside: the overview page rendered by Django's test client in process (server "
    "time, no HTTP), 1,000 environments as the workers stored them; not: the reads",
    "10b": "as 10a at 10, 100 and 1,000 environments",
    "10c": "inside: the overview's poll (204 when nothing changed), in process",
    "10d": "inside: the filtered overview page, in process",
    "10e": "inside: `environments_read` + `overview_build` of the 1,000 in one call (the "
    "design before the workers)",
    "10f": "inside: from beat's tick until every one of the 1,000 reads is stored (broker and "
    "2 worker processes included)",
    "10g": "inside: `alembic current` per database in a shell loop, timed on a sample and "
    "scaled to 1,000",
    "10h": "as 10g, 16 wide with `xargs -P 16`",
    "10i": "no timer: change rows counted by triggers over the refreshes, per hour",
    "10j": "no timer: state rows updated in place, per hour",
    "10k": "inside: one HTTP request for the overview to gunicorn (1 sync worker) over "
    "loopback, client side, at 3, 10, 100 and 1,000 environments; cold = the first after the "
    "server started; not: the server's start, the login, the workers' reads; alembic: 10g's "
    "per-database time × the count",
    "11a": "inside: the shell loop of `alembic upgrade head` over 200 tenants, wall clock",
    "11b": "as 11a, 8 wide",
    "11c": "inside: from the rollout's submit to its last target's end (broker and worker "
    "processes included); planning timed apart (in brackets)",
    "11d": "the ratio of 11c (4 processes) to 11a, in targets per minute",
    "11e": "the ratio of 11c (4 processes) to 11b",
    "11f": "no timer: every tenant's version table read directly after each run",
    "12a": "no timer: the target; the first rehearsal (fresh backup, expected schema built) "
    "timed apart",
    "12b": "inside: the `createdb`, `pg_restore`, `alembic upgrade head` and `dropdb` "
    "subprocesses; not: the state check between the upgrade and the drop",
    "12c": "inside: `execution.job_run` of a rehearsal in process — the target's version read, "
    "scratch database made, restore, alembic with the lock sampler, rewrites, schema check, "
    "drop; not: the request (12f), a broker",
    "12d": "the ratio of 12c to 12b (medians; and per round)",
    "12e": "12c and 12b each without its alembic process, as a ratio",
    "12f": "12c split by timers wrapped around the functions it calls",
    "13a": "inside: `load_index` in a new process (imports before the timer), no file "
    "compiled; in another, `load_index` + `index.problems` (every file compiled, the child "
    "process that shares the work included); alembic: `from_config` + `walk_revisions()` "
    "without bytecode, imports before the timer",
    "13b": "inside: one HTTP request to gunicorn (1 sync worker) over loopback, client side; "
    "cold = the first after the server started (scripts read, templates compiled); not: the "
    "server's start, the login; alembic: whole `python -m alembic` processes",
    "13c": "the ratio of 13a's alembic read to Retort's `load_index` with no file compiled "
    "at 10,000 (and to `load_index` + `index.problems`)",
    "13d": "the ratio of 13a's alembic read to Retort's `load_index` + `index.problems` at 2,000",
    "13e": "13a at 20,000: `load_index` with no file compiled (with the check beside), and "
    "the larger peak RSS of the two processes (VmHWM; the compiling child's own pages are not "
    "in it)",
    "13f": "13b's graph page with prod picked at 10,000, warm (cold in 13b)",
    "14": "inside: each command a whole new process, wall clock — `manage.py migration_status` "
    "(Django start-up, the dashboard database, the read, storing it) and `python -m alembic "
    "current`; the gate's first run (a full read of the scripts) is shown apart, not in the "
    "medians",
}


def figure_id(name: str) -> str:
    """ "7c. Retort: …" → "7c"."""
    return name.split(".", 1)[0].strip()
