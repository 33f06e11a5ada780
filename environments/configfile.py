"""Declarative registry: projects and environments from a TOML file, applied idempotently.

The format is documented in README.md ("Configuration file"). Relative paths, including the
path of a `sqlite:///relative.db` URL, resolve against the TOML file's folder.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.text import slugify
from sqlalchemy.engine import make_url

from environments.core.database_urls import url_problem
from environments.core.heads import HeadsPolicy
from environments.models import Environment, Project, UrlUnavailable
from environments.notify import webhook_host_problem

_PROJECT_KEYS = {
    "name",
    "slug",
    "alembic_ini",
    "script_location",
    "version_locations",
    "recursive_version_locations",
    "version_table",
    "version_table_schema",
    "command",
    "working_dir",
    "url_env_var",
    "webhook_url",
    "multiple_heads",
    "environment",
}
_ENVIRONMENT_KEYS = {
    "name",
    "slug",
    "position",
    "url",
    "url_from_env",
    "promotion_from",
    # the approval and backup policy
    "required_approvals",
    "approver_group",
    "requester_may_approve",
    "backup_before_jobs",
    "backup_required",
    "keep_backups",
    "promotion_min_hours",
    "approval_expiry_hours",
}
_POLICY_BOOLS = ("requester_may_approve", "backup_before_jobs", "backup_required")
_POLICY_COUNTS = {  # key: the least value allowed
    "required_approvals": 0,
    "keep_backups": 1,
    "promotion_min_hours": 0,
    "approval_expiry_hours": 1,
}


class ConfigError(Exception):
    """The file is not a valid Retort configuration; the message says where and why."""


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # "name: field, field" — never values
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def lines(self) -> list[str]:
        return (
            [f"created {item}" for item in self.created]
            + [f"updated {item}" for item in self.updated]
            + [f"unchanged {item}" for item in self.unchanged]
        )


def load(path: str | Path) -> tuple[dict, Path]:
    file = Path(path)
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    return document, file.resolve().parent


def _path(value: object, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string.")
    candidate = Path(value).expanduser()
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def _url(value: object, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string.")
    try:
        parsed = make_url(value)
    except Exception:
        raise ConfigError(f"{where} is not a valid database URL.") from None
    problem = url_problem(value)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).expanduser()
        if not database.is_absolute():
            return parsed.set(database=str((base / database).resolve())).render_as_string(
                hide_password=False
            )
    return value


def _project_fields(raw: dict, base: Path, where: str) -> dict:
    unknown = set(raw) - _PROJECT_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name.")
    if "alembic_ini" not in raw and "script_location" not in raw:
        raise ConfigError(f"{where} ({name}) needs alembic_ini or script_location.")
    fields: dict[str, object] = {"name": name, "slug": raw.get("slug") or slugify(name)}
    if "alembic_ini" in raw:
        fields["alembic_ini"] = _path(raw["alembic_ini"], base, f"{where}.alembic_ini")
    if "script_location" in raw:
        fields["script_location"] = _path(raw["script_location"], base, f"{where}.script_location")
    if "version_locations" in raw:
        locations = raw["version_locations"]
        if not isinstance(locations, list):
            raise ConfigError(f"{where}.version_locations must be a list of paths.")
        fields["version_locations"] = [
            _path(loc, base, f"{where}.version_locations") for loc in locations
        ]
    if "recursive_version_locations" in raw:
        if not isinstance(raw["recursive_version_locations"], bool):
            raise ConfigError(f"{where}.recursive_version_locations must be true or false.")
        fields["recursive_version_locations"] = raw["recursive_version_locations"]
    for key in ("version_table", "version_table_schema", "url_env_var"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{where}.{key} must be a string.")
            fields[key] = raw[key]
    if "command" in raw:
        command = raw["command"]
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(p, str) for p in command)
        ):
            raise ConfigError(f"{where}.command must be a non-empty list of strings.")
        fields["command"] = command
    if "working_dir" in raw:
        fields["working_dir"] = _path(raw["working_dir"], base, f"{where}.working_dir")
    if "multiple_heads" in raw:
        choices = [policy.value for policy in HeadsPolicy]
        if raw["multiple_heads"] not in choices:
            raise ConfigError(
                f"{where}.multiple_heads must be one of {', '.join(map(repr, choices))}."
            )
        fields["multiple_heads"] = raw["multiple_heads"]
    if "webhook_url" in raw:
        url = raw["webhook_url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.webhook_url must be an http:// or https:// URL.")
        problem = webhook_host_problem(url)
        if problem:
            raise ConfigError(f"{where}.webhook_url: {problem}")
        fields["webhook_url"] = url
    return fields


def _environment_fields(raw: dict, base: Path, where: str, position: int) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a [[project.environment]] table.")
    unknown = set(raw) - _ENVIRONMENT_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name.")
    has_url, has_env = "url" in raw, "url_from_env" in raw
    if has_url == has_env:
        raise ConfigError(f"{where} ({name}) needs exactly one of url or url_from_env.")
    fields: dict[str, object] = {
        "name": name,
        "slug": raw.get("slug") or slugify(name),
        "position": raw.get("position", position),
        "url_from_env": raw.get("url_from_env", ""),
    }
    if not isinstance(fields["position"], int) or isinstance(fields["position"], bool):
        raise ConfigError(f"{where}.position must be a whole number.")
    if not isinstance(fields["url_from_env"], str) or (has_env and not fields["url_from_env"]):
        raise ConfigError(f"{where}.url_from_env must name an environment variable.")
    if has_url:
        fields["url"] = _url(raw["url"], base, f"{where}.url")
    fields.update(_policy_fields(raw, where))
    return fields


def _policy_fields(raw: dict, where: str) -> dict:
    fields: dict[str, object] = {}
    for key in _POLICY_BOOLS:
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ConfigError(f"{where}.{key} must be true or false.")
            fields[key] = raw[key]
    for key, least in _POLICY_COUNTS.items():
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{where}.{key} must be a whole number of at least {least}.")
            fields[key] = value
    if "approver_group" in raw:
        name = raw["approver_group"]
        group = Group.objects.filter(name=name).first() if isinstance(name, str) else None
        if name and group is None:
            raise ConfigError(
                f"{where}.approver_group: there is no group {name!r}. The roles are "
                "viewer, developer, release_manager and admin; other groups are made in the admin."
            )
        fields["approver_group"] = group
    if "promotion_from" in raw and not isinstance(raw["promotion_from"], str):
        raise ConfigError(f"{where}.promotion_from must name another environment.")
    return fields


def apply(document: dict, base_dir: Path) -> ApplyReport:
    """Create or update what the document declares; running it twice changes nothing."""
    projects = document.get("project", [])
    if not isinstance(projects, list) or not projects:
        raise ConfigError("The file declares no [[project]] tables.")
    report = ApplyReport()
    seen_projects: dict[str, str] = {}
    with transaction.atomic():
        for number, raw in enumerate(projects, start=1):
            where = f"project #{number}"
            if not isinstance(raw, dict):
                raise ConfigError(f"{where} must be a table.")
            fields = _project_fields(raw, base_dir, where)
            _refuse_repeat(seen_projects, fields, where, "project", "in the file")
            with _as_config_error(where):
                project = _apply_project(fields, report)
            environments = raw.get("environment", [])
            if not isinstance(environments, list):
                raise ConfigError(f"{where}.environment must be [[project.environment]] tables.")
            promotions = []
            seen_environments: dict[str, str] = {}
            for position, env_raw in enumerate(environments):
                env_where = f"{where} environment #{position + 1}"
                env_fields = _environment_fields(env_raw, base_dir, env_where, position)
                _refuse_repeat(
                    seen_environments, env_fields, env_where, "environment", "in its project"
                )
                if "promotion_from" in env_raw:
                    promotions.append((env_fields["slug"], env_raw["promotion_from"], env_where))
                with _as_config_error(env_where):
                    _apply_environment(project, env_fields, report)
            for slug, source, env_where in promotions:
                _apply_promotion(project, slug, source, env_where, report)
    return report


def _refuse_repeat(seen: dict[str, str], fields: dict, where: str, what: str, scope: str) -> None:
    """A second table with the same name or slug would silently overwrite the first."""
    for key in ("name", "slug"):
        value = str(fields[key])
        earlier = seen.get(f"{key}:{value}")
        if earlier:
            raise ConfigError(
                f"{where} has the {key} {value!r} of {earlier}: each {what} appears once "
                f"{scope}. Remove one of them, or give it another {key}."
            )
    for key in ("name", "slug"):
        seen[f"{key}:{fields[key]}"] = where


@contextlib.contextmanager
def _as_config_error(where: str) -> Iterator[None]:
    """The model's own validation (lengths, slugs) said as a ConfigError naming the table."""
    try:
        yield
    except ValidationError as exc:
        details = " ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
        raise ConfigError(f"{where}: {details}") from None


