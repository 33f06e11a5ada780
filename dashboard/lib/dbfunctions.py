"""Database functions Django does not ship, for the dashboard's two backends."""

from __future__ import annotations

from django.db.models import Func, IntegerField


class JSONArrayLength(Func):
    """How many items a JSON array holds (NULL for NULL): SQLite's JSON_ARRAY_LENGTH,
    PostgreSQL's JSONB_ARRAY_LENGTH (a JSONField is jsonb there)."""

    function = "JSON_ARRAY_LENGTH"
    output_field = IntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="JSONB_ARRAY_LENGTH", **extra_context)
