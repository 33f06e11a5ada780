"""Every input Retort accepts, declared once as Django forms.

- `ProjectForm` and `EnvironmentForm`: a project and its databases, from the admin and from
  the TOML file (`configfile.py` binds each table to these forms, so both accept and refuse
  the same values with the same sentences);
- `JobRequestForm`: a job request from the page, the API and the CLI, each mapping its own
  parameter names onto the same fields (`job_request_from_page`, `_api`, `_cli`);
- `AuditFilterForm`: the audit trail's filters (its page and its export).
"""

from __future__ import annotations

import json
import re

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.validators import MinValueValidator
from django.db import models

from environments import audit, notify
from environments.core.database_urls import url_problem
from environments.models import AuditEvent, Backup, Environment, Job, Project
from environments.models.registry import backend_of

POLICY_FIELDS = [
    "required_approvals",
    "approver_group",
    "requester_may_approve",
    "backup_before_jobs",
    "backup_required",
    "keep_backups",
    "promotion_from",
    "promotion_min_hours",
    "approval_expiry_hours",
    "lock_timeout_seconds",
    "statement_timeout_seconds",
    "lock_attempts",
    "lock_retry_seconds",
    "lock_review_blocks",
    "lock_review_approval",
    "rehearsal_required_hours",
]
LEAST = {  # the counts of the policy, and the least value each allows
    "position": 0,
    "required_approvals": 0,
    "keep_backups": 1,
    "promotion_min_hours": 0,
    "approval_expiry_hours": 1,
    "lock_attempts": 1,
    "rehearsal_required_hours": 0,
}


def errors_sentence(form: forms.BaseForm) -> str:
    """Every error of a form in one line, each named by its field."""
    parts = []
    for field, errors in form.errors.items():
        name = "" if field == "__all__" else f"{field.replace('_', ' ')}: "
        parts += [f"{name}{error}" for error in errors]
    return " ".join(parts)


_LABEL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")


class LabelsField(forms.Field):
    """Free-form labels, `tier=prod, region=eu` as typed in the admin, or a table of names and
    values (`labels = { tier = "prod" }` in the TOML file); stored as a dict."""

    def prepare_value(self, value):
        if isinstance(value, dict):
            return ", ".join(f"{key}={item}" for key, item in sorted(value.items()))
        return value

    def to_python(self, value) -> dict[str, str]:
        if value in self.empty_values or value == {}:
            return {}
        if isinstance(value, str):
            pairs = [part.strip() for part in value.split(",") if part.strip()]
            if not all(pair.count("=") == 1 for pair in pairs):
                raise forms.ValidationError("Write labels as name=value, separated by commas.")
            value = dict(pair.split("=") for pair in pairs)
        if not isinstance(value, dict):
            raise forms.ValidationError("Labels are names with a value each.")
        labels = {str(key).strip(): str(item).strip() for key, item in value.items()}
        for key, item in labels.items():
            if not _LABEL_PART.match(key) or not _LABEL_PART.match(item):
                raise forms.ValidationError(
                    f"{key}={item} is not a label: names and values are letters, digits and "
                    "_ . - / (up to 63 each, starting with a letter or digit)."
                )
        return labels


