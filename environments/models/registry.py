"""The registry: projects (an Alembic script directory and how alembic runs), their
environments (a database URL, encrypted at rest, and its policy), roles per project, and API
tokens."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.urls import reverse

from dashboard.lib import secretbox
from environments.core import heads as core_heads
from environments.core import migration_lock, runner, script_config, tenants
from environments.core.database_urls import display_url, sync_url, url_problem
from environments.models.policies import SafeRunPolicy

if TYPE_CHECKING:
    from environments.core import scripts


class AuditedModel(models.Model):
    """Saved and deleted inside a transaction, so the audit event (written by the signal
    receivers in `environments.signals`) commits or rolls back with the change."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)


def default_command() -> list[str]:
    return ["python", "-m", "alembic", "-c", "alembic.ini"]


class Project(AuditedModel):
    """An Alembic script directory and how to run alembic for it."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    alembic_ini = models.CharField(
        max_length=500, blank=True, help_text="Path to alembic.ini, read as configuration only."
    )
    script_location = models.CharField(
        max_length=500, blank=True, help_text="Overrides the ini's script_location."
    )
    version_locations = models.JSONField(
        default=list, blank=True, help_text="Overrides the ini's version_locations (a list)."
    )
    recursive_version_locations = models.BooleanField(
        null=True, blank=True, help_text="Overrides the ini's setting; empty means 'as the ini'."
    )
    version_table = models.CharField(max_length=200, default="alembic_version")
    version_table_schema = models.CharField(max_length=200, blank=True)
    multiple_heads = models.CharField(
        max_length=10,
        choices=[
            (core_heads.HeadsPolicy.AUTO, "judged from the history"),
            (core_heads.HeadsPolicy.EXPECTED, "expected: this project upgrades to heads"),
            (core_heads.HeadsPolicy.SINGLE, "a mistake: this project keeps one head"),
        ],
        default=core_heads.HeadsPolicy.AUTO,
        help_text="Whether several heads are intended. Judged from the history, heads on "
        "separately labelled branches or separate bases are expected; heads that diverged "
        "from one branch without a merge are not.",
    )
    command = models.JSONField(
        default=default_command, help_text="How alembic is run for this project, as a list."
    )
    working_dir = models.CharField(
        max_length=500, blank=True, help_text="Where the command runs; default: the ini's folder."
    )
    url_env_var = models.CharField(
        max_length=100,
        default="DATABASE_URL",
        help_text="The environment variable through which env.py reads the database URL.",
    )
    # schema tenants: how env.py is told which schema it migrates
    tenant_x_arg = models.CharField(
        max_length=50,
        default="tenant",
        blank=True,
        help_text="For tenants kept as schemas: alembic runs with -x <this>=<schema> (empty: "
        "no -x). search_path is set to the schema either way.",
    )
    tenant_env_var = models.CharField(
        max_length=100,
        blank=True,
        help_text="For tenants kept as schemas: an environment variable that carries the "
        "schema's name to env.py, if it reads one.",
    )
    webhook_url_encrypted = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project_detail", args=[self.slug])

    def clean(self) -> None:
        if not self.alembic_ini and not self.script_location:
            raise ValidationError(
                "A project needs alembic_ini or script_location: the path to its alembic.ini, "
                "or the folder of its scripts."
            )
        if not isinstance(self.command, list) or not all(isinstance(p, str) for p in self.command):
            raise ValidationError({"command": "The command must be a list of strings."})
        if not isinstance(self.version_locations, list):
            raise ValidationError({"version_locations": "version_locations must be a list."})

    @property
    def run_dir(self) -> Path:
        """Where alembic runs for this project, and what relative paths are relative to."""
        if self.working_dir:
            return Path(self.working_dir)
        if self.alembic_ini:
            return Path(self.alembic_ini).parent
        return Path(settings.BASE_DIR)

    def script_config(self) -> script_config.ScriptConfig:
        """Where the revision files are. Raises ScriptConfigError with a readable reason."""
        config = self._script_config()
        return dataclasses.replace(config, max_bytes=settings.RETORT_MAX_REVISION_BYTES)

    def _script_config(self) -> script_config.ScriptConfig:
        overrides = {
            "script_location": self.script_location or None,
            "version_locations": self.version_locations or None,
        }
        if self.alembic_ini:
            return script_config.config_from_ini(
                self.alembic_ini,
                working_dir=self.run_dir,
                recursive_version_locations=self.recursive_version_locations,
                **overrides,
            )
        return script_config.build_config(
            self.script_location,
            self.version_locations or None,
            recursive=bool(self.recursive_version_locations),
            base=self.run_dir,
        )

    def run_alembic(self, args: list[str], *, url: str, **options) -> runner.RunResult:
        """alembic for this project: its command and working directory, the URL in its
        variable, `python` meaning Retort's own interpreter. Raises runner.RunnerError."""
        return runner.run_alembic(
            self.command,
            args,
            url=url,
            url_env_var=self.url_env_var,
            working_dir=self.run_dir,
            python=sys.executable,
            warm=settings.RETORT_WARM_ALEMBIC,
            **options,
        )

    def set_webhook_url(self, url: str) -> None:
        """Where job notifications go (a secret: Slack's URLs carry their key in the path)."""
        self.webhook_url_encrypted = secretbox.encrypt(url) if url else ""

    def webhook_url(self) -> str:
        """This project's webhook, else RETORT_WEBHOOK_URL; "" when neither is set."""
        if self.webhook_url_encrypted:
            try:
                return secretbox.decrypt(self.webhook_url_encrypted)
            except secretbox.DecryptionError:
                return ""
        return settings.RETORT_WEBHOOK_URL

    def heads_verdict(self, index: scripts.ScriptIndex) -> core_heads.HeadsVerdict:
        """Whether the scripts' heads are as this project intends (the CI gate fails if not)."""
        return core_heads.assess(index, self.multiple_heads)

    def load_scripts(self, *, syntax: bool = True) -> tuple[scripts.ScriptIndex | None, str | None]:
        """The script index, or None and the reason it could not be read (`syntax`: see
        `scripts.load_index`)."""
        from environments.core import scripts  # Alembic's map: imported when first read

        try:
            return scripts.load_index(self.script_config(), syntax=syntax), None
        except script_config.ScriptConfigError as exc:
            return None, str(exc)


