"""Expected-schema drift: the schema an environment should have, built by running the
project's own migrations from base to its revision on a scratch database of the same dialect
(in a worker), then compared with the live schema.

A scratch SQLite database is a file under RETORT_DATA_DIR/scratch; a scratch PostgreSQL
database is created on RETORT_SCRATCH_POSTGRES_URL's server if set, else on the environment's
own server (its login needs CREATEDB), and always dropped afterwards. Built schemas are kept
per project, revision, dialect and revision files' contents.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa
from django.conf import settings
from django.db import IntegrityError

from environments.core import schema as core_schema
from environments.core.database_urls import redact, server_engine, sync_url
from environments.core.runner import RunnerError
from environments.models import Environment, ExpectedSchema, Project, UrlUnavailable
from environments.planning import scripts_digest


class ExpectedSchemaError(Exception):
    """The expected schema could not be built; the message says why, in words."""


def schema_to_json(found: core_schema.Schema) -> str:
    return json.dumps(asdict(found), sort_keys=True)


def schema_from_json(text: str) -> core_schema.Schema:
    raw = json.loads(text)
    found = core_schema.Schema(dialect=raw["dialect"])
    for name, table in raw["tables"].items():
        found.tables[name] = core_schema.Table(
            name=name,
            columns={k: core_schema.Column(**c) for k, c in table["columns"].items()},
            primary_key=tuple(table["primary_key"]),
            indexes=[
                core_schema.Index(i["name"], tuple(i["columns"]), i["unique"])
                for i in table["indexes"]
            ],
            uniques=[tuple(u) for u in table["uniques"]],
            foreign_keys=[
                core_schema.ForeignKey(
                    **(
                        fk
                        | {
                            "columns": tuple(fk["columns"]),
                            "referred_columns": tuple(fk["referred_columns"]),
                        }
                    )
                )
                for fk in table["foreign_keys"]
            ],
            checks=list(table["checks"]),
        )
    return found


def _key(heads) -> str:
    return " ".join(sorted(heads))


def cache_key(project: Project, heads, dialect: str) -> dict | None:
    """The lookup for a built schema, or None when the scripts cannot be read."""
    index, _ = project.load_scripts()
    if index is None or index.revision_map is None:
        return None
    known = [h for h in heads if index.knows(h)]
    applied = list(reversed(index.applied(known))) if known else []
    return {
        "project": project,
        "heads_key": _key(heads),
        "dialect": dialect,
        "scripts_sha256": scripts_digest(index, applied) or "0" * 64,
    }


@contextlib.contextmanager
def scratch_database(dialect: str, like_url: str, name: str | None = None) -> Iterator[str]:
    """A new, empty database of `dialect` (named `name`, else a random name), dropped
    afterwards."""
    name = name or f"retort_scratch_{uuid.uuid4().hex[:12]}"
    if dialect == "sqlite":
        folder = Path(settings.DATA_DIR, "scratch")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.sqlite"
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
        return
    if dialect != "postgresql":
        raise ExpectedSchemaError(
            f"Expected schemas are built for SQLite and PostgreSQL, not {dialect}."
        )
    server, admin = _scratch_server(like_url)
    try:
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.DBAPIError as exc:
            raise ExpectedSchemaError(
                redact(f"Could not create a scratch database: {exc.orig}", str(server))
                + " Give Retort's login CREATEDB, or set RETORT_SCRATCH_POSTGRES_URL."
            ) from None
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            scratch_drop(admin, name)
    finally:
        admin.dispose()


def _scratch_server(like_url: str):
    """The server scratch PostgreSQL databases are made on, and an engine on its "postgres"."""
    server = sync_url(settings.RETORT_SCRATCH_POSTGRES_URL or like_url)
    admin = server_engine(
        server, timeout=settings.RETORT_CONNECT_TIMEOUT, autocommit=True, database="postgres"
    )
    return server, admin


def scratch_drop(admin, name: str) -> None:
    """Drop the scratch database `name` on the server `admin` connects to (if it is there)."""
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def scratch_leftover_drop(like_url: str, name: str) -> None:
    """Drop a named scratch PostgreSQL database a killed worker left behind."""
    _, admin = _scratch_server(like_url)
    try:
        scratch_drop(admin, name)
    finally:
        admin.dispose()


def build(*, environment: Environment, heads, dialect: str) -> ExpectedSchema:
    """Build (or find) the expected schema for `heads`; errors are stored, not raised."""
    project = environment.project
    key = cache_key(project, heads, dialect)
    if key is None:
        raise ExpectedSchemaError("The scripts cannot be read.")
    found = ExpectedSchema.objects.filter(**key).first()
    if found is not None:
        return found
    started = time.monotonic()
    schema_json, error = "", ""
    try:
        url = environment.get_url()
        with scratch_database(dialect, url) as scratch:
            for head in sorted(heads):
                result = project.run_alembic(
                    ["upgrade", head], url=scratch, timeout=settings.RETORT_JOB_TIMEOUT
                )
                if not result.ok:
                    last = [line for line in result.output.splitlines() if line.strip()][-3:]
                    raise ExpectedSchemaError(
                        "The migrations failed on a scratch database: " + " ".join(last)
                    )
            built = core_schema.read_schema(
                scratch,
                schema=project.version_table_schema or None,
                exclude=[project.version_table or "alembic_version"],
            )
            schema_json = schema_to_json(built)
    except (ExpectedSchemaError, UrlUnavailable, RunnerError, core_schema.SchemaReadError) as exc:
        error = str(exc)
    duration = int((time.monotonic() - started) * 1000)
    try:
        return ExpectedSchema.objects.create(
            **key, schema_json=schema_json, error=error, duration_ms=duration
        )
    except IntegrityError:  # built at the same time elsewhere
        return ExpectedSchema.objects.get(**key)


def compare_with_expected(
    environment: Environment, expected: ExpectedSchema, live: core_schema.Schema
) -> list[core_schema.Difference]:
    """The live schema against what its migrations build, said from the environment's side:
    "prod has index … that no migration creates"."""
    return core_schema.compare_schemas(
        schema_from_json(expected.schema_json),
        live,
        left_name="its migrations",
        right_name=environment.name,
        phrasing=lambda has, thing: (
            f"{environment.name} has {thing} that no migration creates"
            if has == environment.name
            else f"{environment.name} lacks {thing} that its migrations create"
        ),
    )
