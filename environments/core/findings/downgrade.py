"""Whether `alembic downgrade` through a revision can undo it: a downgrade() that is missing,
does nothing, or only raises."""

from __future__ import annotations

import ast

from environments.core.findings.kinds import IRREVERSIBLE_DOWNGRADE, Finding
from environments.core.findings.source import ModuleContext


def irreversible_downgrade(context: ModuleContext) -> list[Finding]:
    node = context.functions.get("downgrade")
    if node is None:
        return [
            Finding(
                IRREVERSIBLE_DOWNGRADE,
                "missing",
                "downgrade",
                1,
                "the file has no downgrade() function: this revision cannot be undone",
            )
        ]
    body = _without_docstring(node.body)
    upgrade = context.functions.get("upgrade")
    if _does_nothing(body):
        if upgrade is not None and _does_nothing(_without_docstring(upgrade.body)):
            return []  # nothing to undo, e.g. a merge revision
        first = body[0] if body else node
        how = "only a docstring" if not body else "pass" if isinstance(first, ast.Pass) else "..."
        return [
            Finding(
                IRREVERSIBLE_DOWNGRADE,
                "pass",
                "downgrade",
                first.lineno,
                f"downgrade() does nothing ({how}): this revision cannot be undone",
            )
        ]
    for statement in body:
        if isinstance(statement, ast.Raise):
            return [
                Finding(
                    IRREVERSIBLE_DOWNGRADE,
                    "raise",
                    "downgrade",
                    statement.lineno,
                    f"downgrade() raises {_exception_name(statement)}: "
                    "this revision cannot be undone",
                )
            ]
    return []


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:]
    return body


def _does_nothing(body: list[ast.stmt]) -> bool:
    return all(
        isinstance(statement, ast.Pass)
        or (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
            and statement.value.value is Ellipsis
        )
        for statement in body
    )


def _exception_name(statement: ast.Raise) -> str:
    exception = statement.exc
    if isinstance(exception, ast.Call):
        exception = exception.func
    if isinstance(exception, ast.Name | ast.Attribute):
        return ast.unparse(exception)
    return "an exception"
