from django.urls import path

from environments import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("api/v1/status", views.api_status, name="api_status"),
    path("projects/<slug:project_slug>/", views.project_detail, name="project_detail"),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/",
        views.environment_detail,
        name="environment_detail",
    ),
    path(
        "projects/<slug:project_slug>/environments/<slug:env_slug>/refresh",
        views.environment_refresh,
        name="environment_refresh",
    ),
]
