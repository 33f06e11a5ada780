"""What a URL names, found or 404."""

from __future__ import annotations

from django.shortcuts import get_object_or_404

from environments.models import Environment, Job


def get_environment(project_slug: str, env_slug: str) -> Environment:
    return get_object_or_404(
        Environment.objects.select_related("project"), project__slug=project_slug, slug=env_slug
    )


def get_job(job_id: int) -> Job:
    return get_object_or_404(
        Job.objects.select_related(
            "environment__project",
            "environment__promotion_from",
            "environment__approver_group",
            "requested_by",
            "backup",
            "restore_from",
        ),
        pk=job_id,
    )
