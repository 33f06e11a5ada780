"""Drift: two PostgreSQL databases of 500 tables each, reflected and compared as
`drift_build` does (both read at once, in threads), against SQLAlchemy's own
`MetaData.reflect()` of the same two databases.
"""

from __future__ import annotations

import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from bench.postgres import Databases
from bench.stats import Samples
from environments.core.database_urls import sync_url
from environments.core.schema import compare_schemas, read_schema
from examples.synthetic_schema import random_metadata

TABLES = 500
ROUNDS = 5


@dataclass
class DriftFigures:
    tables: int
    objects: int  # columns, indexes, constraints per database
    compare: Samples  # both reads in parallel, then the comparison
    reflect_baseline: Samples  # MetaData.reflect() of both, in parallel
    peak_bytes: int  # traced Python memory during one read-and-compare
    differences: int


def _build(databases: Databases, metadata: sa.MetaData) -> tuple[str, str]:
    urls = (databases.create("drift_a"), databases.create("drift_b"))
    for url in urls:
        engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
        metadata.create_all(engine)
        engine.dispose()
    return urls


def _compare_once(urls: tuple[str, str]) -> int:
    with ThreadPoolExecutor(max_workers=2) as pool:
        left, right = pool.map(read_schema, urls)
    return len(compare_schemas(left, right))


def _reflect_once(urls: tuple[str, str]) -> int:
    def reflect(url: str) -> int:
        engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
        metadata = sa.MetaData()
        metadata.reflect(engine)
        engine.dispose()
        return len(metadata.tables)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return sum(pool.map(reflect, urls))


def _timed(call, rounds: int) -> Samples:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return Samples(tuple(seconds))


def measure(databases: Databases) -> DriftFigures:
    metadata = random_metadata(7, tables=TABLES)
    objects = sum(
        len(t.columns) + len(t.indexes) + len(t.constraints) for t in metadata.tables.values()
    )
    urls = _build(databases, metadata)
    differences = _compare_once(urls)  # warm the dialects' first-connect checks
    compare = _timed(lambda: _compare_once(urls), ROUNDS)
    baseline = _timed(lambda: _reflect_once(urls), ROUNDS)
    tracemalloc.start()
    _compare_once(urls)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return DriftFigures(TABLES, objects, compare, baseline, peak, differences)
