"""Discovering a fleet's tenants, on the workers: a discovery's query runs read-only on its
server; each database (or schema) name it lists that no environment of the discovery has yet
becomes one (labelled, at the URL the template gives, in its schema), one that vanished is
marked gone (kept, with its history, and no longer read), and one that came back is read again.
A failed run changes no environment: a server that cannot answer does not make every tenant
gone."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg2
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify
from sqlalchemy.exc import SQLAlchemyError

from environments.audit import audit_record
from environments.core import tenants
from environments.core.database_urls import redact, server_engine
from environments.core.versions import Failure, classify
from environments.models import Discovery, Environment

logger = logging.getLogger(__name__)

MAX_TENANTS = 10_000  # a query that lists more is refused: it is not listing tenants
QUERY_TIMEOUT_MS = 30_000  # the query's time on the server; beat's next run tries again


@dataclass
class DiscoveryRun:
    found: int = 0
    added: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names that cannot be registered, why
    error: str = ""


class DiscoveryFailed(Exception):
    """The server could not be asked: a sentence for the discovery's page."""


def tenant_url(template: str, name: str) -> str:
    """The template with the tenant's name in place of `{name}`, quoted for a URL."""
    return template.replace("{name}", quote(name, safe=""))


def _names(discovery: Discovery) -> list[str]:
    """The first column of the discovery's query, run in a read-only transaction."""
    url = discovery.server_url
    engine = server_engine(url, timeout=settings.RETORT_CONNECT_TIMEOUT)
    try:
        with engine.connect() as connection:
            # the driver's own cursor, so the query runs as written: no bind parameter is read
            # into a ':' or a '%' of it
            cursor = connection.connection.cursor()
            try:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
                cursor.execute(discovery.query)
                rows = cursor.fetchmany(MAX_TENANTS + 1)
            finally:
                cursor.close()
                connection.rollback()
    except (SQLAlchemyError, psycopg2.Error) as exc:
        kind, sentence = classify(exc)
        if kind is Failure.ERROR:  # the server answered: the query is what failed
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            sentence = f"The discovery's query failed: {detail}"
        raise DiscoveryFailed(redact(sentence, url)) from exc
    finally:
        engine.dispose()
    if len(rows) > MAX_TENANTS:
        raise DiscoveryFailed(f"The query listed more than {MAX_TENANTS:,} names.")
    return sorted({str(row[0]) for row in rows if row and row[0] is not None})


def discovery_run(*, discovery: Discovery) -> DiscoveryRun:
    """Ask the server for its tenants and bring the discovery's environments in line."""
    run = DiscoveryRun()
    try:
        names = _names(discovery)
    except DiscoveryFailed as exc:
        run.error = str(exc)
        Discovery.objects.filter(pk=discovery.pk).update(checked_at=timezone.now(), error=run.error)
        return run
    run.found = len(names)
    with transaction.atomic():
        _reconcile(discovery, names, run)
        Discovery.objects.filter(pk=discovery.pk).update(
            checked_at=timezone.now(),
            found=run.found,
            error="; ".join(run.skipped),
        )
    return run


def _reconcile(discovery: Discovery, names: list[str], run: DiscoveryRun) -> None:
    project = discovery.project
    mine = {environment.name: environment for environment in discovery.environments.all()}
    registered = list(project.environments.values_list("name", "slug"))
    taken = {name for name, _ in registered}
    slugs = {slug for _, slug in registered}
    position = (project.environments.aggregate(last=Max("position"))["last"] or 0) + 1
    template = discovery.url_template
    now = timezone.now()
    for name in names:
        environment = mine.get(name)
        if environment is None:
            slug = slugify(name)[:100]
            environment = Environment(
                project=project,
                name=name,
                slug=slug,
                position=position,
                labels=dict(discovery.labels),
                discovered_by=discovery,
            )
            problem = _problem(name, slug, taken, slugs)
            if discovery.kind == Discovery.Kind.SCHEMAS:
                environment.schema = name
                problem = problem or tenants.schema_problem(name)
            try:
                environment.set_url(tenant_url(template, name))  # refuses what does not parse
            except ValueError as exc:
                problem = problem or f"{name!r}: {exc}"
            if problem:
                run.skipped.append(problem)
                continue
            environment.save()
            position += 1
            slugs.add(environment.slug)
            run.added.append(name)
            _audit("tenant_discovered", discovery, environment)
        elif environment.gone_at is not None:
            environment.gone_at = None
            environment.save()
            run.returned.append(name)
            _audit("tenant_returned", discovery, environment)
    listed = set(names)
    for name, environment in mine.items():
        if name not in listed and environment.gone_at is None:
            environment.gone_at = now
            environment.save()
            run.gone.append(name)
            _audit("tenant_gone", discovery, environment)


def _problem(name: str, slug: str, taken: set[str], slugs: set[str]) -> str | None:
    if len(name) > 100 or not slug:
        return f"{name[:60]!r} cannot be an environment's name"
    if name in taken or slug in slugs:
        return f"{name!r} is already an environment of the project, not one this discovery found"
    return None


def _audit(action: str, discovery: Discovery, environment: Environment) -> None:
    audit_record(
        action=action,
        project=discovery.project,
        environment=environment,
        details={"discovery": discovery.name, "name": environment.name},
        system_actor="discovery",
    )


def discoveries_run() -> int:
    """Run every discovery (beat's task); each failure is recorded on its own discovery."""
    count = 0
    for discovery in Discovery.objects.select_related("project"):
        run = discovery_run(discovery=discovery)
        if run.error:
            logger.warning("Discovery %s failed: %s", discovery, run.error)
        count += 1
    return count