_WHERE = re.compile(r"^project #(\d+)(?: environment #(\d+))?(?:\.(\w+))?")


def line_of(text: str, message: str) -> int | None:
    """The line of the file a ConfigError's message points at (its table, or its key)."""
    found = _WHERE.match(message)
    if found is None:
        return None
    project, environment, key = int(found.group(1)), found.group(2), found.group(3)
    tables: dict[tuple[int, int], int] = {}
    current = (0, 0)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[project]]"):
            current = (current[0] + 1, 0)
            tables[current] = number
        elif stripped.startswith("[[project.environment]]"):
            current = (current[0], current[1] + 1)
            tables[current] = number
    wanted = (project, int(environment) if environment else 0)
    start = tables.get(wanted)
    if start is None or key is None:
        return start
    lines = text.splitlines()
    for number in range(start, len(lines)):
        if lines[number].lstrip().startswith("["):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[number]):
            return number + 1
    return start


def apply_file(path: str | Path) -> ApplyReport:
    """`load` and `apply`, an error naming the file's line where it can."""
    document, base = load(path)
    try:
        return apply(document, base)
    except ConfigError as exc:
        line = line_of(Path(path).read_text(encoding="utf-8"), str(exc))
        if line is None:
            raise
        raise ConfigError(f"{Path(path).name} line {line}: {exc}") from None


