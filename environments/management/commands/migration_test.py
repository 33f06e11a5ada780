import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from environments import round_trips
from environments.models import Project


class Command(BaseCommand):
    help = (
        "Round-trip a project's history on scratch databases of the dialects its environments "
        "use: each revision upgraded, downgraded and upgraded again, the schemas compared. "
        "Exit 0 when every revision round-trips, 1 when one does not, 2 when it cannot run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("project", help="project slug or name")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")

    def handle(self, *args, **options) -> None:
        wanted = options["project"]
        project = Project.objects.filter(Q(slug=wanted) | Q(name=wanted)).first()
        if project is None:
            raise CommandError(f"No project {wanted!r}.", returncode=2)
        dialects = round_trips.dialects_of(project)
        if not dialects:
            raise CommandError(
                f"{project.name} has no SQLite or PostgreSQL environment to take a dialect from.",
                returncode=2,
            )
        try:
            results = [
                round_trips.round_trip(project, dialect, url) for dialect, url in dialects.items()
            ]
        except round_trips.RoundTripError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if options["json"]:
            self.stdout.write(json.dumps({"project": project.slug, "results": results}, indent=2))
        else:
            for result in results:
                self.stdout.write(f"{project.name} on {result['dialect']}:")
                for problem in result["problems"]:  # the history as a whole: heads, models
                    self.stdout.write(f"  FAILED: {problem}")
                for step in result["revisions"]:
                    verdict = "ok" if step["ok"] else "FAILED"
                    self.stdout.write(f"  {step['revision']}: {verdict}")
                    for problem in step["problems"]:
                        self.stdout.write(f"    - {problem}")
                for revision in result["not_reached"]:
                    self.stdout.write(f"  {revision}: not reached")
                if result.get("models") in (round_trips.MODELS_MATCH, round_trips.MODELS_UNNAMED):
                    self.stdout.write(f"  models: {result['models']}")
        if not all(result["ok"] for result in results):
            sys.exit(1)
