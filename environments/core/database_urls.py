"""Database URLs, in one place for the core and the Django side alike: parsed (refusing one
that parses two ways), mapped to the sync driver Retort connects with, shown and logged without
their password, and turned into an engine that connects within a timeout.

SQLAlchemy is imported when a URL is first parsed, not with this module: the models import it,
and a command that reads no URL (or the CI gate's quick read) starts without SQLAlchemy."""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

# Drivers applications use in their own config, mapped to the sync driver Retort reads with.
# Plain `postgresql://` means psycopg (v3) to SQLAlchemy 2.1; Retort ships psycopg2.
_SYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgresql+asyncpg": "postgresql+psycopg2",
    "postgresql+psycopg_async": "postgresql+psycopg2",
    "postgresql+psycopg": "postgresql+psycopg2",
    "postgresql+pg8000": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "sqlite+pysqlcipher": "sqlite+pysqlite",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
}


def parse(url: str) -> URL | None:
    """SQLAlchemy's reading of `url`; None when it is not a database URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def sync_url(url: str | URL) -> URL:
    """The URL Retort connects with: async drivers swapped for their sync counterparts.
    Raises ValueError for a string that is not a database URL."""
    parsed = parse(url) if isinstance(url, str) else url
    if parsed is None:
        raise ValueError("not a database URL")
    name = parsed.drivername
    if name in _SYNC_DRIVERS:
        parsed = parsed.set(drivername=_SYNC_DRIVERS[name])
    return parsed


def redact(text: str, url: str | URL | None) -> str:
    """Remove the URL's password (plain and percent-encoded) from a message."""
    if url is None:
        return text
    if isinstance(url, str) and url_problem(url) == AMBIGUOUS_URL:
        # where the password ends is not known: hide everything before the host's last '@'
        userinfo = url.partition("://")[2].rpartition("@")[0]
        return text.replace(userinfo, "***") if userinfo else text
    parsed = parse(url) if isinstance(url, str) else url
    password = parsed.password if parsed is not None else None
    if password:
        for form in {
            str(password),
            urllib.parse.quote(str(password), safe=""),
            urllib.parse.quote_plus(str(password)),
        }:
            if form:
                text = text.replace(form, "***")
    return text


AMBIGUOUS_URL = (
    "This URL cannot be read unambiguously: its user name or password seems to hold '@', "
    "'/', '?' or '#'. Percent-encode those characters (@ as %40, / as %2F, ? as %3F, # as "
    "%23) and enter the URL again."
)


def _authority(url: str) -> tuple[str, str]:
    """The part of `url` between :// and the first /, ? or #, and what follows it."""
    rest = url.partition("://")[2]
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    end = min(ends) if ends else len(rest)
    return rest[:end], rest[end:]


def url_problem(url: str) -> str | None:
    """Why `url` cannot be registered as written; None when it parses one way only.

    A password with an unencoded '@' (or '/', '?', '#') is split by SQLAlchemy at the wrong
    place: the rest of the password becomes the host name, shown on pages and looked up in DNS.
    """
    parsed = parse(url)
    if parsed is None:
        return "This is not a database URL (dialect://user:password@host:port/database)."
    if parsed.get_backend_name() == "sqlite":
        return None  # a file path, which may hold any character
    return AMBIGUOUS_URL if ambiguous_authority(url) else None


def ambiguous_authority(url: str) -> bool:
    """Whether the user name or password seems to hold an unencoded '@', '/', '?' or '#'
    (`url_problem`, for a URL that is not a SQLite file's)."""
    authority, remainder = _authority(url)
    return authority.count("@") > 1 or ("@" in remainder and "@" not in authority)


def display_url(url: str) -> str:
    """The URL as it may be shown: never with its password, nor any part of one."""
    parsed = parse(url)
    if parsed is None:
        return "(not a valid database URL)"
    if url_problem(url):
        return f"{url.partition('://')[0]}://***"
    return parsed.render_as_string(hide_password=True)


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][\w+.-]*://[^\s:/@]*:)(?P<password>[^\s@/]+)(?=@)")


def redact_urls(text: str) -> str:
    """Mask the password of every `scheme://user:password@host` URL found in free text."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)


def connect_args(target: URL, timeout: float, statement_timeout: float | None) -> dict:
    """The driver's arguments to connect within `timeout` seconds and let a statement run for
    `statement_timeout` (None: as long as `timeout`; 0: no limit)."""
    backend = target.get_backend_name()
    if backend == "postgresql":
        return postgres_connect_args(timeout, statement_timeout)
    if backend in {"mysql", "mariadb"}:
        return {"connect_timeout": max(1, math.ceil(timeout))}
    return {}


def postgres_connect_args(timeout: float, statement_timeout: float | None) -> dict:
    """psycopg2's arguments for `connect_args`."""
    # libpq counts whole seconds and treats anything under 2 as 2.
    found = {"connect_timeout": max(2, math.ceil(timeout)), "application_name": "retort"}
    if statement_timeout != 0:
        statement_ms = int((statement_timeout or timeout) * 1000)
        found["options"] = f"-c statement_timeout={statement_ms}"
    return found


def server_engine(
    url: str | URL, *, timeout: float, autocommit: bool = False, database: str | None = None
) -> Engine:
    """A NullPool engine for work on a server (a lock, CREATE DATABASE), not a version read:
    it connects within `timeout` seconds; `database` connects to another database of the same
    server (e.g. "postgres")."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    target = sync_url(url)
    if database is not None:
        target = target.set(database=database)
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_engine(
        target,
        poolclass=NullPool,
        connect_args=connect_args(target, timeout, statement_timeout=0),
        **options,
    )
