"""DATABASE_URL, read without SQLAlchemy at start-up, means what it means to SQLAlchemy."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.engine import make_url

from dashboard.lib.env import database_from_url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/retort.sqlite3",
        "sqlite:////srv/retort/with space.sqlite3",
        "sqlite:////srv/retort/encoded%20name.sqlite3",
        "sqlite+pysqlite:///relative/dir/x.db",
        "postgresql://postgres@127.0.0.1:5432/retort",
        "postgresql+psycopg2://app:p%40ss%2Fw%3Ard@db.example.com:6543/na%20me",
        "postgresql://app@db/retort?sslmode=require",
        "postgresql://app:secret@[::1]:5433/retort",
        "postgresql:///local_socket_db",
        "postgresql://app:pa/ss#word@DB.Example.com/retort",  # unencoded: SQLAlchemy's reading
        "postgresql://app@%2Fvar%2Frun%2FPostgreSQL/retort",
    ],
)
def test_a_database_url_reads_as_sqlalchemy_reads_it(url):
    entry = database_from_url(url, conn_max_age=60)
    parsed = make_url(url)

    if parsed.get_backend_name() == "sqlite":
        assert entry["ENGINE"] == "django.db.backends.sqlite3"
        assert entry["NAME"] == parsed.database
    else:
        assert entry["ENGINE"] == "django.db.backends.postgresql"
        assert entry["NAME"] == parsed.database
        assert entry["USER"] == (parsed.username or "")
        assert entry["PASSWORD"] == (parsed.password or "")
        assert entry["HOST"] == (parsed.host or "")
        assert entry["PORT"] == str(parsed.port or "")
        assert entry["CONN_MAX_AGE"] == 60


def test_a_bare_sqlite_url_is_an_in_memory_database():
    assert database_from_url("sqlite://")["NAME"] == ":memory:"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://app@db/retort", "DATABASE_URL uses 'mysql'; the dashboard supports"),
        ("/var/retort.sqlite3", "DATABASE_URL is not a valid database URL"),
        ("postgresql://app@db:port/retort", "DATABASE_URL has a port that is not a number"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_refused_in_words(url, said):
    with pytest.raises(ImproperlyConfigured, match=said):
        database_from_url(url)
