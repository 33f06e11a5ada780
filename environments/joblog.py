"""A running job's log and heartbeat: lines appended in batches, the progress counted from
alembic's "Running upgrade" lines, and a thread that beats and flushes every second so the
job page follows the run and the reaper knows the worker is alive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from environments.core import plan
from environments.models import Job, JobLogLine


class JobLog:
    """Appends lines to a job's log; flushed in batches and by the heartbeat every second."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._lock = threading.Lock()
        self._pending: list[JobLogLine] = []
        self._steps = 0
        self._seq = JobLogLine.objects.filter(job=job).count()

    def add(self, line: str) -> None:
        with self._lock:
            self._seq += 1
            self._pending.append(JobLogLine(job_id=self.job.pk, seq=self._seq, text=line))
            if plan.step_of(line) is not None:
                self._steps += 1
            full = len(self._pending) >= 50
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            steps, self._steps = self._steps, 0
        if pending:
            JobLogLine.objects.bulk_create(pending)
        if steps:
            Job.objects.filter(pk=self.job.pk).update(progress_done=F("progress_done") + steps)


@contextlib.contextmanager
def heartbeat(job: Job, log: JobLog) -> Iterator[None]:
    """Beat (and flush the log) from a thread of its own while the job runs."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(min(1.0, settings.RETORT_HEARTBEAT_SECONDS)):
                log.flush()
                Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"job-{job.pk}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        log.flush()
