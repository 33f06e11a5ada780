"""The walk over upgrade() and downgrade() (and the module-level helpers they call): each op
call, each execute() of SQL, each use of the migration's connection."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from environments.core.findings.kinds import DATA_MIGRATION, DESTRUCTIVE, Finding, Touch
from environments.core.findings.source import (
    ModuleContext,
    argument,
    called_name,
    single_assignments,
)
from environments.core.findings.sql import construct_effects, excerpt, join, sql_effects

_RUN_TIME = "(name computed at run time)"


_CONSTRAINT_TYPES = {
    "foreignkey": "foreign key constraint",
    "unique": "unique constraint",
    "check": "check constraint",
    "primary": "primary key constraint",
}


# op methods that add a constraint to a table (named in the second argument), by the kind of
# schema difference they bear on
_CREATES_CONSTRAINT = {
    "create_unique_constraint": "unique",
    "create_foreign_key": "fk",
    "create_check_constraint": "check",
    "create_primary_key": "primary_key",
}


@dataclass(frozen=True)
class _Table:
    """A table as the source names it: `name` is None when only known at run time."""

    name: str | None


class Scope(ast.NodeVisitor):
    """Walks one function (and the module-level helpers it calls) for the steps that matter."""

    def __init__(
        self,
        context: ModuleContext,
        function: str,
        node: ast.FunctionDef,
        visited: set[str] | None = None,
        binds: Iterable[str] = (),
    ) -> None:
        self.context = context
        self.function = function
        self.node = node
        self.visited = visited if visited is not None else {node.name}
        self.assignments = {**context.assignments, **single_assignments(ast.walk(node))}
        # Names holding op.get_bind()'s connection, however often they are assigned.
        self.binds = set(binds) | {
            target.id
            for child in ast.walk(node)
            if isinstance(child, ast.Assign) and context.is_op_call(child.value, "get_bind")
            for target in child.targets
            if isinstance(target, ast.Name)
        }
        self.batches: dict[str, _Table] = {}
        self.inline_get_binds: set[int] = set()  # `op.get_bind().execute(...)`: one finding
        self.findings: list[Finding] = []
        self.touches: list[Touch] = []

    def run(self) -> list[Finding]:
        for statement in self.node.body:
            self.visit(statement)
        return self.findings

    def add(self, kind: str, operation: str, node: ast.expr, detail: str) -> None:
        self.findings.append(Finding(kind, operation, self.function, node.lineno, detail))

    def touch(self, action: str, what: str, table: _Table, node: ast.expr, column=None) -> None:
        if table.name is None or (what == "column" and column is None):
            return  # named at run time: nothing to match against
        name = table.name.rsplit(".", 1)[-1]  # reflection names tables without their schema
        obj = f"{name}.{column}" if what == "column" else name
        self.touches.append(Touch(self.function, action, what, obj, node.lineno))

    # names and literals

    def literal(self, node: ast.expr | None, depth: int = 0) -> str | None:
        """The string a name argument holds, if the source says it literally."""
        if node is None or depth > 5:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.assignments:
            return self.literal(self.assignments[node.id], depth + 1)
        if self.context.is_op_call(node, "f") and isinstance(node, ast.Call) and node.args:
            return self.literal(node.args[0], depth + 1)  # op.f("ix_...") keeps the name as is
        return None

    def table(self, call: ast.Call, position: int, keyword: str = "table_name") -> _Table:
        name = self.literal(argument(call, position, keyword))
        schema = self.literal(argument(call, None, "schema"))
        if name is not None and schema:
            name = f"{schema}.{name}"
        return _Table(name)

    # visiting

    def visit_With(self, node: ast.With) -> None:
        bound: dict[str, _Table | None] = {}
        for item in node.items:
            self.visit(item.context_expr)
            call = item.context_expr
            if (
                self.context.is_op_call(call, "batch_alter_table")
                and isinstance(call, ast.Call)
                and isinstance(item.optional_vars, ast.Name)
            ):
                name = item.optional_vars.id
                bound[name] = self.batches.get(name)
                self.batches[name] = self.table(call, 0)
        for statement in node.body:
            self.visit(statement)
        for name, previous in bound.items():
            if previous is None:
                del self.batches[name]
            else:
                self.batches[name] = previous

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver, method = func.value, func.attr
            if self.context.is_op(receiver):
                self.op_call(node, method, batch=None)
            elif isinstance(receiver, ast.Name) and receiver.id in self.batches:
                self.op_call(node, method, batch=self.batches[receiver.id])
            elif method in {"execute", "exec_driver_sql"} and self.is_bind(receiver):
                if isinstance(receiver, ast.Call):
                    self.inline_get_binds.add(id(receiver))
                self.execute(node, method)
        elif isinstance(func, ast.Name):
            self.helper_call(node, func.id)
        self.generic_visit(node)

    def is_bind(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.binds
        return self.context.is_op_call(node, "get_bind")

    def helper_call(self, call: ast.Call, name: str) -> None:
        """Follow a call to a module-level function: its steps run as part of this one."""
        helper = self.context.functions.get(name)
        if helper is None or name in self.visited:
            return
        self.visited.add(name)
        # A connection passed in, as in `_backfill(conn)`, is still op.get_bind()'s.
        parameters = [a.arg for a in (*helper.args.posonlyargs, *helper.args.args)]
        binds = {
            parameters[index]
            for index, argument in enumerate(call.args[: len(parameters)])
            if self.is_bind(argument)
        } | {item.arg for item in call.keywords if item.arg and self.is_bind(item.value)}
        scope = Scope(self.context, self.function, helper, self.visited, binds)
        self.findings.extend(scope.run())
        self.touches.extend(scope.touches)

    def op_call(self, node: ast.Call, method: str, batch: _Table | None) -> None:
        # A batch operation names its table in batch_alter_table(), not as its first argument.
        column_at = 0 if batch is not None else 1
        self.schema_touch(node, method, batch, column_at)
        if method == "drop_table" and batch is None:
            table = self.table(node, 0)
            target = f"table {table.name}" if table.name is not None else f"a table {_RUN_TIME}"
            self.add(DESTRUCTIVE, method, node, f"drops {target}")
        elif method == "drop_column":
            table = batch or self.table(node, 0)
            column = self.literal(argument(node, column_at, "column_name"))
            self.add(DESTRUCTIVE, method, node, f"drops {_column(table, column, word=True)}")
        elif method == "alter_column":
            self.alter_column(node, batch or self.table(node, 0), column_at)
        elif method == "drop_index":
            name = self.literal(argument(node, 0, "index_name"))
            table = batch or self.table(node, 1)
            self.add(DESTRUCTIVE, method, node, _drop_named("index", name, table))
        elif method == "drop_constraint":
            name = self.literal(argument(node, 0, "constraint_name"))
            table = batch or self.table(node, 1)
            kind = self.literal(argument(node, 1 if batch else 2, "type_"))
            what = _CONSTRAINT_TYPES.get(kind or "", "constraint")
            self.add(DESTRUCTIVE, method, node, _drop_named(what, name, table))
        elif method == "execute":
            self.execute(node, method)
        elif method == "bulk_insert" and batch is None:
            self.bulk_insert(node)
        elif method == "get_bind" and batch is None and id(node) not in self.inline_get_binds:
            self.add(
                DATA_MIGRATION,
                method,
                node,
                f"uses the migration's database connection ({ast.unparse(node)}) "
                "to work with data directly",
            )

    def schema_touch(self, node: ast.Call, method: str, batch: _Table | None, at: int) -> None:
        """Which table or column the op creates, alters or drops (for matching with drift)."""
        if method in {"create_table", "drop_table"} and batch is None:
            action = "creates" if method == "create_table" else "drops"
            self.touch(action, "table", self.table(node, 0), node)
        elif method == "rename_table" and batch is None:
            self.touch("drops", "table", self.table(node, 0, "old_table_name"), node)
            self.touch("creates", "table", self.table(node, 1, "new_table_name"), node)
        elif method in {"drop_column", "alter_column"}:
            column = self.literal(argument(node, at, "column_name"))
            action = "drops" if method == "drop_column" else "alters"
            self.touch(action, "column", batch or self.table(node, 0), node, column)
        elif method == "add_column":
            column = argument(node, at, "column")
            name = None
            if isinstance(column, ast.Call) and called_name(column) == "Column":
                name = self.literal(argument(column, 0, "name"))
            self.touch("creates", "column", batch or self.table(node, 0), node, name)
        elif method == "create_index":
            self.touch("creates", "index", batch or self.table(node, 1), node)
        elif method == "drop_index":
            self.touch("drops", "index", batch or self.table(node, 1), node)
        elif method in _CREATES_CONSTRAINT:
            what = _CREATES_CONSTRAINT[method]
            keyword = "source_table" if method == "create_foreign_key" else "table_name"
            self.touch("creates", what, batch or self.table(node, 1, keyword), node)
        elif method == "drop_constraint":
            self.touch("drops", "constraint", batch or self.table(node, 1), node)

    def alter_column(self, node: ast.Call, table: _Table, column_at: int) -> None:
        new_type = argument(node, None, "type_")
        if new_type is None or (isinstance(new_type, ast.Constant) and new_type.value is None):
            return  # nullability, defaults, comments and renames keep the data
        column = self.literal(argument(node, column_at, "column_name"))
        old_type = argument(node, None, "existing_type")
        was = f" from {ast.unparse(old_type)}" if old_type is not None else ""
        self.add(
            DESTRUCTIVE,
            "alter_column",
            node,
            f"changes the type of {_column(table, column, word=False)}{was} "
            f"to {ast.unparse(new_type)}",
        )

    def execute(self, node: ast.Call, method: str) -> None:
        statement = argument(node, 0, "sqltext" if method == "execute" else "statement")
        if statement is None:
            return
        sql = self.sql_text(statement)
        if sql is not None:
            effects = sql_effects(sql)
            shown = excerpt(sql)
        else:
            effects = construct_effects(statement)
            shown = excerpt(ast.unparse(statement))
        if effects:
            self.add(DESTRUCTIVE, "execute", node, f"runs SQL that {join(effects)}: {shown}")
        elif sql is not None:
            self.add(DATA_MIGRATION, "execute", node, f"runs SQL: {shown}")
        else:
            self.add(DATA_MIGRATION, "execute", node, f"runs SQL built at run time: {shown}")

    def sql_text(self, node: ast.expr, depth: int = 0) -> str | None:
        """The SQL an expression holds, with run-time parts shown as `{expression}`."""
        if depth > 10:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(
                "{" + ast.unparse(part.value) + "}"
                if isinstance(part, ast.FormattedValue)
                else str(getattr(part, "value", ""))
                for part in node.values
            )
        if isinstance(node, ast.Name) and node.id in self.assignments:
            return self.sql_text(self.assignments[node.id], depth + 1)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left = self.sql_text(node.left, depth + 1)
            right = self.sql_text(node.right, depth + 1)
            if left is None and right is None:
                return None
            return (left or "{" + ast.unparse(node.left) + "}") + (
                right or "{" + ast.unparse(node.right) + "}"
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return self.sql_text(node.left, depth + 1)
        if isinstance(node, ast.Call):
            name = called_name(node)
            if name in {"text", "DDL"}:
                text = argument(node, 0, "text" if name == "text" else "statement")
                return self.sql_text(text, depth + 1) if text is not None else None
            if name in {"format", "bindparams", "columns", "execution_options"} and isinstance(
                node.func, ast.Attribute
            ):
                return self.sql_text(node.func.value, depth + 1)
        return None

    def bulk_insert(self, node: ast.Call) -> None:
        table = argument(node, 0, "table")
        if isinstance(table, ast.Name) and table.id in self.assignments:
            table = self.assignments[table.id]
        name = None
        if isinstance(table, ast.Call) and called_name(table) in {"table", "Table"}:
            name = self.literal(argument(table, 0, "name"))
        rows = argument(node, 1, "rows")
        count = (
            f"{len(rows.elts)} row{'s' if len(rows.elts) != 1 else ''}"
            if isinstance(rows, ast.List | ast.Tuple)
            else "rows"
        )
        into = name if name is not None else f"a table {_RUN_TIME}"
        self.add(DATA_MIGRATION, "bulk_insert", node, f"inserts {count} into {into}")


def _column(table: _Table, column: str | None, *, word: bool) -> str:
    if table.name is not None and column is not None:
        return f"{'column ' if word else ''}{table.name}.{column}"
    if table.name is not None:
        return f"a column of {table.name} {_RUN_TIME}"
    if column is not None:
        return f"column {column} of a table {_RUN_TIME}"
    return "a column (table and column computed at run time)"


def _drop_named(what: str, name: str | None, table: _Table) -> str:
    on = f" on {table.name}" if table.name is not None else ""
    if name is not None:
        return f"drops {what} {name}{on}"
    article = "an" if what[0] in "aeiou" else "a"
    return f"drops {article} {what}{on} {_RUN_TIME}"
