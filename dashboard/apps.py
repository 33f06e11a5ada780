"""The admin's app config: its registrations (environments/admin.py) load with the URLs
(dashboard/urls.py), not at start-up, so a command that serves no page — the CI gate — does
not import every module an admin action calls. Its system checks load them first."""

from django.contrib import admin
from django.contrib.admin.apps import SimpleAdminConfig
from django.contrib.admin.checks import check_admin_app, check_dependencies
from django.core import checks


def check_admin_registrations(app_configs, **kwargs):  # noqa: ANN001, ANN201 - a system check
    """Django's admin check, run on every registration whether the URLs were loaded or not."""
    admin.autodiscover()
    return check_admin_app(app_configs, **kwargs)


class RetortAdminConfig(SimpleAdminConfig):
    def ready(self) -> None:
        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(check_admin_registrations, checks.Tags.admin)
