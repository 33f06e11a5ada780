from django.core.management.base import BaseCommand, CommandError

from environments import configfile
from environments.audit import acting_as


class Command(BaseCommand):
    help = "Create or update projects and environments from a TOML file (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="path to the TOML file")

    def handle(self, *args, **options) -> None:
        try:
            with acting_as("apply_config"):
                report = configfile.apply_file(options["file"])
        except configfile.ConfigError as exc:
            raise CommandError(str(exc)) from None
        for line in report.lines():
            self.stdout.write(line)
        summary = "changed" if report.changed else "nothing changed"
        self.stdout.write(
            self.style.SUCCESS(
                f"{summary}: {len(report.created)} created, "
                f"{len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged"
            )
        )
