"""`manage.py flush`, refused while the audit trail holds events.

Django's flush empties every table, the append-only audit trail with it; afterwards the trail
would simply say "empty". Set RETORT_AUDIT_FLUSH_ALLOWED=1 in the environment of a throwaway
database (the test suite does) to let it through; on PostgreSQL it then also lifts the
TRUNCATE trigger for this one session.
"""

import os

from django.core.management.base import CommandError
from django.core.management.commands.flush import Command as DjangoFlush
from django.db import connections

from environments.models import AuditEvent


class Command(DjangoFlush):
    help = DjangoFlush.help + " Refused while the audit trail holds events."

    def handle(self, **options) -> None:
        database = options["database"]
        allowed = os.environ.get("RETORT_AUDIT_FLUSH_ALLOWED") == "1"
        if not allowed and AuditEvent.objects.using(database).exists():
            raise CommandError(
                "The audit trail holds events, and flush would wipe it. Retort refuses: the "
                "trail is append-only. (For a throwaway database, set "
                "RETORT_AUDIT_FLUSH_ALLOWED=1.)"
            )
        connection = connections[database]
        if allowed and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET retort.audit_truncate = 'allowed'")
            try:
                super().handle(**options)
            finally:
                with connection.cursor() as cursor:
                    cursor.execute("RESET retort.audit_truncate")
            return
        super().handle(**options)
