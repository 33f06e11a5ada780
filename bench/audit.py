"""Figure 6: the audit trail: appending 100,000 events, verifying the chain, exporting it.

Imported only after django.setup().
"""

from __future__ import annotations

import gc
import os
import resource
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.db.models import Count, Max, Min
from django.test import Client
from django.urls import reverse

from bench.stats import Samples, timed
from environments import audit, audit_chain
from environments.models import AuditEvent, Environment, Project

# What the reader records for one change it sees (environments.reads), in this order.
ACTIONS = ("revision_changed", "out_of_band_change")
STATUSES = ("behind", "current", "ahead")
EXPORT_CHUNK_SAMPLE = 1000  # read the RSS every this many chunks of the export


@dataclass(frozen=True)
class AppendRun:
    count: int  # events appended
    writers: int  # threads, each with its own connection
    seconds: float  # wall time of all the appends
    latencies: Samples  # one `audit_record` call each, as its writer saw it (lock wait included)
    events_before: int
    events_after: int
    synchronous_commit: str  # the server's setting: whether each commit waits for its WAL flush

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True)
class VerifyRun:
    seconds: float
    report: audit_chain.ChainReport

    @property
    def per_second(self) -> float:
        return self.report.checked / self.seconds


@dataclass(frozen=True)
class ExportRun:
    fmt: str
    events: int  # events the export must hold (its own `audit_exported` event included)
    lines: int  # newline-terminated lines received
    size: int  # bytes received
    chunks: int  # chunks of `streaming_content`
    seconds: float  # from the GET to the last chunk consumed
    traced_peak: int | None  # bytes: tracemalloc's peak over what was traced before the call
    rss_growth: int  # bytes: highest sampled RSS during the export over the RSS before it
    maxrss_growth: int  # bytes: growth of the process's ru_maxrss over the call
    server_side_cursor: bool  # pg_cursors showed a cursor open mid-stream

    @property
    def rows_per_second(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class AuditFigures:
    append: AppendRun
    verify: VerifyRun
    csv: ExportRun
    csv_traced: ExportRun
    jsonl_traced: ExportRun


# --- appending ------------------------------------------------------------------------------


def _event_args(
    i: int, environments: Sequence[Environment], revisions: Sequence[str], base: datetime
) -> dict:
    """Event `i`: what the reader records for a change it saw, spread over every environment."""
    change = i // len(ACTIONS)
    environment = environments[change % len(environments)]
    step = (change // len(environments)) % (len(revisions) - 1)
    checked_at = (base + timedelta(seconds=change)).isoformat()
    return {
        "action": ACTIONS[i % len(ACTIONS)],
        "environment": environment,
        "from_revisions": [revisions[step]],
        "to_revisions": [revisions[step + 1]],
        "details": {"status": STATUSES[change % len(STATUSES)], "checked_at": checked_at},
        "system_actor": "reader",
    }


def _setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return cursor.fetchone()[0]


def _chain_shape() -> tuple[int, int, int]:
    """(events, lowest seq, highest seq)."""
    shape = AuditEvent.objects.order_by().aggregate(n=Count("pk"), lo=Min("seq"), hi=Max("seq"))
    return shape["n"], shape["lo"] or 0, shape["hi"] or 0


def append(project: Project, revisions: Sequence[str], *, count: int, writers: int) -> AppendRun:
    """`count` events, each `audit_record` in its own transaction, by `writers` threads."""
    environments = list(project.environments.select_related("project").order_by("position"))
    if not environments or len(revisions) < 2:
        raise RuntimeError("the audit benchmark needs environments and at least two revisions")
    events_before = _chain_shape()[0]
    base = datetime.now(UTC)

    def write(first: int) -> list[float]:
        """Events first, first + writers, …; each one's arguments made just before it (a few
        microseconds: made all at once, 100,000 would hold some 60 MiB and lift figure 4)."""
        latencies = []
        try:
            for i in range(first, count, writers):
                kwargs = _event_args(i, environments, revisions, base)
                started = time.perf_counter()
                audit.audit_record(**kwargs)  # autocommit: one transaction per event
                latencies.append(time.perf_counter() - started)
        finally:
            connections.close_all()  # this thread's own connection
        return latencies

    gc.collect()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="bench-audit") as pool:
        results = list(pool.map(write, range(writers)))
    seconds = time.perf_counter() - started

    events_after, lowest, highest = _chain_shape()
    if events_after != events_before + count or lowest != 1 or highest != events_after:
        raise RuntimeError(
            f"the chain is not {events_before} + {count} contiguous events: "
            f"{events_after} events, seq {lowest}–{highest}"
        )
    latencies = Samples(tuple(latency for result in results for latency in result))
    return AppendRun(
        count,
        writers,
        seconds,
        latencies,
        events_before,
        events_after,
        _setting("synchronous_commit"),
    )


# --- verifying ------------------------------------------------------------------------------


def verify(events: int) -> VerifyRun:
    """`audit_verify_full()` from the first event; it must find the chain whole."""
    result: list[audit_chain.ChainReport] = []
    seconds = timed(lambda: result.append(audit_chain.audit_verify_full()))
    report = result[0]
    if not report.ok or report.checked != events or report.verified_through != events:
        raise RuntimeError(f"audit_verify_full() over {events} events: {report.message}")
    return VerifyRun(seconds, report)


# --- exporting ------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_cursors() -> int:
    """Cursors open on this thread's connection (the export's server-side cursor among them)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors")
        return cursor.fetchone()[0]


def export(client: Client, fmt: str, *, trace: bool) -> ExportRun:
    """GET /audit/export.<fmt> of every event, consumed chunk by chunk and never joined."""
    events = AuditEvent.objects.count() + 1  # the view records `audit_exported` first
    url = reverse("audit_export", args=[fmt])
    gc.collect()
    rss_before = rss_peak = _rss()
    maxrss_before = _maxrss()
    traced_before = 0
    if trace:
        tracemalloc.reset_peak()
        traced_before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    response = client.get(url)
    if response.status_code != 200 or not response.streaming:
        raise RuntimeError(f"GET {url}: {response.status_code}, streaming={response.streaming}")
    size = lines = chunks = 0
    server_side = False
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
        chunks += 1
        if chunks % EXPORT_CHUNK_SAMPLE == 0:
            rss_peak = max(rss_peak, _rss())
            if chunks == EXPORT_CHUNK_SAMPLE:
                server_side = _open_cursors() > 0
    response.close()
    seconds = time.perf_counter() - started
    traced_peak = None
    if trace:
        traced_peak = tracemalloc.get_traced_memory()[1] - traced_before
    rss_peak = max(rss_peak, _rss())

    expected = events + 1 if fmt == "csv" else events  # CSV has a header line
    if lines != expected:
        raise RuntimeError(f"the {fmt} export has {lines} lines, expected {expected}")
    return ExportRun(
        fmt,
        events,
        lines,
        size,
        chunks,
        seconds,
        traced_peak,
        rss_peak - rss_before,
        _maxrss() - maxrss_before,
        server_side,
    )


def logged_in_client() -> Client:
    user = get_user_model().objects.create_user("bench-auditor", password=None)
    client = Client()
    client.force_login(user)  # records a `login` event, counted like any other
    return client


def measure(
    project: Project, revisions: Sequence[str], *, count: int = 100_000, writers: int = 2
) -> AuditFigures:
    if connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        raise RuntimeError("server-side cursors are disabled; the export would not stream")
    appended = append(project, revisions, count=count, writers=writers)
    verified = verify(appended.events_after)
    client = logged_in_client()
    csv = export(client, "csv", trace=False)
    tracemalloc.start()
    try:
        csv_traced = export(client, "csv", trace=True)
        jsonl_traced = export(client, "jsonl", trace=True)
    finally:
        tracemalloc.stop()
    return AuditFigures(appended, verified, csv, csv_traced, jsonl_traced)
