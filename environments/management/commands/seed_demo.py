"""Build the demo: the sample project, three SQLite targets built by alembic itself, users."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from environments import configfile, drift, reads
from environments.audit import acting_as
from environments.core.runner import RunnerError
from environments.models import Environment, Project
from examples.inventory import revisions

DEMO_PASSWORD = "retort-demo"
DEMO_USERS = [
    # username, group, is_staff, is_superuser
    ("viewer", "viewer", False, False),
    ("developer", "developer", False, False),
    ("release", "release_manager", False, False),
    ("release2", "release_manager", False, False),
    ("admin", "admin", True, True),
]


class Command(BaseCommand):
    help = "Seed the demo: sample project, dev at head, staging 3 behind, prod 6 behind, users."

    def handle(self, *args, **options) -> None:
        example = Path(settings.BASE_DIR, "examples", "inventory")
        demo_dir = Path(settings.DATA_DIR, "demo")
        demo_dir.mkdir(parents=True, exist_ok=True)
        targets = {
            "dev": revisions.DEV_TARGET,
            "staging": revisions.STAGING_TARGET,
            "prod": revisions.PROD_TARGET,
        }
        # dev runs without approval; staging needs one release manager; prod two, never the
        # requester, a backup first, and only revisions staging already holds.
        policies = {
            "dev": {"required_approvals": 0},
            "staging": {"required_approvals": 1, "approver_group": "release_manager"},
            "prod": {
                "required_approvals": 2,
                "approver_group": "release_manager",
                "backup_required": True,
                "promotion_from": "staging",
                "promotion_min_hours": 0,
            },
        }
        document = {
            "project": [
                {
                    "name": "inventory",
                    "alembic_ini": str(example / "alembic.ini"),
                    "environment": [
                        {"name": name, "url": f"sqlite:///{demo_dir / f'{name}.sqlite'}"}
                        | policies[name]
                        for name in targets
                    ],
                }
            ]
        }
        with acting_as("seed_demo"):
            report = configfile.apply(document, Path(settings.BASE_DIR))
        for line in report.lines():
            self.stdout.write(line)

        project = Project.objects.get(slug="inventory")
        for name, target in targets.items():
            database = demo_dir / f"{name}.sqlite"
            database.unlink(missing_ok=True)
            try:
                result = project.run_alembic(
                    ["upgrade", target], url=f"sqlite:///{database}", timeout=120
                )
            except RunnerError as exc:
                raise CommandError(f"alembic could not build {name}: {exc}") from None
            if not result.ok:
                raise CommandError(f"alembic upgrade {target} failed for {name}:\n{result.output}")
            self.stdout.write(f"built {name} at {target}")

        for username, group_name, is_staff, is_superuser in DEMO_USERS:
            group, _ = Group.objects.get_or_create(name=group_name)
            user, _ = get_user_model().objects.get_or_create(username=username)
            user.is_staff, user.is_superuser = is_staff, is_superuser
            user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.add(group)

        environments = list(Environment.objects.filter(project=project).select_related("project"))
        states = reads.environments_read(environments=environments)
        for environment in environments:
            state = states[environment.pk]
            self.stdout.write(f"{environment.name}: {state.status}, {len(state.pending)} pending")
        appeared, _ = drift.drift_record(project=project)  # the drift page opens on a check
        self.stdout.write(f"drift check: {len(appeared)} finding(s)")
        logins = ", ".join(f"{u} / {DEMO_PASSWORD}" for u, *_ in DEMO_USERS)
        self.stdout.write(self.style.SUCCESS(f"Demo ready. Logins: {logins}"))
