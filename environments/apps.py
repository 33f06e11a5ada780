from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    """The app. Its signal receivers (audit of registry edits and logins, the roles after
    migrate) are connected when its models are loaded: see environments/models/__init__.py."""

    name = "environments"
    verbose_name = "Projects and environments"
