"""Database functions Django does not ship, for the dashboard's two backends (PostgreSQL and
SQLite)."""

from __future__ import annotations

import json

from django.db.models import F, Func, IntegerField, TextField


class JSONArrayLength(Func):
    """How many items a JSON array holds (NULL for NULL): SQLite's JSON_ARRAY_LENGTH,
    PostgreSQL's JSONB_ARRAY_LENGTH (a JSONField is jsonb there)."""

    function = "JSON_ARRAY_LENGTH"
    output_field = IntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="JSONB_ARRAY_LENGTH", **extra_context)


class JSONKeyText(Func):
    """The value at `key` of a JSON object, as text (NULL where the key is missing or null).
    The key is always a name: Django's KeyTextTransform reads a key such as "2024" as an array
    index, so a label named 2024 would never match."""

    output_field = TextField()

    def __init__(self, field: str, key: str) -> None:
        self.key = key
        super().__init__(F(field))

    def _column(self, compiler):
        return compiler.compile(self.get_source_expressions()[0])

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = self._column(compiler)
        return f"({sql} ->> %s::text)", [*params, self.key]

    def as_sqlite(self, compiler, connection, **extra_context):
        sql, params = self._column(compiler)
        if '"' in self.key or "\\" in self.key:  # no label is named so; a JSON path can't say it
            return "NULL", []
        path = "$." + json.dumps(self.key, ensure_ascii=False)
        return f"CAST(JSON_EXTRACT({sql}, %s) AS TEXT)", [*params, path]


class BinaryOrder(Func):
    """Text ordered by code point on either backend (PostgreSQL's default collation would sort
    "EU" and "eu-west" as the language does)."""

    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return f'({sql}) COLLATE "C"', params

    def as_sqlite(self, compiler, connection, **extra_context):
        return compiler.compile(self.get_source_expressions()[0])  # BINARY is SQLite's default
