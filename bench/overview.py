"""Figures 2 and 3: the overview of 20 stamped environments, then with a silent database.

Imported only after django.setup().
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.db.models import F

from bench.scripts_read import clear_caches
from bench.silent import SilentServer
from bench.stats import Samples, repeat, timed
from environments import overviews, reads
from environments.models import Environment, Project
from examples.synthetic import SyntheticHistory


@dataclass(frozen=True)
class Target:
    """One environment to register: a name, its URL and the revision it is stamped at."""

    name: str
    url: str
    revision: str


@dataclass(frozen=True)
class OverviewRun:
    samples: Samples
    statuses: Counter[str]
    pending: tuple[int, ...]  # how many revisions each environment is behind


@dataclass(frozen=True)
class Parts:
    index_check: Samples  # Project.load_scripts() on the unchanged directory
    environments_read: Samples  # reads.environments_read() of every environment


def pick_revisions(history: SyntheticHistory, count: int, max_behind: int) -> list[str]:
    """`count` revisions from the head back to about `max_behind` created before it."""
    order = history.revisions
    steps = [round(i * max_behind / max(1, count - 1)) for i in range(count)]
    return [order[len(order) - 1 - step] for step in steps]


def plan_targets(
    history: SyntheticHistory,
    *,
    sqlite_dir: Path,
    make_pg_url: Callable[[str], str],
    count: int = 20,
    max_behind: int = 200,
) -> list[Target]:
    """Alternate SQLite files and PostgreSQL databases, each at a different revision."""
    targets = []
    for i, revision in enumerate(pick_revisions(history, count, max_behind)):
        if i % 2 == 0:
            name, url = f"sqlite-{i:02d}", f"sqlite:///{sqlite_dir / f'target_{i:02d}.sqlite'}"
        else:
            name, url = f"pg-{i:02d}", make_pg_url(f"t{i:02d}")
        targets.append(Target(name, url, revision))
    return targets


def stamp(ini: Path, target: Target) -> None:
    """`alembic stamp`, by the real CLI, the way the project's env.py reads its URL."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "stamp", target.revision],
        cwd=ini.parent,
        env={**os.environ, "DATABASE_URL": target.url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic stamp for {target.name} failed:\n{result.stderr}")


def stamp_all(ini: Path, targets: Sequence[Target]) -> int:
    """Stamp every target, one alembic process per CPU at a time; returns how many at a time."""
    workers = max(1, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-stamp") as pool:
        list(pool.map(lambda target: stamp(ini, target), targets))
    return workers


def register(ini: Path, targets: Sequence[Target]) -> Project:
    project = Project.objects.create(name="bench-2000", slug="bench-2000", alembic_ini=str(ini))
    for position, target in enumerate(targets):
        add_environment(project, target.name, target.url, position)
    return project


def add_environment(project: Project, name: str, url: str, position: int) -> Environment:
    environment = Environment(project=project, name=name, slug=name, position=position)
    environment.set_url(url)
    environment.save()
    return environment


def build_overview() -> list[overviews.ProjectOverview]:
    """Every environment read and stored (what a worker's batch does), then the overview
    built from what was stored (what the page does)."""
    return overviews.overview_build(
        projects=Project.objects.prefetch_related("environments__project"), refresh=True
    )


def summarize(overviews: Sequence[overviews.ProjectOverview]) -> tuple[Counter[str], list[int]]:
    statuses: Counter[str] = Counter()
    pending = []
    for overview in overviews:
        for card in overview.cards:
            assert card.state is not None
            statuses[card.state.status] += 1
            pending.append(len(card.state.pending))
    return statuses, pending


def _timed_runs(count: int, budget: float) -> OverviewRun:
    """Time `count` overviews (fewer if `budget` runs out); what the last one read."""
    last: list[overviews.ProjectOverview] = []

    def call() -> None:
        last[:] = build_overview()

    samples = repeat(call, count=count, budget=budget)
    statuses, pending = summarize(last)
    return OverviewRun(samples, statuses, tuple(sorted(pending)))


def measure_warm(*, count: int = 20, budget: float = 60.0) -> tuple[float, OverviewRun]:
    """The first (warm-up) call from cold script caches, then `count` timed calls."""
    clear_caches()
    first = timed(build_overview)
    return first, _timed_runs(count, budget)


def measure_parts(project: Project, *, count: int = 20, budget: float = 30.0) -> Parts:
    """What the overview is made of: one warm index check; reading all environments."""
    environments = list(project.environments.select_related("project"))
    return Parts(
        index_check=repeat(project.load_scripts, count=count, budget=budget),
        environments_read=repeat(
            lambda: reads.environments_read(environments=environments),
            count=count,
            budget=budget,
        ),
    )


def measure_silent(
    project: Project, *, silent: int = 16, count: int = 3, budget: float = 60.0
) -> OverviewRun:
    """The overview with `silent` more environments whose server accepts and never answers,
    placed before every healthy one (they take the read slots first)."""
    healthy = project.environments.all()
    with SilentServer() as server:
        url = f"postgresql://postgres@127.0.0.1:{server.port}/silent"
        healthy.update(position=F("position") + silent)
        added = [
            add_environment(project, f"silent-{n:02d}", url, position=n) for n in range(silent)
        ]
        try:
            return _timed_runs(count, budget)
        finally:
            for environment in added:
                environment.delete()
            healthy.update(position=F("position") - silent)
