"""The admin's form for a discovery: the server and the URL template are write-only (they may
hold a password), checked before they are stored."""

from __future__ import annotations

from django import forms
from sqlalchemy.engine import make_url

from environments.core.database_urls import url_problem
from environments.discovery import tenant_url
from environments.forms import LabelsField
from environments.models import Discovery
from environments.models.fleets import DEFAULT_QUERY, SCHEMAS_QUERY


class DiscoveryForm(forms.ModelForm):
    server_url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="A PostgreSQL URL on the tenants' server, e.g. "
        "postgresql://retort@db:5432/postgres. Stored encrypted; leave empty to keep it.",
    )
    url_template = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Each tenant's URL, {name} standing for its database name, e.g. "
        "postgresql://retort@db:5432/{name}; for schemas, the database that holds them. Stored "
        "encrypted; leave empty to keep it.",
    )
    labels = LabelsField(
        required=False, help_text="Given to every environment found: tier=tenant, region=eu."
    )

    class Meta:
        model = Discovery
        fields = ["project", "name", "kind", "server_url", "query", "url_template", "labels"]

    def clean_server_url(self) -> str:
        url = self.cleaned_data.get("server_url", "")
        if not url:
            if not (self.instance.pk and self.instance.server_url_encrypted):
                raise forms.ValidationError("Give the server's URL.")
            return url
        problem = url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        if make_url(url).get_backend_name() != "postgresql":
            raise forms.ValidationError("Tenants are discovered on a PostgreSQL server.")
        return url

    def clean_url_template(self) -> str:
        template = self.cleaned_data.get("url_template", "")
        if not template:
            if not (self.instance.pk and self.instance.url_template_encrypted):
                raise forms.ValidationError("Give the tenants' URL template.")
            return template
        schemas = self.data.get(self.add_prefix("kind")) == Discovery.Kind.SCHEMAS
        if "{name}" not in template and not schemas:
            raise forms.ValidationError("The template must say where the name goes: {name}.")
        problem = url_problem(tenant_url(template, "tenant"))
        if problem:
            raise forms.ValidationError(problem)
        return template

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].required = False  # a file or a form that does not say: databases

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or Discovery.Kind.DATABASES

    def clean(self):
        data = super().clean()
        kind, query = data.get("kind"), data.get("query")
        if kind == Discovery.Kind.SCHEMAS and query == DEFAULT_QUERY:
            data["query"] = SCHEMAS_QUERY  # the default lists databases; schemas were asked for
        return data

    def save(self, commit: bool = True):
        discovery = super().save(commit=False)
        if self.cleaned_data.get("server_url"):
            discovery.server_url = self.cleaned_data["server_url"]
        if self.cleaned_data.get("url_template"):
            discovery.url_template = self.cleaned_data["url_template"]
        if commit:
            discovery.save()
        return discovery
