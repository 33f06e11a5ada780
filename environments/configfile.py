"""Declarative registry: projects and environments from a TOML file, applied idempotently.

The format is documented in README.md ("Configuration file"). Each table is bound to the
admin's own form (`forms.ProjectForm`, `forms.EnvironmentForm`), so the file and the admin
accept the same values and refuse the rest with the same sentences; this module adds only what
is the file's: its keys, TOML's types, paths relative to the file's folder (the path of a
`sqlite:///relative.db` URL too), and environments named in `promotion_from`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from django import forms
from django.db import models, transaction
from django.utils.text import slugify
from sqlalchemy.engine import make_url

from environments.core.database_urls import url_problem
from environments.discovery_forms import DiscoveryForm
from environments.forms import EnvironmentForm, LabelsField, ProjectForm, as_data, bound_data
from environments.models import Discovery, Environment, Project, UrlUnavailable

_PROJECT_TABLES = {"environment", "discovery"}  # a project's keys beyond its form's fields
_NOT_IN_FILE = {"project", "clear_webhook"}  # set by the file's structure, not by a key
_PATHS = {"alembic_ini", "script_location", "working_dir"}  # relative to the file's folder


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


def _path(value: str, base: Path, where: str) -> str:
    if not value:
        raise ConfigError(f"{where} must be a non-empty string.")
    candidate = Path(value).expanduser()
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def _url(url: str, base: Path, where: str) -> str:
    """The URL as the file means it: one that does not parse one way only is refused at its
    key (`url_problem`, the admin's rule too); a `sqlite:///relative.db` file resolves against
    the file's folder."""
    problem = url_problem(url)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).expanduser()
        if not database.is_absolute():
            return parsed.set(database=str((base / database).resolve())).render_as_string(
                hide_password=False
            )
    return url


def _type_problem(field: forms.Field, value: object) -> str | None:
    """What a TOML value should have been for `field`: TOML has types of its own, and a form,
    made for text, would read the string 'no' as true or '3' as a number."""
    if isinstance(field, LabelsField):
        table = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if table else 'a table of names and values, like { tier = "prod" }'
    if isinstance(field, forms.BooleanField):  # NullBooleanField too
        return None if isinstance(value, bool) else "true or false"
    if isinstance(field, forms.FloatField):  # (a kind of IntegerField, for Django)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number else "a number"
    if isinstance(field, forms.IntegerField):
        whole = isinstance(value, int) and not isinstance(value, bool)
        return None if whole else "a whole number"
    if isinstance(field, forms.JSONField):
        strings = isinstance(value, list) and all(isinstance(item, str) for item in value)
        if field.required:
            return None if strings and value else "a non-empty list of strings"
        return None if strings else "a list of strings"
    if isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField):
        choices = [getattr(key, "value", key) for key, _ in field.choices if key != ""]
        return None if value in choices else "one of " + ", ".join(map(repr, choices))
    return None if isinstance(value, str) else "a string"


def _fields(form_class, raw: dict, where: str, extra: set[str]) -> dict:
    """The table's keys checked against the form's fields: none unknown, each of its type."""
    known = set(form_class._meta.fields) - _NOT_IN_FILE
    unknown = set(raw) - known - extra
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name.")
    for key in sorted(set(raw) & known):
        problem = _type_problem(form_class.base_fields[key], raw[key])
        if problem:
            raise ConfigError(f"{where}.{key} must be {problem}.")
    fields = {key: value for key, value in raw.items() if key in known}
    fields["slug"] = raw.get("slug") or slugify(name)
    return fields


def _project_fields(raw: dict, base: Path, where: str) -> dict:
    fields = _fields(ProjectForm, raw, where, _PROJECT_TABLES)
    if not str(fields.get("webhook_url", "https://")).startswith(("http://", "https://")):
        # the admin's field assumes https://; the file is compared as written, so say it whole
        raise ConfigError(f"{where}.webhook_url must be an http:// or https:// URL.")
    for key in _PATHS & set(fields):
        fields[key] = _path(fields[key], base, f"{where}.{key}")
    if "version_locations" in fields:
        fields["version_locations"] = [
            _path(location, base, f"{where}.version_locations")
            for location in fields["version_locations"]
        ]
    return fields


def _environment_fields(raw: object, base: Path, where: str, position: int) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a [[project.environment]] table.")
    variable = raw.get("url_from_env", "-")
    if not isinstance(variable, str) or not variable:
        raise ConfigError(f"{where}.url_from_env must name an environment variable.")
    fields = _fields(EnvironmentForm, raw, where, set())
    fields.pop("promotion_from", None)  # a name, resolved once every environment exists
    if ("url" in raw) == ("url_from_env" in raw):
        raise ConfigError(f"{where} ({raw['name']}) needs exactly one of url or url_from_env.")
    fields.setdefault("position", position)
    fields.setdefault("url_from_env", "")
    if "url" in fields:
        fields["url"] = _url(fields["url"], base, f"{where}.url")
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
            project = _apply_project(fields, where, report)
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
                _apply_environment(project, env_fields, env_where, report)
            for slug, source, env_where in promotions:
                _apply_promotion(project, slug, source, env_where, report)
            discoveries = raw.get("discovery", [])
            if not isinstance(discoveries, list):
                raise ConfigError(f"{where}.discovery must be [[project.discovery]] tables.")
            for number, found_raw in enumerate(discoveries, start=1):
                _apply_discovery(project, found_raw, f"{where} discovery #{number}", report)
    return report


