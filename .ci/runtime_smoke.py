"""The runtime install, proven: run with a venv built from requirements.txt alone.

Starts what production runs — gunicorn, a Celery worker with beat on Redis — against a fresh
PostgreSQL dashboard database seeded with the demo, then asks for one job through the API with
a bearer token and waits for the worker to run it. Exits non-zero, printing the logs, if any
part fails. Uses only what requirements.txt installs (no test dependencies).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
BROKER = os.environ.get("SMOKE_BROKER_URL", "redis://127.0.0.1:6379/13")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(statement: str) -> None:
    connection = psycopg2.connect(**PG)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def call(url: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> int:
    name = f"retort_smoke_{uuid.uuid4().hex[:8]}"
    data = Path(tempfile.mkdtemp(prefix="retort-smoke-"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
        "CELERY_BROKER_URL": BROKER,
        "RETORT_CELERY_QUEUE": f"smoke-{name}",
        "RETORT_DATA_DIR": str(data),
        "RETORT_BASE_URL": f"http://127.0.0.1:{port}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECRET_KEY": "smoke-" + uuid.uuid4().hex,
    }
    python = sys.executable
    bin_dir = Path(python).parent
    admin(f'CREATE DATABASE "{name}"')
    processes: list[subprocess.Popen] = []
    logs = {"worker": data / "worker.log", "gunicorn": data / "gunicorn.log"}
    try:
        for command in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
            subprocess.run([python, "manage.py", *command], cwd=REPO, env=env, check=True)
        token = (
            subprocess.run(
                [python, "manage.py", "create_api_token", "developer", "--name", "smoke"],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .split()[-1]
        )
        processes.append(
            subprocess.Popen(
                [str(bin_dir / "celery"), "-A", "dashboard", "worker", "-B", "--loglevel=INFO",
                 "-Q", env["RETORT_CELERY_QUEUE"], "--concurrency=1",
                 "--schedule", str(data / "beat-schedule")],
                cwd=REPO, env=env, stdout=logs["worker"].open("w"), stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        processes.append(
            subprocess.Popen(
                [str(bin_dir / "gunicorn"), "dashboard.wsgi", "-b", f"127.0.0.1:{port}",
                 "--workers", "2", "--timeout", "60"],
                cwd=REPO, env=env, stdout=logs["gunicorn"].open("w"), stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer /healthz within 60 s")
            time.sleep(0.5)
        job = call(
            f"{base}/api/v1/projects/inventory/environments/dev/jobs",
            token,
            {"kind": "downgrade", "target": "-1", "reason": "runtime smoke"},
        )
        print(f"smoke: job #{job['id']} {job['status']}")
        deadline = time.monotonic() + 120
        while job["status"] not in ("succeeded", "failed", "interrupted", "cancelled"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job #{job['id']} is still {job['status']} after 120 s")
            time.sleep(1)
            job = call(f"{base}/api/v1/jobs/{job['id']}", token)
        print(f"smoke: job #{job['id']} {job['status']}, the database holds {job['result_heads']}")
        if job["status"] != "succeeded":
            raise RuntimeError(f"job #{job['id']} {job['status']}")
        return 0
    except Exception as exc:  # noqa: BLE001 - print everything a person needs, then fail
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        for label, path in logs.items():
            if path.exists():
                print(f"--- {label} log ---\n{path.read_text()[-6000:]}", file=sys.stderr)
        return 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
