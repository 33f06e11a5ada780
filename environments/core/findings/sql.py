"""What SQL a migration runs does to data: the statements that delete, update, drop or
truncate, found in the SQL text (literals and comments aside) or in SQLAlchemy constructs."""

from __future__ import annotations

import ast
import re

from environments.core.findings.source import called_name

_EXCERPT_LENGTH = 80


# Keywords that name a trigger event, a referential action or a lock, not a statement that runs.
_NOT_A_STATEMENT_AFTER = {"ON", "FOR", "BEFORE", "AFTER", "OF", "OR"}


_SQL_KEYWORD = re.compile(r"\b(DELETE|UPDATE|DROP|TRUNCATE)\b", re.IGNORECASE)


_SQL_NOISE = re.compile(
    r"'(?:[^']|'')*'"  # string literals
    r'|"(?:[^"]|"")*"'  # quoted identifiers
    r"|--[^\n]*"  # line comments
    r"|/\*.*?\*/",  # block comments
    re.DOTALL,
)


_DROP_WHAT = {
    "TABLE": "drops a table",
    "COLUMN": "drops a column",
    "INDEX": "drops an index",
    "CONSTRAINT": "drops a constraint",
    "VIEW": "drops a view",
    "SCHEMA": "drops a schema",
    "DATABASE": "drops a database",
}


# SQLAlchemy constructs passed to execute() instead of SQL text.
_CORE_EFFECTS = {
    "delete": "deletes rows",
    "update": "updates rows",
    "DropTable": "drops a table",
    "DropIndex": "drops an index",
    "DropConstraint": "drops a constraint",
    "DropSchema": "drops a schema",
    "DropSequence": "drops a sequence",
}


def sql_effects(sql: str) -> list[str]:
    """What the data-changing statements in `sql` do, in order of first appearance."""
    code = _SQL_NOISE.sub(" ", sql)
    effects: list[str] = []
    for statement in code.split(";"):
        words = statement.split()
        if words and words[0].upper() in {"GRANT", "REVOKE"}:
            continue  # privileges on DELETE/UPDATE, not the statements themselves
        for match in _SQL_KEYWORD.finditer(statement):
            before = statement[: match.start()].split()
            if before and before[-1].upper() in _NOT_A_STATEMENT_AFTER:
                continue
            after = statement[match.end() :].split()
            following = after[0].upper() if after else ""
            keyword = match.group(1).upper()
            if keyword == "DROP":
                if following in {"NOT", "DEFAULT"}:
                    continue  # ALTER COLUMN ... DROP NOT NULL / DROP DEFAULT keep the data
                effect = _DROP_WHAT.get(following, "drops database objects")
            else:
                effect = {"DELETE": "deletes rows", "UPDATE": "updates rows"}.get(
                    keyword, "empties tables"
                )
            if effect not in effects:
                effects.append(effect)
    return effects


def construct_effects(node: ast.expr) -> list[str]:
    effects: list[str] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            effect = _CORE_EFFECTS.get(called_name(child) or "")
            if effect is not None and effect not in effects:
                effects.append(effect)
    return effects


def join(effects: list[str]) -> str:
    if len(effects) == 1:
        return effects[0]
    return ", ".join(effects[:-1]) + " and " + effects[-1]


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _EXCERPT_LENGTH:
        return flat
    cut = flat[:_EXCERPT_LENGTH].rsplit(" ", 1)[0]
    return f"{cut} …"
