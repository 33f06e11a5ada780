import json
import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from environments import approvals, forms, transitions
from environments.models import Environment, Job


class Command(BaseCommand):
    help = (
        "Plan a job and ask for it to run, through the same services (and rules) as the pages: "
        "it is queued at once, or waits for the approvals its environment's policy asks for. "
        "With --wait, block until it ends, print it as JSON and exit 0 only if it succeeded."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("project", help="project slug or name")
        parser.add_argument("environment", help="environment slug or name")
        parser.add_argument(
            "--kind", required=True, choices=[k.value for k in Job.Kind if k != Job.Kind.REHEARSE]
        )
        parser.add_argument("--target", default="", help="heads, a revision, label@head, +N/-N…")
        parser.add_argument("--backup", type=int, help="backup id (restore jobs)")
        parser.add_argument("--as", dest="username", required=True, help="the requesting user")
        parser.add_argument("--reason", default="")
        parser.add_argument(
            "--no-backup",
            action="store_true",
            help="skip the backup before an upgrade or downgrade (refused where mandatory)",
        )
        parser.add_argument(
            "--sql",
            action="store_true",
            help="render the plan's SQL now (it is rendered anyway where approvers read it)",
        )
        parser.add_argument("--wait", action="store_true", help="wait for the job to end")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait")

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {options['username']!r}.", returncode=2)
        environment = (
            Environment.objects.select_related("project")
            .filter(Q(project__slug=options["project"]) | Q(project__name=options["project"]))
            .filter(Q(slug=options["environment"]) | Q(name=options["environment"]))
            .first()
        )
        if environment is None:
            raise CommandError(
                f"No environment {options['environment']!r} in project {options['project']!r}.",
                returncode=2,
            )
        form = forms.job_request_from_cli(options, environment)
        if not form.is_valid():
            raise CommandError(form.errors_sentence(), returncode=2)
        try:
            job = approvals.job_request_and_submit(user=user, **form.request())
        except transitions.Refused as exc:
            raise CommandError(str(exc), returncode=1) from None
        if not options["wait"]:
            self.stdout.write(json.dumps(_as_json(job)))
            return
        # what is happening goes to stderr as it happens; stdout keeps one JSON document
        deadline = time.monotonic() + options["timeout"]
        said = None
        while not job.is_finished and time.monotonic() < deadline:
            if job.status != said:
                said = job.status
                self.stderr.write(_progress(job, options["timeout"]))
            time.sleep(0.5)
            job.refresh_from_db()
        if not job.is_finished:
            self.stderr.write(
                f"job #{job.pk} is still {job.status.replace('_', ' ')} after "
                f"{options['timeout']:g} s; it goes on without this command "
                f"({job.get_absolute_url()})."
            )
        self.stdout.write(json.dumps(_as_json(job)))
        if job.status != Job.Status.SUCCEEDED:
            sys.exit(1)


def _progress(job: Job, timeout: float) -> str:
    if job.status == Job.Status.AWAITING_APPROVAL:
        missing = job.approvals_missing()
        plural = "s" if missing != 1 else ""
        return (
            f"job #{job.pk} is awaiting approval: {missing} more approval{plural} needed "
            f"({job.get_absolute_url()}); waiting up to {timeout:g} s."
        )
    return f"job #{job.pk} is {job.status.replace('_', ' ')}."


def _as_json(job: Job) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "kind": job.kind,
        "target": job.target,
        "from_heads": job.from_heads,
        "to_heads": job.to_heads,
        "result_heads": job.result_heads,
        "backup_path": job.backup.path if job.backup else None,
        "error": job.error or None,
    }
