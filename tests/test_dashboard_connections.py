"""The dashboard does not hoard database connections: runserver starts a thread per request,
and a connection kept per thread once exhausted the server's max_connections under load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import psycopg2
import pytest
from django.db import connection

from tests.conftest import REPO, dashboard_database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sessions(database: str) -> int:
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres") as admin:
        cursor = admin.cursor()
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        )
        return cursor.fetchone()[0]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_runserver_keeps_no_connection_per_request_thread():
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL dashboard database used in CI")
    database = connection.settings_dict["NAME"]
    connection.close()  # this process's own, so the count is the server's alone
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RETORT_DB_CONN_MAX_AGE"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=REPO,
        env=env | {"DATABASE_URL": dashboard_database_url()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), seconds=30)
        before = _sessions(database)
        for _ in range(30):  # each request is served by a new thread
            assert _answers(f"http://127.0.0.1:{port}/healthz")
        after = _sessions(database)
    finally:
        server.terminate()
        server.wait(timeout=20)

    assert after - before <= 2, f"{after - before} connections left open by 30 requests"
