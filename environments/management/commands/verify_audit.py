import json
import sys

from django.core.management.base import BaseCommand

from environments import audit_chain
from environments.audit import acting_as


class Command(BaseCommand):
    help = (
        "Walk the audit chain from its first event and check every hash and link, and that the "
        "head verified last time is still there. Exit 0 when it is intact, 1 naming the first "
        "broken link. A break once found stays reported until acknowledged."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument(
            "--acknowledge",
            metavar="REASON",
            help="clear a recorded break after looking into it (audited with the reason)",
        )

    def handle(self, *args, **options) -> None:
        if options["acknowledge"]:
            with acting_as("verify_audit"):
                report = audit_chain.audit_acknowledge(reason=options["acknowledge"])
        else:
            report = audit_chain.audit_verify_full()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": report.ok,
                        "verified_through": report.verified_through,
                        "head_hash": report.head_hash if report.ok else None,
                        "broken_event": report.broken_seq,
                        "reason": report.reason or None,
                    }
                )
            )
        elif report.ok:
            self.stdout.write(
                f"{report.message} {report.checked} events checked; head hash {report.head_hash}."
            )
        else:
            self.stderr.write(report.message)
        if not report.ok:
            sys.exit(1)
