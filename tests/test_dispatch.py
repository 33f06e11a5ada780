"""A job is never lost to the broker: queued while it is down, or lost in a restart, it runs
once the broker is back — exactly once. A private Redis on a spare port is stopped and started."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.urls import reverse

from dashboard.celery import app as celery_app
from environments import approvals, dispatch, planning
from environments.models import AuditEvent, Job
from tests.conftest import env, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class PrivateRedis:
    """A Redis server of this test's own, kept in memory only (as compose ran it before)."""

    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_for(lambda: _answers(self.port), seconds=10), "redis did not start"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        assert not _answers(self.port)


@pytest.fixture
def private_redis(monkeypatch) -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    # the web side of this test process sends through it (Celery reads the variable first)
    monkeypatch.setenv("CELERY_BROKER_URL", redis.url)
    assert celery_app.conf.broker_write_url == redis.url
    yield redis
    redis.stop()


@pytest.fixture
def queue(settings) -> str:
    name = f"retort-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    return name


FAST_DISPATCH = {"RETORT_DISPATCH_SECONDS": "1", "RETORT_REDISPATCH_SECONDS": "2"}


def _queued(demo_project, users) -> Job:
    """A developer's downgrade of dev (no approval needed), queued."""
    dev = env(demo_project, "dev")
    job = planning.job_request(environment=dev, kind="downgrade", target="-1", user=users["bob"])
    return approvals.job_queue(job=job, user=users["bob"])


def _started(job: Job) -> int:
    return AuditEvent.objects.filter(action="job_started", job_id=job.pk).count()


def _finished(job: Job) -> bool:
    job.refresh_from_db()
    return job.is_finished


def test_a_job_queued_while_the_broker_is_down_says_so_and_runs_once_it_is_back(
    demo_project, users, private_redis, queue, start_worker, client
):
    private_redis.stop()

    job = _queued(demo_project, users)
    client.force_login(users["bob"])
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    api = client.get(reverse("api_job", args=[job.pk])).json()

    assert job.status == "queued"
    assert job.dispatched_at is None
    assert "The broker is unreachable, so no worker has it yet" in page
    assert api["dispatch"] == dispatch.BROKER_DOWN

    private_redis.start()
    start_worker(private_redis.url, beat=True, queue=queue, env=FAST_DISPATCH)

    assert wait_for(lambda: _finished(job), seconds=90), job.status
    time.sleep(4)  # the dispatcher looks twice more: nothing runs again
    assert job.status == "succeeded", job.error
    assert _started(job) == 1


def test_a_message_lost_in_a_broker_restart_is_sent_again_and_runs_once(
    demo_project, users, private_redis, queue, start_worker
):
    job = _queued(demo_project, users)
    job.refresh_from_db()
    assert job.dispatched_at is not None  # the broker took the message…

    private_redis.stop()  # …and lost it: no persistence
    private_redis.start()
    start_worker(private_redis.url, beat=True, queue=queue, env=FAST_DISPATCH)

    assert wait_for(lambda: _finished(job), seconds=90), job.status
    time.sleep(4)
    assert job.status == "succeeded", job.error
    assert _started(job) == 1


def test_a_job_sent_twice_runs_once(demo_project, users, private_redis, queue, start_worker):
    job = _queued(demo_project, users)
    for _ in range(3):
        assert dispatch.send("job_run", job.pk)

    start_worker(private_redis.url, queue=queue)

    assert wait_for(lambda: _finished(job), seconds=90), job.status
    time.sleep(2)
    assert job.status == "succeeded", job.error
    assert _started(job) == 1
