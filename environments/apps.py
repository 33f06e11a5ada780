from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "Projects and environments"

    def ready(self) -> None:
        from environments import roles, signals  # noqa: F401 - connect their receivers
