"""Read settings from environment variables, failing loudly on malformed values."""

import os
import re
import urllib.parse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# SQLAlchemy's URL grammar, dialect+driver://user:password@host:port/database?query: the
# password runs to the last '@' before the host, the database to the query; user, password and
# database are percent-decoded, the host is not
_URL = re.compile(
    r"""(?P<scheme>[\w+]+)://
        (?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?
        (?:(?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
        (?:/(?P<database>[^?]*))?
        (?:\?.*)?$""",
    re.X,
)


def database_from_url(url: str, *, conn_max_age: float = 0) -> dict[str, object]:
    """Django DATABASES entry for a PostgreSQL or SQLite URL, read as SQLAlchemy reads one
    (`sqlite:///relative.db`, `sqlite:////absolute.db`, `postgresql+psycopg2://user:p%40ss@
    host:5432/name`), without importing it: every process reads its settings first, and most
    never need SQLAlchemy.

    `conn_max_age`: seconds a PostgreSQL connection is kept for the next request. Safe only
    where a process serves one request at a time (gunicorn's sync workers): runserver starts a
    thread per request and each kept one connection until the server refused new ones."""
    found = _URL.match(url)
    if found is None:
        raise ImproperlyConfigured("DATABASE_URL is not a valid database URL")
    backend = found["scheme"].partition("+")[0].lower()
    database = urllib.parse.unquote(found["database"] or "")
    if backend == "sqlite":
        # IMMEDIATE: a transaction takes the write lock when it begins, so the web process and
        # the worker queue for it instead of failing with "database is locked" mid-way; the
        # audit chain relies on writers being serialised this way.
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": database or ":memory:",
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    if backend in {"postgresql", "postgres"}:
        port = found["port"] or ""
        if port and not port.isdigit():
            raise ImproperlyConfigured("DATABASE_URL has a port that is not a number")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": urllib.parse.unquote(found["user"] or ""),
            "PASSWORD": urllib.parse.unquote(found["password"] or ""),
            "HOST": found["ipv6"] or found["host"] or "",
            "PORT": str(int(port)) if port else "",
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL uses {backend!r}; the dashboard supports postgresql and sqlite"
    )
