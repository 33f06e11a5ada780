"""Figure 1: reading the script directory cold, Retort's way and Alembic's way, and warm."""

from __future__ import annotations

import functools
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import Revision, RevisionMap

from bench.stats import Samples, repeat, timed
from environments.core import revision_files, script_config, scripts, syntax_check
from environments.core.revision_map import LinearRevisionMap


@dataclass(frozen=True)
class ReadFigures:
    retort_cold: Samples
    alembic_cold: Samples
    alembic_bytecode: Samples
    retort_warm: Samples
    problems_first: Samples  # the first `index.problems` after a cold read
    map_stock: Samples  # Alembic's RevisionMap built from the revisions, alone
    map_linear: Samples  # Retort's LinearRevisionMap built from the same
    caches: tuple[str, ...]  # the reader's caches emptied for each cold read


def clear_caches() -> tuple[str, ...]:
    """Empty every module-level cache of Retort's reader; returns their names."""
    cleared = []
    for module in (scripts, revision_files, syntax_check):  # the index's, the files', verdicts
        for name, value in vars(module).items():
            if name.startswith("_") and name.endswith("_cache") and isinstance(value, dict):
                value.clear()
                cleared.append(name)
    if not {"_index_cache", "_file_cache", "_syntax_cache"} <= set(cleared):
        raise RuntimeError(f"Retort's reader caches are not where expected: {cleared}")
    return tuple(sorted(cleared))


def retort_cold(ini: Path) -> set[str]:
    """Retort's read with its module caches emptied, as in a fresh process: the index alone,
    as the workers and the CI gate read it (no file compiled)."""
    clear_caches()
    return set(scripts.load_index(script_config.config_from_ini(ini), syntax=False).revisions)


def retort_warm(ini: Path) -> scripts.ScriptIndex:
    return scripts.load_index(script_config.config_from_ini(ini))


def alembic_cold(ini: Path) -> set[str]:
    """Alembic's own read: a fresh ScriptDirectory, every revision walked."""
    directory = ScriptDirectory.from_config(Config(str(ini)))
    return {script.revision for script in directory.walk_revisions()}


def clear_bytecode(versions: Path) -> None:
    """Remove what an import may have cached, so Alembic compiles every file again."""
    shutil.rmtree(versions / "__pycache__", ignore_errors=True)
    if (versions / "__pycache__").exists():
        raise RuntimeError(f"{versions / '__pycache__'} could not be removed")


def measure(ini: Path, versions: Path, *, rounds: int = 5, budget: float = 90.0) -> ReadFigures:
    if not sys.dont_write_bytecode:
        raise RuntimeError("the cold read comparison needs sys.dont_write_bytecode set")
    clear_bytecode(versions)
    caches = clear_caches()
    # Untimed warm-up of both: imports what the revision files import (alembic.op, ...),
    # and checks both readers see the same revisions.
    if retort_cold(ini) != alembic_cold(ini):
        raise RuntimeError("Retort and Alembic read different revisions")
    retort_times: list[float] = []
    alembic_times: list[float] = []
    deadline = time.monotonic() + budget
    for round_ in range(rounds):
        order = ("retort", "alembic") if round_ % 2 == 0 else ("alembic", "retort")
        for reader in order:
            if reader == "retort":
                retort_times.append(timed(lambda: retort_cold(ini)))
            else:
                clear_bytecode(versions)
                alembic_times.append(timed(lambda: alembic_cold(ini)))
        if time.monotonic() >= deadline:
            break
    clear_bytecode(versions)
    return ReadFigures(
        retort_cold=Samples(tuple(retort_times)),
        alembic_cold=Samples(tuple(alembic_times)),
        alembic_bytecode=_measure_alembic_with_bytecode(ini, versions),
        problems_first=_measure_problems_first(ini),
        retort_warm=_measure_warm(ini),
        caches=caches,
        **_measure_maps(ini),
    )


def _build_map(cls: type[RevisionMap], rows: list[tuple]) -> RevisionMap:
    nodes = [Revision(*row) for row in rows]
    revision_map = cls(lambda: nodes)
    revision_map._revision_map  # noqa: B018 - builds it
    return revision_map


def _measure_maps(ini: Path) -> dict[str, Samples]:
    """The graph alone: Revision objects and the map built from them, stock and linear, from
    the headers Retort read (the same input for both); they must agree on heads and order."""
    index = retort_warm(ini)
    rows = [
        (r.revision, r.down_revision, r.depends_on, r.branch_labels or None)
        for r in index.revisions.values()
    ]
    stock, linear = _build_map(RevisionMap, rows), _build_map(LinearRevisionMap, rows)
    if stock.heads != linear.heads or list(stock._revision_map) != list(linear._revision_map):
        raise RuntimeError("LinearRevisionMap and RevisionMap disagree on the history")
    samples: dict[str, list[float]] = {"map_stock": [], "map_linear": []}
    for round_ in range(5):
        order = ("map_stock", "map_linear") if round_ % 2 == 0 else ("map_linear", "map_stock")
        for name in order:
            cls = RevisionMap if name == "map_stock" else LinearRevisionMap
            samples[name].append(timed(functools.partial(_build_map, cls, rows)))
    return {name: Samples(tuple(times)) for name, times in samples.items()}


def _measure_problems_first(ini: Path, *, count: int = 3, budget: float = 20.0) -> Samples:
    """What the overview page pays for a directory no process has read: the index as pages
    load it (syntax checked, on two cores when there are many files) and its problems."""
    times: list[float] = []
    deadline = time.monotonic() + budget
    config = script_config.config_from_ini(ini)

    def page_read() -> list:
        return scripts.load_index(config).problems

    for _ in range(count):
        clear_caches()
        times.append(timed(page_read))
        if page_read():
            raise RuntimeError(f"the synthetic history has problems: {page_read()[:3]}")
        if time.monotonic() >= deadline:
            break
    return Samples(tuple(times))


def _measure_warm(ini: Path) -> Samples:
    index = retort_warm(ini)
    samples = repeat(lambda: retort_warm(ini), count=20, budget=20.0)
    if retort_warm(ini) is not index:
        raise RuntimeError("the warm read rebuilt the index of an unchanged directory")
    return samples


def _measure_alembic_with_bytecode(ini: Path, versions: Path) -> Samples:
    """Alembic's best case, for information: __pycache__ written once, then reused."""
    sys.dont_write_bytecode = False
    try:
        alembic_cold(ini)
        return repeat(lambda: alembic_cold(ini), count=3, budget=20.0)
    finally:
        sys.dont_write_bytecode = True
        clear_bytecode(versions)
