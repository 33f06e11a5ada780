from django import forms
from django.contrib import admin

from environments.models import ApiToken, AuditEvent, Environment, Project, Snapshot


class EnvironmentForm(forms.ModelForm):
    """The URL is write-only: it is encrypted on save and never rendered back."""

    url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="SQLAlchemy URL. Stored encrypted; leave empty to keep the current one.",
    )

    class Meta:
        model = Environment
        fields = ["project", "name", "slug", "position", "url", "url_from_env"]

    def clean(self):
        data = super().clean()
        has_stored = bool(self.instance.pk and self.instance.url_encrypted)
        if not data.get("url") and not data.get("url_from_env") and not has_stored:
            raise forms.ValidationError("Give the database URL, or the variable that holds it.")
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


class EnvironmentInline(admin.TabularInline):
    model = Environment
    form = EnvironmentForm
    extra = 0
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "alembic_ini", "version_table"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [EnvironmentInline]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = ["name", "project", "position", "url_for_display"]
    list_filter = ["project"]
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["environment", "status", "checked_at", "duration_ms"]
    list_filter = ["status", "environment__project"]
    readonly_fields = [f.name for f in Snapshot._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "created_at", "last_used_at"]
    readonly_fields = ["token_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False  # tokens are issued with `manage.py create_api_token`, shown once


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail can be browsed here, never edited."""

    list_display = ["seq", "created_at", "actor_name", "action", "project_name", "environment_name"]
    list_filter = ["action", "actor_kind"]
    search_fields = ["actor_name", "project_name", "environment_name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
