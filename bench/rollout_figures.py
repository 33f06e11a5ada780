"""Figure 11's lines in bench/RESULTS.md (bench/rollout.py measures them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report import Figure

if TYPE_CHECKING:
    from bench.rollout import RolloutFigures, Run

SEQUENTIAL_AIM = 3.0  # 4 worker processes ÷ the sequential loop, in targets per minute
XARGS_AIM = 1.0  # 4 worker processes ÷ the 8-wide loop


def _rate(run: Run) -> str:
    return f"{run.per_minute:.0f} targets/min ({run.seconds:.1f} s for 200; {run.at_head} at head)"


def rollout_figures(f: RolloutFigures) -> list[Figure]:
    assert f.loop is not None and f.xargs is not None
    four = f.rollouts[4]
    lines = [
        Figure(f"11a. Rollout of 200 tenants: {f.loop.label}, `{f.loop.command}`", _rate(f.loop)),
        Figure(f"11b. The same, {f.xargs.label}, `{f.xargs.command}`", _rate(f.xargs)),
    ]
    for run in [run for _, run in sorted(f.rollouts.items())] + ([f.cold] if f.cold else []):
        ratio = run.per_minute / f.loop.per_minute
        lines.append(
            Figure(
                f"11c. Retort's {run.label} (planning apart: {run.planning:.1f} s)",
                f"{_rate(run)}; {ratio:.2f}× the sequential loop",
            )
        )
    against_loop = four.per_minute / f.loop.per_minute
    against_xargs = four.per_minute / f.xargs.per_minute
    lines += [
        Figure(
            "11d. 4 worker processes ÷ the sequential loop (targets per minute)",
            f"{against_loop:.2f}×",
            f"≥ {SEQUENTIAL_AIM:g}×",
            against_loop >= SEQUENTIAL_AIM,
            f"{f.cores} CPU cores",
        ),
        Figure(
            "11e. 4 worker processes ÷ the 8-wide loop",
            f"{against_xargs:.2f}×",
            f"≥ {XARGS_AIM:g}×",
            against_xargs >= XARGS_AIM,
        ),
        Figure(
            "11f. Every tenant at head after every run (read directly)",
            ", ".join(f"{run.at_head}/200" for run in _runs(f)),
            "200/200 each",
            all(run.at_head == 200 for run in _runs(f)),
        ),
    ]
    return lines


def _runs(f: RolloutFigures) -> list[Run]:
    loops = [run for run in (f.loop, f.xargs) if run is not None]
    return [*loops, *f.rollouts.values(), *([f.cold] if f.cold else [])]


def rollout_note(f: RolloutFigures) -> str:
    return (
        "Figure 11: each run starts from 200 fresh copies of an empty template database on the "
        "local server (a checkpoint and a sync before the clock starts) and a four-revision "
        "history (two tables, a column, an index). The loops "
        "run `alembic upgrade head` per database exactly as written; the rollout is timed from "
        "its submit until it completed (every target an ordinary job: read, lock, re-read, "
        "alembic in a process of its own, read again, audit), with backups off as the loops "
        "take none; its planning (every tenant read, the plan's SQL rendered once) is shown "
        "apart. Each worker process is `celery worker --concurrency=1`; the rollout's one wave "
        "allows 16 at once. A loop's time goes mostly to a Python interpreter starting and "
        "importing SQLAlchemy and alembic for every database; a worker forks each alembic run "
        "from a warm parent that imported them once (RETORT_WARM_ALEMBIC), and the last 11c "
        "line is the same rollout with that switched off. This machine has "
        f"{f.cores} CPU cores: past that many processes, more do not run faster (the loops' "
        "`xargs -P 8` included)."
    )