class ProjectRole(models.Model):
    """A person's role in one project, which replaces their global role there: a developer of
    `billing` who is a viewer everywhere else, or a release manager of one team's project."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        DEVELOPER = "developer"
        RELEASE_MANAGER = "release_manager"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="roles")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_roles"
    )
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_role_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"


class UrlUnavailable(LookupError):
    """An environment's URL cannot be had (missing variable, undecryptable value)."""


class Environment(SafeRunPolicy, AuditedModel):
    """One database the project's migrations run against."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100)
    position = models.PositiveIntegerField(
        default=0, help_text="Order in the promotion chain: dev before staging before prod."
    )
    url_encrypted = models.TextField(blank=True, editable=False)
    url_from_env = models.CharField(
        max_length=100, blank=True, help_text="Name of an environment variable holding the URL."
    )
    schema = models.CharField(
        max_length=63,
        blank=True,
        help_text="For a tenant kept as one schema of a shared PostgreSQL database: its schema. "
        "Its version table is read there ({schema} in the project's version_table_schema "
        "stands for it) and alembic runs with search_path set to it.",
    )
    # free-form labels to group and filter a fleet by: {"tier": "prod", "tenant": "acme"}
    labels = models.JSONField(default=dict, blank=True)
    # a tenant a discovery registered; marked gone (never deleted) once the server lacks it
    discovered_by = models.ForeignKey(
        "environments.Discovery",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="environments",
    )
    gone_at = models.DateTimeField(null=True, blank=True, editable=False)
    backup_before_jobs = models.BooleanField(
        default=True, help_text="Back the database up before every upgrade and downgrade."
    )
    keep_backups = models.PositiveIntegerField(
        default=5, help_text="How many of this environment's backups to keep (older are removed)."
    )
    # The approval policy: who must agree before a job may run here.
    required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Approvals a job needs before it is queued (0: none)."
    )
    approver_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Only members of this group may approve; empty: anyone who may approve jobs.",
    )
    requester_may_approve = models.BooleanField(
        default=False, help_text="Let the requester approve their own job (off: four eyes)."
    )
    backup_required = models.BooleanField(
        default=False, help_text="Every upgrade and downgrade must back the database up first."
    )
    promotion_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Upgrades here may only go to revisions this environment already holds…",
    )
    promotion_min_hours = models.PositiveIntegerField(
        default=0, help_text="…and has held for at least this many hours."
    )
    approval_expiry_hours = models.PositiveIntegerField(
        default=24, help_text="A request not approved within this many hours expires."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__name", "position", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "slug"], name="environment_slug_per_project"
            ),
            models.UniqueConstraint(
                fields=["project", "name"], name="environment_name_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.name} / {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("environment_detail", args=[self.project.slug, self.slug])

    def set_url(self, url: str) -> None:
        """Store the URL encrypted. Raises ValueError (a sentence) for a URL that does not
        parse one way only."""
        problem = url_problem(url) if url else None
        if problem:
            raise ValueError(problem)
        self.url_encrypted = secretbox.encrypt(url) if url else ""

    def get_url(self) -> str:
        """The database URL, decrypted or read from the named variable."""
        if self.url_from_env:
            value = os.environ.get(self.url_from_env)
            if not value:
                raise UrlUnavailable(
                    f"The environment variable {self.url_from_env} that should hold this "
                    "database's URL is not set for the Retort process."
                )
            return value
        if not self.url_encrypted:
            raise UrlUnavailable("No database URL is configured for this environment.")
        try:
            return secretbox.decrypt(self.url_encrypted)
        except secretbox.DecryptionError:
            raise UrlUnavailable(
                "The stored database URL cannot be decrypted: RETORT_ENCRYPTION_KEY changed "
                "since it was saved. Enter the URL again."
            ) from None

    @property
    def url_for_display(self) -> str:
        if self.url_from_env:
            return f"from ${self.url_from_env}"
        try:
            return display_url(self.get_url())
        except UrlUnavailable as exc:
            return str(exc)

    @property
    def version_table_schema(self) -> str | None:
        """Where this environment's version table is: the project's setting, with a schema
        tenant's schema in place of {schema} (a schema tenant's own schema when unset)."""
        template = self.project.version_table_schema
        if self.schema:
            return template.replace("{schema}", self.schema) if template else self.schema
        return None if "{schema}" in template else (template or None)

    @property
    def lock_key(self) -> int:
        """The advisory lock Retort holds on this environment's version table while it runs."""
        return migration_lock.migration_lock_key(
            self.project.version_table or "alembic_version", self.version_table_schema
        )

    def run_alembic(self, args: list[str], *, url: str, **options) -> runner.RunResult:
        """The project's alembic, told which schema a schema tenant is: `-x tenant=<schema>`
        (the project's x-argument), its variable if it names one, and search_path."""
        if not self.schema:
            return self.project.run_alembic(args, url=url, **options)
        project = self.project
        extra_env = dict(options.pop("extra_env", None) or {})
        pgoptions = extra_env.get("PGOPTIONS", os.environ.get("PGOPTIONS", ""))
        extra_env["PGOPTIONS"] = tenants.with_search_path(pgoptions, self.schema)
        if project.tenant_env_var:
            extra_env[project.tenant_env_var] = self.schema
        return project.run_alembic(self.alembic_args(args), url=url, extra_env=extra_env, **options)

    def alembic_args(self, args: list[str]) -> list[str]:
        """alembic's arguments for this environment: a schema tenant's -x first."""
        x_arg = self.project.tenant_x_arg if self.schema else ""
        return ["-x", f"{x_arg}={self.schema}", *args] if x_arg else list(args)

    def stored_state(self) -> models.Model | None:
        """What the newest read found (a `reads.CurrentState`), or None if never read."""
        model = self._meta.get_field("current_state").related_model
        return model.objects.filter(environment=self, checked_at__isnull=False).first()

    def clean(self) -> None:
        if self.schema:
            problem = tenants.schema_problem(self.schema)
            if problem:
                raise ValidationError({"schema": problem})
            if (
                self.url_encrypted
                and backend_of(self.url_encrypted, encrypted=True) != "postgresql"
            ):
                raise ValidationError(
                    {"schema": "Tenants kept as schemas live in a PostgreSQL database."}
                )
        if self.promotion_from_id and self.promotion_from_id == self.pk:
            raise ValidationError({"promotion_from": "An environment cannot promote from itself."})
        if self.promotion_from_id and self.promotion_from.project_id != self.project_id:
            raise ValidationError(
                {"promotion_from": "Promote from an environment of the same project."}
            )


def backend_of(url: str, *, encrypted: bool = False) -> str:
    """The kind of database a URL names ("postgresql", "sqlite", …); "" when it cannot tell."""
    try:
        return sync_url(secretbox.decrypt(url) if encrypted else url).get_backend_name()
    except Exception:  # noqa: BLE001 - an unusable URL has no backend; url_problem says why
        return ""
