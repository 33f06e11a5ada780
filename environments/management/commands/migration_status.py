import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from environments import gate, overviews, reads


class Command(BaseCommand):
    # a read-only command a CI job runs on every build: Django's checks belong to `manage.py
    # check` (and the web process), not to the start-up of every gate
    requires_system_checks: list[str] = []
    help = (
        "Read each environment's migration state. Exit 0 when all are current, 1 when any is "
        "behind, unknown, uninitialized or the scripts have several heads the project does not "
        "expect (a merge is missing), 2 when any could not be read."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", help="project slug or name")
        parser.add_argument("--env", help="environment slug or name")
        parser.add_argument("--json", action="store_true", help="print a JSON array")
        parser.add_argument(
            "--label",
            action="append",
            default=[],
            help="only environments with this label, name:value (repeat: all of them)",
        )
        parser.add_argument(
            "--status", action="append", default=[], help="only environments in this status"
        )

    def handle(self, *args, **options) -> None:
        projects = overviews.projects_listed()
        if options["project"]:
            projects = projects.filter(Q(slug=options["project"]) | Q(name=options["project"]))
            if not projects.exists():
                raise CommandError(f"No project {options['project']!r}.", returncode=2)
        try:
            wanted = overviews.CardFilter.parse(options["status"], options["label"])
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None
        projects = list(projects)
        named = [
            environment
            for project in projects
            for environment in project.environments.all()
            if not options["env"] or options["env"] in {environment.slug, environment.name}
        ]
        if options["env"] and not named:
            raise CommandError(f"No environment {options['env']!r}.", returncode=2)
        # only the databases the labels leave are read, and only their projects' scripts;
        # the status is known once read
        labelled = [environment for environment in named if wanted.labels_match(environment)]
        holding = {environment.project_id for environment in named}
        if options["env"]:
            projects = [project for project in projects if project.pk in holding]
        built = gate.gate_read(projects=projects, environments=labelled)
        unexpected_heads = any(
            overview.project.pk in holding
            and overview.heads is not None
            and not overview.heads.expected
            for overview in built
        )
        rows = [(overview, card) for overview in built for card in overview.cards if wanted(card)]
        states = [card.state for _, card in rows]
        if options["json"]:
            payload = [
                card.state.as_status_dict() | overview.heads_dict() for overview, card in rows
            ]
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            for overview, card in rows:
                self.stdout.write(self._line(overview, card))
        sys.exit(reads.exit_code_for(states, unexpected_heads=unexpected_heads))

    def _line(self, overview, card) -> str:
        snap = card.state
        text = f"{card.environment.project.slug}/{card.environment.slug}: {snap.status}"
        if not snap.is_read_failure:  # a database that could not be read is at no revision
            text += f" at {','.join(h[:12] for h in snap.heads) or 'an empty version table'}"
        if snap.pending:
            text += f", {len(snap.pending)} pending"
        if overview.heads is not None and overview.heads.several:
            text += f" (scripts: {overview.heads.sentence})"
        if snap.error:
            text += f" — {snap.error}"
        return text
