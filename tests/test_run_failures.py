"""A failed alembic run leads with its cause, found in what alembic printed."""

from __future__ import annotations

from environments.core.failures import read_failure

SQLITE_TRACEBACK = """INFO  [alembic.runtime.migration] Running upgrade 1a -> 2b, add notes
Traceback (most recent call last):
  File "/x/site-packages/sqlalchemy/engine/base.py", line 1967, in _exec_single_context
    self.dialect.do_execute(
sqlite3.OperationalError: table audit_notes already exists

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) table audit_notes already exists
[SQL:
CREATE TABLE audit_notes (id INTEGER NOT NULL)
]
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""


def test_the_cause_is_the_last_exception_line_without_the_drivers_prefix():
    failure = read_failure(SQLITE_TRACEBACK, ["1a", "2b"])

    assert failure.cause == "table audit_notes already exists"
    assert (failure.revision, failure.step) == ("2b", 2)


def test_alembics_own_failed_line_is_the_cause():
    output = "FAILED: Can't locate revision identified by 'deadbeef'\n"

    failure = read_failure(output, ["1a"])

    assert failure.cause == "Can't locate revision identified by 'deadbeef'"
    assert failure.revision is None and failure.step == 0


def test_a_downgrade_failing_names_the_revision_it_was_leaving():
    output = (
        "INFO  [alembic.runtime.migration] Running downgrade 3c -> 2b, drop notes\n"
        "psycopg2.errors.DependentObjectsStillExist: cannot drop table notes because other "
        "objects depend on it\n"
    )

    failure = read_failure(output, ["3c", "2b"])

    assert failure.revision == "3c" and failure.step == 1
    assert failure.cause.startswith("cannot drop table notes")
