from django.urls import path

from environments import api, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/live", views.job_live, name="job_live"),
    path("jobs/<int:job_id>/<str:action>", views.job_action, name="job_action"),
    path("approvals/", views.approvals_queue, name="approvals"),
    path("approvals/live", views.approvals_live, name="approvals_live"),
    path("live/nav", views.nav_live, name="nav_live"),
    path("tokens/", views.api_tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", views.api_token_revoke, name="token_revoke"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.<str:fmt>", views.audit_export, name="audit_export"),
    path("api/v1/status", views.api_status, name="api_status"),
    path("api/v1/projects/<slug:project_slug>/graph", views.api_graph, name="api_graph"),
    path(
        "api/v1/projects/<slug:project_slug>/environments/<slug:env_slug>/jobs",
        api.job_create,
        name="api_job_create",
    ),
    path("api/v1/jobs/<int:job_id>", api.job_read, name="api_job"),
    path("api/v1/jobs/<int:job_id>/<str:action>", api.job_action, name="api_job_action"),
    path("projects/<slug:project_slug>/", views.project_detail, name="project_detail"),
    path("projects/<slug:project_slug>/graph", views.project_graph, name="project_graph"),
    path("projects/<slug:project_slug>/drift", views.project_drift, name="project_drift"),
    path(
        "projects/<slug:project_slug>/drift/check",
        views.project_drift_check,
        name="project_drift_check",
    ),
    path(
        "projects/<slug:project_slug>/revisions/<str:revision>",
        views.revision_panel,
        name="revision_panel",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/",
        views.environment_detail,
        name="environment_detail",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/jobs/new",
        views.job_new,
        name="job_new",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/jobs/<int:job_id>/<str:decision>",
        views.job_decide,
        name="job_decide",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/refresh",
        views.environment_refresh,
        name="environment_refresh",
    ),
]
