"""On PostgreSQL a trigger refuses UPDATE and DELETE on audit events, whoever sends them."""

from django.db import migrations

TABLE = "environments_auditevent"

CREATE = f"""
CREATE OR REPLACE FUNCTION retort_audit_refuse() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER retort_audit_append_only
    BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION retort_audit_refuse();
"""

DROP = f"""
DROP TRIGGER IF EXISTS retort_audit_append_only ON {TABLE};
DROP FUNCTION IF EXISTS retort_audit_refuse();
"""


def create_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


def create_checkpoint(apps, schema_editor) -> None:
    apps.get_model("environments", "AuditCheckpoint").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("environments", "0002_audit")]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger),
        migrations.RunPython(create_checkpoint, migrations.RunPython.noop),
    ]
