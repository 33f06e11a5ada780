from django.urls import path

from environments import api
from environments.pages import (
    approvals_page,
    audit_page,
    drift_page,
    environments_page,
    graph_page,
    jobs_page,
    live_parts,
    rollouts_page,
    round_trips_page,
    tokens_page,
)

urlpatterns = [
    path("", environments_page.overview, name="overview"),
    path("jobs/<int:job_id>/", jobs_page.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/live", jobs_page.job_live, name="job_live"),
    path("jobs/<int:job_id>/<str:action>", jobs_page.job_action, name="job_action"),
    path("rollouts/", rollouts_page.rollout_list, name="rollouts"),
    path("rollouts/new", rollouts_page.rollout_new, name="rollout_new"),
    path("rollouts/<int:rollout_id>/", rollouts_page.rollout_detail, name="rollout_detail"),
    path("rollouts/<int:rollout_id>/live", rollouts_page.rollout_live, name="rollout_live"),
    path(
        "rollouts/<int:rollout_id>/targets/<int:target_id>/skip",
        rollouts_page.rollout_skip,
        name="rollout_skip",
    ),
    path(
        "rollouts/<int:rollout_id>/<str:action>",
        rollouts_page.rollout_action,
        name="rollout_action",
    ),
    path("approvals/", approvals_page.approvals_queue, name="approvals"),
    path("approvals/live", approvals_page.approvals_live, name="approvals_live"),
    path("live/nav", live_parts.nav_live, name="nav_live"),
    path("tokens/", tokens_page.api_tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", tokens_page.api_token_revoke, name="token_revoke"),
    path("audit/", audit_page.audit_log, name="audit_log"),
    path("audit/export.<str:fmt>", audit_page.audit_download, name="audit_export"),
    path("api/v1/status", api.api_status, name="api_status"),
    path("api/v1/projects/<slug:project_slug>/graph", api.api_graph, name="api_graph"),
    path(
        "api/v1/projects/<slug:project_slug>/environments/<slug:env_slug>/jobs",
        api.job_create,
        name="api_job_create",
    ),
    path("api/v1/jobs/<int:job_id>", api.job_read, name="api_job"),
    path(
        "api/v1/projects/<slug:project_slug>/rollouts",
        api.rollout_create,
        name="api_rollout_create",
    ),
    path("api/v1/rollouts/<int:rollout_id>", api.rollout_read, name="api_rollout"),
    path(
        "api/v1/rollouts/<int:rollout_id>/<str:action>",
        api.rollout_action,
        name="api_rollout_action",
    ),
    path("api/v1/jobs/<int:job_id>/<str:action>", api.job_action, name="api_job_action"),
    path("projects/<slug:project_slug>/", environments_page.project_detail, name="project_detail"),
    path("projects/<slug:project_slug>/graph", graph_page.project_graph, name="project_graph"),
    path("projects/<slug:project_slug>/drift", drift_page.project_drift, name="project_drift"),
    path(
        "projects/<slug:project_slug>/round-trips",
        round_trips_page.project_round_trips,
        name="project_round_trips",
    ),
    path(
        "projects/<slug:project_slug>/round-trips/run",
        round_trips_page.project_round_trips_run,
        name="project_round_trips_run",
    ),
    path(
        "projects/<slug:project_slug>/drift/check",
        drift_page.project_drift_check,
        name="project_drift_check",
    ),
    path(
        "projects/<slug:project_slug>/revisions/<str:revision>",
        graph_page.revision_panel,
        name="revision_panel",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/",
        environments_page.environment_detail,
        name="environment_detail",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/jobs/new",
        jobs_page.job_new,
        name="job_new",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/jobs/<int:job_id>/<str:decision>",
        jobs_page.job_decide,
        name="job_decide",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/card",
        environments_page.environment_card_live,
        name="environment_card_live",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/refresh",
        environments_page.environment_refresh,
        name="environment_refresh",
    ),
]
