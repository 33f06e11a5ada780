from django import forms
from django.contrib import admin, messages

from environments import approvals, notify, tokens, transitions
from environments.core.database_urls import url_problem
from environments.models import (
    ApiToken,
    Approval,
    AuditEvent,
    Environment,
    Job,
    Notification,
    Project,
    ProjectRole,
    Snapshot,
)

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
]


class EnvironmentForm(forms.ModelForm):
    """The URL is write-only: it is encrypted on save and never rendered back."""

    url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="SQLAlchemy URL. Stored encrypted; leave empty to keep the current one.",
    )

    class Meta:
        model = Environment
        fields = ["project", "name", "slug", "position", "url", "url_from_env", *POLICY_FIELDS]

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


class ProjectRoleInline(admin.TabularInline):
    """Who holds which role in this project, instead of their global one."""

    model = ProjectRole
    extra = 0
    autocomplete_fields = ["user"]
    verbose_name = "role in this project"


class ProjectForm(forms.ModelForm):
    """The webhook URL is write-only too: Slack's carry their key in the path."""

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

    def save(self, commit: bool = True):
        project = super().save(commit=False)
        if self.cleaned_data.get("clear_webhook"):
            project.set_webhook_url("")
        elif self.cleaned_data.get("webhook_url"):
            project.set_webhook_url(self.cleaned_data["webhook_url"])
        if commit:
            project.save()
        return project


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ["name", "slug", "alembic_ini", "version_table"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [EnvironmentInline, ProjectRoleInline]


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
    list_display = ["name", "user", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "name", "token_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # issued on /tokens/ or with `manage.py create_api_token`, shown once

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoked, never deleted: the trail names them

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset) -> None:
        revoked = sum(tokens.token_revoke(token=t, user=request.user) for t in queryset)
        self.message_user(request, f"Revoked {revoked} token(s).")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browsable, never edited here: changes go through Retort's services."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    """Jobs change only through the approvals service: these actions call it, so the admin
    is refused exactly what the pages and the API are (self-approval, a stale plan…)."""

    list_display = ["id", "environment", "kind", "target", "status", "requested_by", "created_at"]
    list_filter = ["status", "kind", "environment__project"]
    actions = ["approve", "reject", "queue"]

    def _each(self, request, queryset, act, verb: str) -> None:
        for job in queryset.select_related("environment__project"):
            try:
                act(job)
            except transitions.Refused as exc:
                self.message_user(request, f"Job #{job.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Job #{job.pk}: {verb}.")

    @admin.action(description="Approve the selected jobs (their plans as they stand)")
    def approve(self, request, queryset) -> None:
        self._each(
            request,
            queryset,
            lambda job: approvals.job_decide(
                job=job, user=request.user, decision="approve", plan_sha256=job.plan_sha256
            ),
            "approved",
        )

    @admin.action(description="Reject the selected jobs")
    def reject(self, request, queryset) -> None:
        self._each(
            request,
            queryset,
            lambda job: approvals.job_decide(
                job=job, user=request.user, decision="reject", plan_sha256=job.plan_sha256
            ),
            "rejected",
        )

    @admin.action(description="Queue the selected jobs (if their policy allows)")
    def queue(self, request, queryset) -> None:
        self._each(
            request, queryset, lambda job: approvals.job_queue(job=job, user=request.user), "queued"
        )


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["job", "username", "decision", "plan_sha256", "created_at"]
    list_filter = ["decision"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "job", "state", "attempts", "last_error", "created_at"]
    list_filter = ["state", "event"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the trail can be browsed here, never edited."""

    list_display = ["seq", "created_at", "actor_name", "action", "project_name", "environment_name"]
    list_filter = ["action", "actor_kind"]
    search_fields = ["actor_name", "project_name", "environment_name"]