def _apply_promotion(
    project: Project, slug: str, source_name: str, where: str, report: ApplyReport
) -> None:
    environment = Environment.objects.get(project=project, slug=slug)
    source = None
    if source_name:
        source = (
            Environment.objects.filter(project=project)
            .filter(models.Q(name=source_name) | models.Q(slug=source_name))
            .first()
        )
        if source is None or source.pk == environment.pk:
            raise ConfigError(
                f"{where}.promotion_from: {source_name!r} is not another environment of "
                f"{project.name}."
            )
    if environment.promotion_from_id == (source.pk if source else None):
        return
    environment.promotion_from = source
    environment.save()
    label = f"environment {project.name}/{environment.name}"
    if label in report.unchanged:
        report.unchanged.remove(label)
        report.updated.append(f"{label}: promotion_from")
    elif label not in report.created:
        report.updated = [
            f"{item}, promotion_from" if item.startswith(label + ":") else item
            for item in report.updated
        ]


def _apply_project(fields: dict, report: ApplyReport) -> Project:
    webhook = fields.pop("webhook_url", None)
    project = Project.objects.filter(slug=fields["slug"]).first()
    if project is None:
        project = Project(**fields)
        project.set_webhook_url(webhook or "")
        project.full_clean()
        project.save()
        report.created.append(f"project {project.name}")
        return project
    changed = [key for key, value in fields.items() if getattr(project, key) != value]
    stored = project.webhook_url() if project.webhook_url_encrypted else None
    if stored != webhook:
        project.set_webhook_url(webhook or "")
        changed.append("webhook_url")
    if changed:
        for key in changed:
            if key in fields:
                setattr(project, key, fields[key])
        project.full_clean()
        project.save()
        report.updated.append(f"project {project.name}: {', '.join(changed)}")
    else:
        report.unchanged.append(f"project {project.name}")
    return project


def _apply_environment(project: Project, fields: dict, report: ApplyReport) -> None:
    url = fields.pop("url", None)
    environment = Environment.objects.filter(project=project, slug=fields["slug"]).first()
    label = f"environment {project.name}/{fields['name']}"
    if environment is None:
        environment = Environment(project=project, **fields)
        if url:
            environment.set_url(url)
        environment.full_clean()
        environment.save()
        report.created.append(label)
        return
    changed = [key for key, value in fields.items() if getattr(environment, key) != value]
    for key in changed:
        setattr(environment, key, fields[key])
    if url is not None and _stored_url(environment) != url:
        environment.set_url(url)
        changed.append("url")
    elif url is None and environment.url_encrypted:
        environment.url_encrypted = ""
        changed.append("url")
    if changed:
        environment.full_clean()
        environment.save()
        report.updated.append(f"{label}: {', '.join(changed)}")
    else:
        report.unchanged.append(label)


def _stored_url(environment: Environment) -> str | None:
    if not environment.url_encrypted:
        return None
    saved, environment.url_from_env = environment.url_from_env, ""
    try:
        return environment.get_url()
    except UrlUnavailable:
        return None
    finally:
        environment.url_from_env = saved
