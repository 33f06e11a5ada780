"""Webhook notifications (issue #6): a receiver on 127.0.0.1 inside the test hears a prod
upgrade's story in order, sent by a real Celery worker; a dead or silent receiver never stops
a job; a receiver that fails once gets the message again, still in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from environments import approvals, notify
from environments.models import Job, Notification
from tests.conftest import approve, env, requested, wait_for


class Receiver:
    """An HTTP server that records every JSON body POSTed to it; answers `statuses` in turn
    (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret-key"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def events(self) -> list[str]:
        return [body["event"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def hook(project, url: str) -> None:
    project.set_webhook_url(url)
    project.save()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_prod_upgrade_is_told_in_order_requested_approved_approved_finished(
    policed, people, receiver, start_worker, settings
):
    settings.CELERY_TASK_DEFAULT_QUEUE = start_worker()
    hook(policed, receiver.url)
    job = requested(env(policed, "prod"), people["bob"])
    approve(job, people["alice"], comment="<!channel> ship it & go")
    job = approve(job, people["carol"])

    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished)
    assert wait_for(lambda: len(receiver.bodies) == 4), receiver.events

    assert receiver.events == ["job_requested", "job_approved", "job_approved", "job_finished"]
    requested_text, first, second, done = (body["text"] for body in receiver.bodies)
    assert requested_text.startswith("bob asks to upgrade *inventory/prod*")
    assert "2 approvals needed" in requested_text and f"|job #{job.pk}>" in requested_text
    assert "alice approved" in first and "(1 of 2)" in first
    assert "&lt;!channel&gt; ship it &amp; go" in first  # no @channel, no forged link
    assert "carol approved" in second and "(2 of 2)" in second
    assert done.startswith("<http://") and "succeeded" in done
    assert receiver.bodies[-1]["job"]["status"] == "succeeded"
    assert receiver.bodies[1]["approvals"] == {"given": 1, "required": 2}
    # the sender marks a message sent once the receiver has answered: a moment after it got it
    assert wait_for(
        lambda: set(Notification.objects.values_list("state", flat=True)) == {"sent"}, seconds=15
    ), list(Notification.objects.values_list("event", "state"))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_dead_receiver_does_not_stop_the_job(
    policed, people, closed_port, start_worker, settings
):
    queue = start_worker(env={"RETORT_WEBHOOK_ATTEMPTS": "2", "RETORT_WEBHOOK_BACKOFF": "0.5"})
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    hook(policed, f"http://127.0.0.1:{closed_port}/hook")

    job = requested(env(policed, "dev"), people["bob"], target="-1", kind="downgrade")

    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished)
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    assert wait_for(lambda: Notification.objects.filter(state="failed").exists())
    message = Notification.objects.get()
    assert message.event == "job_finished" and message.attempts == 2
    assert message.last_error.startswith("the receiver could not be reached")
    assert str(closed_port) not in message.last_error  # errors never carry the URL


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_never_answers_costs_its_timeout_not_the_job(
    policed, people, silent_server, start_worker, settings
):
    queue = start_worker(env={"RETORT_WEBHOOK_ATTEMPTS": "1", "RETORT_WEBHOOK_TIMEOUT": "1"})
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    hook(policed, f"http://127.0.0.1:{silent_server}/hook")
    dev = env(policed, "dev")

    first = requested(dev, people["bob"], target="-1", kind="downgrade")
    assert wait_for(lambda: Job.objects.get(pk=first.pk).is_finished)
    second = requested(dev, people["bob"], target="-1", kind="downgrade")

    assert wait_for(lambda: Job.objects.get(pk=second.pk).is_finished, seconds=30)
    assert Job.objects.get(pk=second.pk).status == "succeeded"
    assert wait_for(lambda: Notification.objects.filter(state="failed").count() == 2)
    assert set(Notification.objects.values_list("last_error", flat=True)) == {
        "the receiver could not be reached within 1 s"
    }


@pytest.mark.django_db
def test_a_receiver_failing_once_gets_the_message_again_and_the_order_holds(
    policed, people, settings
):
    settings.RETORT_WEBHOOK_BACKOFF = 0
    failing = Receiver(statuses=[500])
    try:
        hook(policed, failing.url)
        job = requested(env(policed, "prod"), people["bob"])
        approve(job, people["alice"])
        job = approvals.job_decide(
            job=job, user=people["carol"], decision="reject", plan_sha256=job.plan_sha256
        )

        assert notify.notifications_send(policed.pk) == 3
    finally:
        failing.close()

    assert failing.events == ["job_requested", "job_requested", "job_approved", "job_rejected"]
    first = Notification.objects.order_by("id").first()
    assert first.attempts == 2 and first.state == "sent"


@pytest.mark.django_db
def test_without_a_webhook_nothing_is_queued(policed, people, settings):
    settings.RETORT_WEBHOOK_URL = ""

    requested(env(policed, "prod"), people["bob"])

    assert Notification.objects.count() == 0


# --- a receiver is only ever the receiver ---------------------------------------------------


@pytest.mark.django_db(transaction=True)  # two senders in two threads
def test_a_dead_receiver_delays_only_its_own_project(
    policed, silent_server, make_project, inventory, settings
):
    settings.RETORT_WEBHOOK_TIMEOUT = 5
    settings.RETORT_WEBHOOK_ATTEMPTS = 1
    hook(policed, f"http://127.0.0.1:{silent_server}/hook")
    other = make_project(inventory, name="b", slug="b")
    listening = Receiver()
    hook(other, listening.url)
    for project in (policed, other):  # one message waiting in each project's outbox
        Notification.objects.create(
            project=project, event="job_requested", payload={"event": "job_requested"}
        )

    def send_inventory() -> None:
        try:
            notify.notifications_send(policed.pk)
        finally:
            connection.close()  # this thread's own

    stuck = threading.Thread(target=send_inventory)
    stuck.start()
    try:
        assert wait_for(lambda: stuck.is_alive(), seconds=2)
        delivered = notify.notifications_send(other.pk)
        still_waiting = stuck.is_alive()
    finally:
        stuck.join(timeout=20)
        listening.close()

    assert delivered == 1 and listening.events == ["job_requested"]
    assert still_waiting  # project b was told while project inventory's receiver hung


def test_a_redirect_is_not_followed(settings):
    inside = Receiver()

    class Redirector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(307)
            self.send_header("Location", inside.url)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        error = notify.post(
            f"http://127.0.0.1:{server.server_port}/hook", {"text": "hi"}, timeout=5
        )
    finally:
        server.shutdown()
        inside.close()

    assert error == "the receiver answered HTTP 307; redirects are not followed"
    assert inside.bodies == []


def test_a_closed_port_and_a_silent_one_read_the_same(closed_port, silent_server):
    closed = notify.post(f"http://127.0.0.1:{closed_port}/", {}, timeout=1)
    silent = notify.post(f"http://127.0.0.1:{silent_server}/", {}, timeout=1)

    assert closed == silent == "the receiver could not be reached within 1 s"


@pytest.mark.django_db
def test_the_allow_list_refuses_other_hosts_everywhere(settings, policed, tmp_path):
    from environments.configfile import ConfigError, apply
    from environments.forms import ProjectForm

    settings.RETORT_WEBHOOK_HOSTS = ["hooks.slack.com"]
    internal = "http://169.254.169.254/latest/meta-data"

    form = ProjectForm(data={"webhook_url": internal}, instance=policed)
    form.is_valid()
    with pytest.raises(ConfigError, match="not one of RETORT_WEBHOOK_HOSTS"):
        apply(
            {"project": [{"name": "x", "script_location": "m", "webhook_url": internal}]},
            tmp_path,
        )

    assert "not one of RETORT_WEBHOOK_HOSTS (hooks.slack.com)" in form.errors["webhook_url"][0]
    assert notify.post(internal, {}, timeout=1).startswith("The webhook's host is not one of")
