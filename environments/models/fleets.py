"""Fleets: where a project's tenants are found. A discovery names a PostgreSQL server, a query
that lists the tenants' database (or schema) names on it, and the URL each tenant is read at; a
scheduled run registers the new ones as environments and marks the vanished ones gone."""

from __future__ import annotations

from django.db import models

from dashboard.lib import secretbox
from environments.models.registry import AuditedModel, Project

DEFAULT_QUERY = "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\_%' ORDER BY 1"
SCHEMAS_QUERY = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' ORDER BY 1"


class Discovery(AuditedModel):
    class Kind(models.TextChoices):
        DATABASES = "databases", "a database per tenant"
        SCHEMAS = "schemas", "a schema per tenant, in one database"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="discoveries")
    name = models.CharField(max_length=100)
    kind = models.CharField(
        max_length=10,
        choices=Kind.choices,
        default=Kind.DATABASES,
        help_text="What the query lists: databases (each tenant's URL from the template) or "
        "schemas of one database (the template is that database's URL).",
    )
    server_url_encrypted = models.TextField(editable=False)
    query = models.TextField(
        default=DEFAULT_QUERY,
        help_text="Lists the tenants' database names (its first column), run read-only on the "
        "server.",
    )
    url_template_encrypted = models.TextField(editable=False)
    labels = models.JSONField(
        default=dict, blank=True, help_text="Given to every environment this discovery finds."
    )
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True, editable=False)
    found = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__name", "name"]
        verbose_name_plural = "discoveries"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="discovery_name_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.name} / {self.name}"

    @property
    def server_url(self) -> str:
        return secretbox.decrypt(self.server_url_encrypted)

    @server_url.setter
    def server_url(self, url: str) -> None:
        self.server_url_encrypted = secretbox.encrypt(url)

    @property
    def url_template(self) -> str:
        return secretbox.decrypt(self.url_template_encrypted)

    @url_template.setter
    def url_template(self, template: str) -> None:
        self.url_template_encrypted = secretbox.encrypt(template)