class EnvironmentForm(forms.ModelForm):
    """One database of a project. The URL is write-only: encrypted on save, never rendered."""

    url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="SQLAlchemy URL. Stored encrypted; leave empty to keep the current one.",
    )
    labels = LabelsField(
        required=False,
        help_text="To group and filter environments by: tier=prod, region=eu, tenant=acme.",
    )
    approver_group = forms.ModelChoiceField(
        Group.objects.order_by("name"),
        to_field_name="name",
        required=False,
        help_text=Environment._meta.get_field("approver_group").help_text,
        error_messages={
            "invalid_choice": "There is no group %(value)r. The roles are viewer, developer, "
            "release_manager and admin; other groups are made in the admin."
        },
    )

    class Meta:
        model = Environment
        fields = [
            "project",
            "name",
            "slug",
            "position",
            "url",
            "url_from_env",
            "schema",
            "labels",
            *POLICY_FIELDS,
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for key, least in LEAST.items():
            field = self.fields[key]
            field.min_value = least
            field.widget.attrs["min"] = least
            field.validators = [
                v for v in field.validators if not isinstance(v, MinValueValidator)
            ] + [MinValueValidator(least)]
            field.error_messages["min_value"] = "Give a whole number of at least %(limit_value)s."

    def clean_url(self) -> str:
        url = self.cleaned_data.get("url", "")
        problem = url_problem(url) if url else None
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean(self):
        data = super().clean()
        has_stored = bool(self.instance.pk and self.instance.url_encrypted)
        if not data.get("url") and not data.get("url_from_env") and not has_stored:
            raise forms.ValidationError("Give the database URL, or the variable that holds it.")
        if data.get("schema") and data.get("url") and backend_of(data["url"]) != "postgresql":
            self.add_error("schema", "Tenants kept as schemas live in a PostgreSQL database.")
        return data

    def save(self, commit: bool = True):
        environment = super().save(commit=False)
        if self.cleaned_data.get("url"):
            environment.set_url(self.cleaned_data["url"])
            environment.url_from_env = ""
        elif self.cleaned_data.get("url_from_env"):
            environment.url_encrypted = ""
        if commit:
            environment.save()
        return environment


class ProjectForm(forms.ModelForm):
    """An Alembic script directory and how alembic runs for it. The webhook URL is write-only
    too: Slack's carry their key in the path."""

    webhook_url = forms.URLField(
        required=False,
        assume_scheme="https",
        widget=forms.PasswordInput(render_value=False),
        help_text="Job notifications (Slack-compatible JSON). Stored encrypted; leave empty to "
        "keep the current one.",
    )
    clear_webhook = forms.BooleanField(required=False, help_text="Remove the webhook.")

    class Meta:
        model = Project
        fields = [
            "name",
            "slug",
            "alembic_ini",
            "script_location",
            "version_locations",
            "recursive_version_locations",
            "version_table",
            "version_table_schema",
            "tenant_x_arg",
            "tenant_env_var",
            "multiple_heads",
            "command",
            "working_dir",
            "url_env_var",
            "webhook_url",
            "clear_webhook",
        ]

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data.get("webhook_url", "")
        problem = notify.webhook_host_problem(url) if url else None
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean_command(self) -> list:
        command = self.cleaned_data.get("command")
        if not isinstance(command, list) or not command:
            raise forms.ValidationError("The command must be a non-empty list of strings.")
        return command

    def save(self, commit: bool = True):
        project = super().save(commit=False)
        if self.cleaned_data.get("clear_webhook"):
            project.set_webhook_url("")
        elif self.cleaned_data.get("webhook_url"):
            project.set_webhook_url(self.cleaned_data["webhook_url"])
        if commit:
            project.save()
        return project


def as_data(form_class: type[forms.ModelForm], values: dict) -> dict:
    """Python values as the data a `form_class` form is bound with, as the admin would send
    them: JSON as text, a related row by the key its field chooses by."""
    data = {}
    for name, value in values.items():
        field = form_class.base_fields.get(name)
        if isinstance(field, forms.JSONField) and not isinstance(value, str):
            value = json.dumps(value)
        elif isinstance(field, forms.ModelChoiceField) and isinstance(value, models.Model):
            value = getattr(value, field.to_field_name or "pk")
        data[name] = "" if value is None and isinstance(field, forms.ModelChoiceField) else value
    return data


def bound_data(form_class: type[forms.ModelForm], instance: models.Model) -> dict:
    """What `instance` holds, as form data: a change that gives only some fields keeps the
    others as they are."""
    stored = {field.name for field in instance._meta.get_fields()}
    names = [name for name in form_class._meta.fields if name in stored]
    return as_data(form_class, {name: getattr(instance, name) for name in names})


class WholeNumberField(forms.Field):
    """A positive whole number, the field named in the error as its caller names it."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, bool):
            raise forms.ValidationError(f"{self.label} must be a whole number.")
        try:
            number = int(str(value))
        except ValueError:
            raise forms.ValidationError(
                f"{self.label} must be a whole number, not {str(value)[:40]!r}."
            ) from None
        if not 0 < number < 2**63:
            raise forms.ValidationError(f"{self.label} must be a positive whole number.")
        return number


class JobRequestForm(forms.Form):
    """A job to plan on `environment`: what the page, the API and the CLI each send, under
    the names they each use (`job_request_from_page`, `_api`, `_cli`). What is planned and
    whether it may be is for `planning.job_request`; this says only what was asked."""

    # a rehearsal is asked for from a plan (rehearsals.py), not planned itself
    kind = forms.ChoiceField(choices=[c for c in Job.Kind.choices if c[0] != Job.Kind.REHEARSE])
    target = forms.CharField(required=False, max_length=200)
    reason = forms.CharField(required=False, max_length=10_000)
    restore_from = WholeNumberField(required=False)
    take_backup = forms.NullBooleanField(required=False)
    sql = forms.BooleanField(required=False)  # render the SQL now, whoever else needs it

    def __init__(self, data, *, environment: Environment, names: dict[str, str]) -> None:
        super().__init__(data)
        self.environment = environment
        for field in self.fields:  # the kind's sentences name it: no label before them
            self.fields[field].label = names.get(field, "" if field == "kind" else field)
        kinds = ", ".join(v for v in Job.Kind.values if v != Job.Kind.REHEARSE)
        self.fields["kind"].error_messages |= {
            "required": f"Say which kind of job: {kinds}.",
            "invalid_choice": f"%(value)r is not a kind of job: {kinds}.",
        }

    def clean_restore_from(self) -> Backup | None:
        backup_id = self.cleaned_data.get("restore_from")
        if backup_id is None:
            return None
        return self.environment.backups.filter(pk=backup_id).first()

    def errors_sentence(self) -> str:
        """Every error in one line, each naming its field as the caller sent it."""
        parts = []
        for field, errors in self.errors.items():
            label = self.fields[field].label if field in self.fields else ""
            for error in map(str, errors):
                parts.append(error if not label or error.startswith(label) else f"{label}: {error}")
        return " ".join(parts)

    def request(self) -> dict:
        """The keyword arguments of `planning.job_request` (after `is_valid`)."""
        return {"environment": self.environment, **self.cleaned_data}


def job_request_from_page(post, environment: Environment) -> JobRequestForm:
    """The environment page's form: a target picked or typed, a backup to restore, and the
    'Back up first' box (its hidden `backup_choice` says the box was on the form at all)."""
    data = {
        "kind": post.get("kind", ""),
        "target": (post.get("target_text") or post.get("target") or "").strip(),
        "reason": post.get("reason", ""),
        "restore_from": post.get("backup") if post.get("kind") == Job.Kind.RESTORE else None,
        "take_backup": (post.get("take_backup") == "on") if post.get("backup_choice") else None,
        "sql": True,  # the plan's page is where its SQL is read
    }
    return JobRequestForm(data, environment=environment, names={"restore_from": "The backup"})


def job_request_from_api(body: dict, environment: Environment) -> JobRequestForm:
    """The API's JSON: `kind`, `target`, `reason`, `restore_from` (a backup's number) and
    `backup` (true or false: take one first; absent: the environment's policy) and `sql`
    (true: render the SQL now, even where nobody has to approve the plan)."""
    backup = body.get("backup")
    data = {
        "kind": body.get("kind", ""),
        "target": body.get("target", ""),
        "reason": body.get("reason", ""),
        "restore_from": body.get("restore_from"),
        "take_backup": backup if isinstance(backup, bool) else None,
        "sql": body.get("sql") is True,
    }
    for key in ("kind", "target", "reason"):
        if not isinstance(data[key], str):
            data[key] = ""
    return JobRequestForm(
        data, environment=environment, names={"restore_from": "restore_from (a backup's number)"}
    )


def job_request_from_cli(options: dict, environment: Environment) -> JobRequestForm:
    """`manage.py request_job`'s options: --kind, --target, --reason, --backup, --no-backup,
    --sql."""
    data = {
        "kind": options["kind"],
        "target": options["target"],
        "reason": options["reason"],
        "restore_from": options["backup"],
        "take_backup": False if options["no_backup"] else None,
        "sql": options.get("sql", False),
    }
    names = {"target": "--target", "reason": "--reason", "restore_from": "--backup"}
    return JobRequestForm(data, environment=environment, names=names)


class AuditFilterForm(forms.Form):
    project = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    environment = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    actor = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        everything = [("", "All")]
        self.fields["project"].choices = everything + [
            (p.pk, p.name) for p in Project.objects.order_by("name")
        ]
        self.fields["environment"].choices = everything + [
            (e.pk, f"{e.project.name} / {e.name}")
            for e in Environment.objects.select_related("project")
        ]
        recorded = AuditEvent.objects.order_by().values_list("action", flat=True).distinct()
        self.fields["action"].choices = everything + [
            (action, action) for action in audit.known_actions(list(recorded))
        ]
        self.actor_names = list(
            get_user_model().objects.order_by("username").values_list("username", flat=True)
        )

    def clean_date_to(self):
        return self._bounded(self.cleaned_data.get("date_to"))

    def clean_date_from(self):
        return self._bounded(self.cleaned_data.get("date_from"))

    @staticmethod
    def _bounded(day):
        if day is not None and day.year >= 9999:
            raise forms.ValidationError("Pick a date before the year 9999.")
        return day

    def errors_sentence(self) -> str:
        """Every error of the filters in one line, for a 400."""
        return errors_sentence(self)

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> dict:
        """The cleaned filters for `audit_export.events_filtered` (none if the form is invalid)."""
        if not self.is_bound or not self.is_valid():
            return {}
        data = self.cleaned_data
        return {
            "project_id": data.get("project"),
            "environment_id": data.get("environment"),
            "actor": data.get("actor", "").strip(),
            "action": data.get("action", ""),
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
        }
