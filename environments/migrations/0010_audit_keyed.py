"""The audit chain becomes keyed (HMAC-SHA256 with RETORT_AUDIT_KEY), and PostgreSQL refuses
TRUNCATE of the audit table as it already refuses UPDATE and DELETE.

Events written before this migration carry plain SHA-256 hashes. They are verified as they are
(the migration stops, naming the event, if the chain is already broken) and then sealed again
with the key, in order, so the whole trail verifies one way.
"""

import hashlib
import hmac
import json

from django.db import migrations

TABLE = "environments_auditevent"
HASHED_FIELDS = (
    "seq", "created_at", "actor_kind", "actor_id", "actor_name", "action", "project_id",
    "project_name", "project_slug", "environment_id", "environment_name", "environment_slug",
    "job_id", "from_revisions", "to_revisions", "details_json", "ip", "user_agent",
)  # fmt: skip

TRUNCATE = f"""
CREATE OR REPLACE FUNCTION retort_audit_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('retort.audit_truncate', true) = 'allowed' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: TRUNCATE refused on %', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER retort_audit_no_truncate
    BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION retort_audit_refuse_truncate();
"""
DROP_TRUNCATE = f"""
DROP TRIGGER IF EXISTS retort_audit_no_truncate ON {TABLE};
DROP FUNCTION IF EXISTS retort_audit_refuse_truncate();
"""


def _content(event, version: int) -> str:
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    values["created_at"] = event.created_at.isoformat(timespec="microseconds")
    values["v"] = version
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def reseal(apps, schema_editor) -> None:
    from environments.audit import GENESIS, audit_key

    AuditEvent = apps.get_model("environments", "AuditEvent")
    Checkpoint = apps.get_model("environments", "AuditCheckpoint")
    events = list(AuditEvent.objects.order_by("seq"))
    if not events:
        return
    key = audit_key()
    old_prev, new_prev, sealed = GENESIS, GENESIS, {}
    for expected, event in enumerate(events, start=1):
        content = _content(event, 1)
        plain = hashlib.sha256(f"{old_prev}\n{content}".encode()).hexdigest()
        if event.seq != expected or event.prev_hash != old_prev or event.hash != plain:
            raise RuntimeError(
                f"The audit chain is broken at event {event.seq}; it was not sealed with the "
                "key. Investigate with the previous release's manage.py verify_audit first."
            )
        new_hash = hmac.new(
            key, f"{new_prev}\n{_content(event, 2)}".encode(), hashlib.sha256
        ).hexdigest()
        sealed[event.seq] = (new_prev, new_hash)
        old_prev, new_prev = event.hash, new_hash
    postgres = schema_editor.connection.vendor == "postgresql"
    with schema_editor.connection.cursor() as cursor:
        if postgres:
            cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER retort_audit_append_only")
        for seq, (prev_hash, new_hash) in sealed.items():
            cursor.execute(
                f"UPDATE {TABLE} SET prev_hash = %s, hash = %s WHERE seq = %s",
                [prev_hash, new_hash, seq],
            )
        if postgres:
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER retort_audit_append_only")
    checkpoint = Checkpoint.objects.filter(pk=1).first()
    if checkpoint is not None and checkpoint.verified_seq in sealed:
        checkpoint.verified_hash = sealed[checkpoint.verified_seq][1]
        checkpoint.save(update_fields=["verified_hash"])


def create_truncate_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRUNCATE, params=None)


def drop_truncate_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRUNCATE, params=None)


class Migration(migrations.Migration):
    dependencies = [("environments", "0009_job_dispatch")]

    operations = [
        migrations.RunPython(reseal, migrations.RunPython.noop),
        migrations.RunPython(create_truncate_trigger, drop_truncate_trigger),
    ]
