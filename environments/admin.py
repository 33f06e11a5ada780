from django.contrib import admin, messages

from environments import approvals, tokens, transitions
from environments.discovery_forms import DiscoveryForm
from environments.forms import EnvironmentForm, ProjectForm
from environments.models import (
    ApiToken,
    Approval,
    AuditEvent,
    CurrentState,
    Discovery,
    Environment,
    Job,
    Notification,
    Project,
    ProjectRole,
    StateChange,
)


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


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ["name", "slug", "alembic_ini", "version_table"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [EnvironmentInline, ProjectRoleInline]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = ["name", "project", "position", "url_for_display", "discovered_by", "gone_at"]
    list_filter = ["project", "discovered_by"]
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Discovery)
class DiscoveryAdmin(admin.ModelAdmin):
    form = DiscoveryForm
    list_display = ["name", "project", "found", "checked_at", "error"]
    list_filter = ["project"]
    readonly_fields = ["found", "checked_at", "error"]


@admin.register(CurrentState)
class CurrentStateAdmin(admin.ModelAdmin):
    list_display = ["environment", "status", "checked_at", "changed_at", "duration_ms"]
    list_filter = ["status", "environment__project"]
    readonly_fields = [f.name for f in CurrentState._meta.fields]

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


@admin.register(StateChange)
class StateChangeAdmin(ReadOnlyAdmin):
    list_display = ["at", "environment", "from_status", "status", "job", "out_of_band"]
    list_filter = ["status", "out_of_band", "environment__project"]
