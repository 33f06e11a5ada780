import json
import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from environments import rollout_plans, rollouts, transitions
from environments.models import Project, Rollout
from environments.rollout_board import rollout_json
from environments.rollout_forms import RolloutForm

# where a rollout is done with, for --wait: it ended, or the failure policy stopped it
SETTLED = (*Rollout.FINISHED, Rollout.Status.STOPPED)


class Command(BaseCommand):
    help = (
        "Roll one target out across a project's environments in waves, through the same "
        "services (and rules) as the pages. `start` asks for it (a worker plans it, then it is "
        "submitted: it runs at once, or once approved where the targets' policy asks); with "
        "--wait it blocks until the rollout ends or stops, prints it as JSON and exits 0 only "
        "if every target holds the target. `show ID` prints one; `pause`, `resume`, `retry` "
        "(the failed targets), `cancel`, `submit`, `approve` and `reject` act on one."
    )

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        start = commands.add_parser("start", help="ask for a rollout")
        start.add_argument("project", help="project slug or name")
        start.add_argument("--as", dest="username", required=True, help="the requesting user")
        start.add_argument("--target", default="heads", help="heads, a revision, label@head")
        start.add_argument(
            "--label", action="append", default=[], help="name=value the environments have"
        )
        start.add_argument(
            "--wave",
            action="append",
            default=[],
            help="a wave, in order: 'canary: count=2 parallel=1', 'rest: parallel=8'",
        )
        start.add_argument("--on-failure", default="stop", help="stop, continue, 3 or 10%%")
        start.add_argument("--no-backup", action="store_true", help="no backup first")
        start.add_argument("--reason", default="")
        start.add_argument("--wait", action="store_true", help="wait for it to end")
        start.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait")
        show = commands.add_parser("show", help="print a rollout as JSON")
        show.add_argument("rollout", type=int)
        for name in (*rollouts.ACTIONS, "approve", "reject"):
            action = commands.add_parser(name, help=f"{name} a rollout")
            action.add_argument("rollout", type=int)
            action.add_argument("--as", dest="username", required=True)
            if name in ("approve", "reject"):
                action.add_argument("--plan", required=True, help="the plans' SHA-256 you read")
                action.add_argument("--comment", default="")

    def handle(self, *args, **options) -> None:
        command = options["command"]
        if command == "start":
            return self._start(options)
        rollout = Rollout.objects.select_related("project").filter(pk=options["rollout"]).first()
        if rollout is None:
            raise CommandError(f"No rollout #{options['rollout']}.", returncode=2)
        if command != "show":
            user = _user(options["username"])
            try:
                if command in ("approve", "reject"):
                    rollouts.rollout_decide(
                        rollout=rollout,
                        user=user,
                        decision=command,
                        plan_sha256=options["plan"],
                        comment=options["comment"],
                    )
                else:
                    rollouts.ACTIONS[command](rollout=rollout, user=user)
            except transitions.Refused as exc:
                raise CommandError(str(exc), returncode=1) from None
            rollout.refresh_from_db()
        self.stdout.write(json.dumps(rollout_json(rollout)))

    def _start(self, options) -> None:
        user = _user(options["username"])
        name = options["project"]
        project = Project.objects.filter(Q(slug=name) | Q(name=name)).first()
        if project is None:
            raise CommandError(f"No project {name!r}.", returncode=2)
        labels = dict(label.partition("=")[::2] for label in options["label"])
        form = RolloutForm(
            {
                "target": options["target"],
                "labels": labels,
                "waves": "\n".join(options["wave"] or ["all: parallel=4"]),
                "on_failure": options["on_failure"],
                "backup": "no" if options["no_backup"] else "",
                "reason": options["reason"],
            }
        )
        if not form.is_valid():
            raise CommandError(form.errors_sentence(), returncode=2)
        try:
            rollout = rollout_plans.rollout_request(user=user, start=True, **form.request(project))
        except transitions.Refused as exc:
            raise CommandError(str(exc), returncode=1) from None
        if not options["wait"]:
            self.stdout.write(json.dumps(rollout_json(rollout)))
            return
        # what happens goes to stderr as it happens; stdout keeps one JSON document
        deadline = time.monotonic() + options["timeout"]
        said = None
        while rollout.status not in SETTLED and time.monotonic() < deadline:
            seen = (rollout.status, rollout.targets.filter(state="running").count())
            if seen != said:
                said = seen
                self.stderr.write(f"rollout #{rollout.pk}: {rollout.status} ({seen[1]} running)")
            time.sleep(1)
            rollout.refresh_from_db()
        if rollout.status not in SETTLED:
            self.stderr.write(
                f"rollout #{rollout.pk} is still {rollout.status.replace('_', ' ')} after "
                f"{options['timeout']:g} s; it goes on without this command."
            )
        found = rollout_json(rollout)
        self.stdout.write(json.dumps(found))
        counts = found["counts"]
        if rollout.status != Rollout.Status.COMPLETED or counts["done"] != counts["total"]:
            sys.exit(1)


def _user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise CommandError(f"No active user {username!r}.", returncode=2)
    return user
