"""Figure 9: the dashboard under load — gunicorn, 50 clients, 60 s, on loopback only.

A fresh PostgreSQL dashboard database is seeded with the demo (three SQLite environments) and
served by gunicorn as docker-compose.yml runs it (sync workers, `RETORT_DB_CONN_MAX_AGE=60`).
Fifty client threads, each logged in with its own session, load the overview page one after
another for 60 seconds. Recorded: requests, errors (anything but a 200), latency percentiles,
and the most connections the dashboard database saw at once (sampled every 0.5 s).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
CLIENTS = 50
SECONDS = 60.0
WORKERS = 3


@dataclass
class LoadFigures:
    clients: int
    seconds: float
    workers: int
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    peak_connections: int = 0
    max_connections: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(base: str) -> urllib.request.OpenerDirector:
    """An opener logged in as the demo's viewer (its own session and cookies)."""
    return login(base, "viewer", "retort-demo")


def login(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    """An opener logged in through the login form, with its own session and cookies."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    page = opener.open(f"{base}/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    request = urllib.request.Request(
        f"{base}/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{base}/login/"},
    )
    opener.open(request, timeout=30).read()
    return opener


@contextlib.contextmanager
def served(env: dict[str, str], *, workers: int, timeout: int) -> Iterator[tuple[str, int]]:
    """gunicorn as docker-compose.yml runs it (sync workers) on a free loopback port, once it
    answers /healthz; yields the base URL and the master's pid. Stopped with SIGTERM after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "dashboard.wsgi", "-b",
         f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", str(timeout),
         "--log-level", "warning"],
        cwd=REPO, env={**env, "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or gunicorn.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield base, gunicorn.pid
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gunicorn.kill()


def measure(dashboard_url: str, data_dir: Path, *, log) -> LoadFigures:
    database = dashboard_url.rsplit("/", 1)[1]
    env = {
        **os.environ,
        "DATABASE_URL": dashboard_url,
        "RETORT_DATA_DIR": str(data_dir),
        "RETORT_DB_CONN_MAX_AGE": "60",
    }
    for command in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    figures = LoadFigures(CLIENTS, SECONDS, WORKERS)
    with served(env, workers=WORKERS, timeout=60) as (base, _):
        openers = [_client(base) for _ in range(CLIENTS)]
        log(f"load: {CLIENTS} clients on the overview for {SECONDS:.0f} s ({WORKERS} workers)")
        _run(openers, base, figures, database)
    return figures


def _run(openers, base: str, figures: LoadFigures, database: str) -> None:
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def client(opener) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                with opener.open(f"{base}/", timeout=60) as response:
                    response.read()
                    ok = response.status == 200
                    error = None if ok else f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except OSError as exc:
                error = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                if error is None:
                    figures.latencies.append(elapsed)
                else:
                    figures.errors[error] = figures.errors.get(error, 0) + 1

    threads = [threading.Thread(target=client, args=(opener,)) for opener in openers]
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres") as admin:
        admin.autocommit = True
        cursor = admin.cursor()
        cursor.execute("SHOW max_connections")
        figures.max_connections = int(cursor.fetchone()[0])
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database])
            figures.peak_connections = max(figures.peak_connections, cursor.fetchone()[0])
            time.sleep(0.5)
    for thread in threads:
        thread.join()
