import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from environments import drift
from environments.models import Project


class Command(BaseCommand):
    help = (
        "Report drift for a project: revisions one environment holds and its neighbour lacks, "
        "revisions unknown to the scripts, and schema differences between environments at the "
        "same revision. Exit 0 when there is none, 1 when there is drift, 2 when a database "
        "could not be read."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("project", help="project slug or name")
        parser.add_argument("--env", help="only findings that involve this environment")
        parser.add_argument("--json", action="store_true", help="print a JSON array")
        parser.add_argument(
            "--no-expected",
            action="store_true",
            help="skip comparing each live schema with the one its migrations build",
        )
        parser.add_argument(
            "--cross-dialect",
            action="store_true",
            help="also compare schemas across dialects (SQLite with PostgreSQL) by generic type",
        )

    def handle(self, *args, **options) -> None:
        name = options["project"]
        project = Project.objects.filter(Q(slug=name) | Q(name=name)).first()
        if project is None:
            raise CommandError(f"No project {name!r}.", returncode=2)
        env = options["env"]
        if env:
            match = project.environments.filter(Q(slug=env) | Q(name=env)).first()
            if match is None:
                raise CommandError(f"No environment {env!r} in {project.name}.", returncode=2)
            env = match.slug
        report = drift.drift_build(
            project=project,
            cross_dialect=options["cross_dialect"],
            expected="off" if options["no_expected"] else "build",
        )
        if report.index_error:
            raise CommandError(f"The scripts cannot be read: {report.index_error}", returncode=2)
        findings = report.involving(env)
        if options["json"]:
            self.stdout.write(json.dumps([f.as_dict() for f in findings], indent=2))
        elif not findings:
            compared = ", ".join(f"{a}={b}" for a, b in report.schemas_compared) or "none"
            built = ", ".join(report.expected_compared) or "none"
            self.stdout.write(
                f"No drift in {project.name} (schemas compared: {compared}; "
                f"with what their migrations build: {built})."
            )
        else:
            for finding in findings:
                self.stdout.write(f"[{finding.kind}] {finding.detail}")
        unreadable = any(f.kind == "unreadable" for f in findings)
        sys.exit(2 if unreadable else 1 if findings else 0)
