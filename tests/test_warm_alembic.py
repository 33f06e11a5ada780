"""alembic forked from a warm parent behaves as the command started cold: the same exit status
and output, the run's own environment and working directory, a fresh process per run with no
state of the last, killed at its timeout, and a dead warm parent replaced (real SQLite files,
real alembic processes)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from environments.core import runner
from tests.conftest import EXAMPLE, wait_for, write_revision

PROBE = """import importlib, json, os, sys
    op.execute("CREATE TABLE probe (pid INT, parent INT, note TEXT, cwd TEXT, leak INT)")
    json.LEAK = getattr(json, "LEAK", 0) + 1
    local = importlib.import_module("localhelper")
    op.get_bind().exec_driver_sql(
        "INSERT INTO probe VALUES (?, ?, ?, ?, ?)",
        (os.getpid(), os.getppid(), os.environ.get("RETORT_NOTE", ""), local.WHERE, json.LEAK),
    )"""


@pytest.fixture
def project(tmp_path) -> Path:
    """The sample's env.py, r1 (a probe of the process that ran it), r2 (sleeps when asked),
    and a module beside alembic.ini that r1 imports as `python -m` would let it."""
    root = tmp_path / "proj"
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(EXAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")
    (root / "localhelper.py").write_text("import os\nWHERE = os.getcwd()\n")
    write_revision(versions, "r1", None, message="probe", body=PROBE)
    write_revision(
        versions,
        "r2",
        "r1",
        message="sleeps",
        body="import os, time\n"
        '    if os.environ.get("RETORT_PRINT_URL"):\n'
        '        print("migrating", os.environ["DATABASE_URL"])\n'
        '    time.sleep(float(os.environ.get("RETORT_SLEEP", "0")))',
    )
    return root


def alembic(project: Path, database: Path, *args: str, warm: bool = True, **options):
    return runner.run_alembic(
        runner.DEFAULT_COMMAND,
        list(args),
        url=f"sqlite:///{database}",
        working_dir=project,
        python=sys.executable,
        warm=warm,
        **options,
    )


def probe(database: Path) -> tuple:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT pid, parent, note, cwd, leak FROM probe").fetchone()


def versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]


def test_a_warm_run_migrates_in_a_process_of_its_own_with_the_runs_environment(project, tmp_path):
    first, second = tmp_path / "a.db", tmp_path / "b.db"

    one = alembic(project, first, "upgrade", "r1", extra_env={"RETORT_NOTE": "first"})
    two = alembic(project, second, "upgrade", "r1", extra_env={"RETORT_NOTE": "second"})

    assert one.ok and two.ok
    assert "Running upgrade  -> r1, probe" in one.output
    assert versions(first) == versions(second) == ["r1"]
    (pid_a, parent_a, note_a, cwd_a, leak_a) = probe(first)
    (pid_b, parent_b, note_b, cwd_b, leak_b) = probe(second)
    # a new process each time, neither of them this one, forked by the same warm parent
    assert len({pid_a, pid_b, os.getpid()}) == 3
    assert parent_a == parent_b != os.getpid()
    assert (note_a, note_b) == ("first", "second")
    assert cwd_a == cwd_b == str(project)
    # what one run changed in a module is gone for the next
    assert leak_a == leak_b == 1


def test_a_warm_run_fails_as_the_command_does(project, tmp_path):
    database = tmp_path / "c.db"

    warm = alembic(project, database, "upgrade", "nonesuch")
    cold = alembic(project, database, "upgrade", "nonesuch", warm=False)

    assert warm.exit_code == cold.exit_code == 255
    assert "Can't locate revision identified by 'nonesuch'" in warm.output
    assert warm.output.splitlines()[-1] == cold.output.splitlines()[-1]


def test_a_warm_run_keeps_sql_apart_and_hides_the_password(project, tmp_path):
    url = "postgresql://retort:s3cret-pw@127.0.0.1:1/none"

    result = runner.run_alembic(
        runner.DEFAULT_COMMAND,
        ["upgrade", "r1:r2", "--sql"],
        url=url,
        working_dir=project,
        python=sys.executable,
        separate_stdout=True,
        extra_env={"RETORT_PRINT_URL": "1"},
    )

    assert result.ok, result.output
    assert "UPDATE alembic_version SET version_num='r2'" in result.stdout
    assert "Generating static SQL" in result.output
    assert "UPDATE alembic_version" not in result.output
    # the revision printed the URL it was given: what Retort keeps has no password in it
    assert "migrating postgresql://retort:" in result.stdout
    assert "s3cret-pw" not in result.output + result.stdout


def test_a_warm_run_past_its_timeout_is_killed_and_leaves_the_database_as_it_was(project, tmp_path):
    database = tmp_path / "d.db"
    assert alembic(project, database, "upgrade", "r1").ok
    started = time.monotonic()

    with pytest.raises(runner.RunnerError, match="did not finish within 2 seconds"):
        alembic(project, database, "upgrade", "r2", timeout=2, extra_env={"RETORT_SLEEP": "60"})

    assert time.monotonic() - started < 10
    assert versions(database) == ["r1"]
    assert alembic(project, database, "upgrade", "r2").ok  # and the next run goes on
    assert versions(database) == ["r2"]


def test_a_killed_warm_parent_fails_the_run_it_was_serving_and_the_next_run_starts_a_new_one(
    project, tmp_path
):
    database = tmp_path / "e.db"
    assert alembic(project, database, "upgrade", "r1").ok
    parent = probe(database)[1]

    def kill_parent(line: str) -> None:
        if "Running upgrade r1 -> r2" in line:
            os.kill(parent, signal.SIGKILL)

    result = alembic(
        project, database, "upgrade", "r2", on_line=kill_parent, extra_env={"RETORT_SLEEP": "30"}
    )

    assert result.exit_code == -signal.SIGKILL
    assert versions(database) == ["r1"]
    other = tmp_path / "f.db"
    assert alembic(project, other, "upgrade", "r1").ok
    assert probe(other)[1] not in (parent, os.getpid())


def test_only_this_interpreters_alembic_is_started_warm():
    python = sys.executable
    same = dict(os.environ)

    assert runner.warm_eligible([python, "-m", "alembic", "upgrade", "head"], same)
    assert not runner.warm_eligible(["/other/venv/bin/python", "-m", "alembic"], same)
    assert not runner.warm_eligible(["./run-alembic.sh", "upgrade", "head"], same)
    assert not runner.warm_eligible([python, "manage.py", "migrate"], same)
    assert not runner.warm_eligible(
        [python, "-m", "alembic"], {**same, "PYTHONPATH": "/somewhere/else"}
    )


def test_a_warm_parent_that_does_not_answer_is_stopped_and_the_run_not_started_twice(
    project, tmp_path, monkeypatch
):
    database = tmp_path / "g.db"
    assert alembic(project, database, "upgrade", "r1").ok
    parent = probe(database)[1]
    monkeypatch.setattr(runner, "WARM_START_SECONDS", 1)
    os.kill(parent, signal.SIGSTOP)  # alive, but it will not fork or answer

    with pytest.raises(runner.RunnerError, match="warm parent did not answer within 1 second"):
        alembic(project, database, "upgrade", "r2")

    assert versions(database) == ["r1"]  # not run warm, not run cold either
    assert wait_for(lambda: not Path(f"/proc/{parent}").exists(), seconds=5)
    assert alembic(project, database, "upgrade", "r2").ok
    assert versions(database) == ["r2"]


def test_warm_runs_leave_no_descriptor_open_whatever_their_end(project, tmp_path):
    database = tmp_path / "h.db"
    assert alembic(project, database, "upgrade", "r1").ok  # the warm parent is started
    before = sorted(os.listdir("/proc/self/fd"))

    assert alembic(project, database, "upgrade", "nonesuch").exit_code == 255
    with pytest.raises(runner.RunnerError, match="did not finish within 1 second"):
        alembic(project, database, "upgrade", "r2", timeout=1, extra_env={"RETORT_SLEEP": "30"})
    with pytest.raises(runner.RunnerError, match="Could not start"):
        alembic(tmp_path / "no-such-folder", database, "upgrade", "r2")
    assert alembic(project, database, "upgrade", "r1:r2", "--sql", separate_stdout=True).ok
    assert alembic(project, database, "upgrade", "r2").ok

    assert sorted(os.listdir("/proc/self/fd")) == before
    assert versions(database) == ["r2"]