def _apply_discovery(project: Project, raw: object, where: str, report: ApplyReport) -> None:
    """A discovery's table, bound to the admin's form; its server and template (write-only
    there) are compared with what is stored, never shown."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a [[project.discovery]] table.")
    fields = _fields(DiscoveryForm, raw, where, set())
    fields.pop("slug")
    secrets = {key: fields.pop(key) for key in ("server_url", "url_template") if key in fields}
    found = Discovery.objects.filter(project=project, name=fields["name"]).first()
    data = bound_data(DiscoveryForm, found or Discovery(project=project))
    data |= as_data(DiscoveryForm, fields) | {"project": project.pk}
    stored = {"server_url": found.server_url, "url_template": found.url_template} if found else {}
    moved = [key for key, value in secrets.items() if stored.get(key) != value]
    data |= {key: secrets[key] for key in moved}
    form = DiscoveryForm(data, instance=found)
    changed = _changes(found, form, list(fields)) + moved
    label = f"discovery {project.name}/{fields['name']}"
    _saved(form, where, changed=found is None or bool(changed))
    if found is None:
        report.created.append(label)
    elif changed:
        report.updated.append(f"{label}: {', '.join(changed)}")
    else:
        report.unchanged.append(label)


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


def _saved(form: forms.ModelForm, where: str, changed: bool) -> models.Model:
    """The form's row, saved when `changed`; its first error said as a ConfigError naming the
    table and the field otherwise, the same sentence the admin shows beside the field."""
    if not form.is_valid():
        field, errors = next(iter(form.errors.items()))
        name = form.data.get("name", "")
        place = f"{where} ({name})" if field == "__all__" else f"{where}: {field}"
        raise ConfigError(f"{place}: {' '.join(errors)}")
    return form.save() if changed else form.instance


_WHERE = re.compile(r"^project #(\d+)(?: (environment|discovery) #(\d+))?(?:\.(\w+))?")


def line_of(text: str, message: str) -> int | None:
    """The line of the file a ConfigError's message points at (its table, or its key)."""
    found = _WHERE.match(message)
    if found is None:
        return None
    project, kind, table, key = int(found.group(1)), found.group(2), found.group(3), found.group(4)
    tables: dict[tuple[int, str, int], int] = {}
    counts: dict[str, int] = {}
    current = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[project]]"):
            current, counts = current + 1, {}
            tables[(current, "", 0)] = number
        for nested in ("environment", "discovery"):
            if stripped.startswith(f"[[project.{nested}]]"):
                counts[nested] = counts.get(nested, 0) + 1
                tables[(current, nested, counts[nested])] = number
    wanted = (project, kind or "", int(table) if table else 0)
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


def _changes(instance: models.Model | None, form: forms.ModelForm, keys) -> list[str]:
    """The keys whose values the bound form changes on `instance` (after `is_valid`)."""
    if instance is None:
        return []
    before = {key: getattr(instance, key) for key in keys}
    form.is_valid()  # assigns the cleaned values to form.instance
    cleaned = form.cleaned_data
    return [key for key in keys if key in cleaned and getattr(form.instance, key) != before[key]]


def _apply_project(fields: dict, where: str, report: ApplyReport) -> Project:
    webhook = fields.pop("webhook_url", None)
    project = Project.objects.filter(slug=fields["slug"]).first()
    data = bound_data(ProjectForm, project or Project()) | as_data(ProjectForm, fields)
    stored = project.webhook_url() if project and project.webhook_url_encrypted else None
    if stored != webhook:
        data |= {"webhook_url": webhook or "", "clear_webhook": not webhook}
    new = project is None
    form = ProjectForm(data, instance=project)
    changed = _changes(project, form, list(fields))
    if stored != webhook and not new:
        changed.append("webhook_url")
    project = _saved(form, where, changed=new or bool(changed))
    if new:
        report.created.append(f"project {project.name}")
    elif changed:
        report.updated.append(f"project {project.name}: {', '.join(changed)}")
    else:
        report.unchanged.append(f"project {project.name}")
    return project


def _apply_environment(project: Project, fields: dict, where: str, report: ApplyReport) -> None:
    url = fields.pop("url", None)
    environment = Environment.objects.filter(project=project, slug=fields["slug"]).first()
    label = f"environment {project.name}/{fields['name']}"
    data = bound_data(EnvironmentForm, environment or Environment(project=project))
    data |= as_data(EnvironmentForm, fields) | {"project": project.pk}
    url_changed = False
    if url is not None and (environment is None or _stored_url(environment) != url):
        data["url"], url_changed = url, True
    elif url is None and environment is not None and environment.url_encrypted:
        url_changed = True  # the file names a variable now: the form forgets the stored URL
    form = EnvironmentForm(data, instance=environment)
    changed = _changes(environment, form, list(fields)) + (["url"] if url_changed else [])
    if environment is None:
        _saved(form, where, changed=True)
        report.created.append(label)
    elif changed:
        _saved(form, where, changed=True)
        report.updated.append(f"{label}: {', '.join(changed)}")
    else:
        _saved(form, where, changed=False)
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
