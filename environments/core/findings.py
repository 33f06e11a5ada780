"""What a revision file will do to a database, read from its source without running it.

A reviewer approving a migration needs to see, before anything runs, which steps lose data
(dropped tables and columns, type changes, DELETE/UPDATE/DROP/TRUNCATE statements), which move
data rather than schema, and whether `alembic downgrade` through the revision can undo it. Like
`scripts.py`, this only parses the file with `ast`: revision files import the application's own
modules, and importing them here would run foreign code in the web process.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

from pygments import highlight as _pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from environments.core.scripts import name_assignments

DESTRUCTIVE = "destructive"
IRREVERSIBLE_DOWNGRADE = "irreversible_downgrade"
DATA_MIGRATION = "data_migration"

_FUNCTIONS = ("upgrade", "downgrade")
_RUN_TIME = "(name computed at run time)"
_EXCERPT_LENGTH = 80

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


@dataclass(frozen=True)
class Finding:
    """One step of a revision a reviewer should know about before it runs."""

    kind: str  # DESTRUCTIVE, IRREVERSIBLE_DOWNGRADE or DATA_MIGRATION
    operation: str  # the op method ("drop_column", "execute", ...), or "pass"/"raise"/"missing"
    function: str  # "upgrade" or "downgrade": the command that runs this step
    line: int  # 1-based line in the revision file
    detail: str  # one sentence for the page

    @property
    def severity(self) -> str:
        return "info" if self.kind == DATA_MIGRATION else "danger"


@dataclass(frozen=True)
class FunctionSource:
    """The exact text of a module-level function of a revision file."""

    name: str
    source: str
    first_line: int
    last_line: int


@dataclass(frozen=True)
class Touch:
    """A schema object a step of a revision creates, alters or drops, named as the source
    names it: `obj` is a table (`orders`) or a column (`orders.qty`); `what` says which."""

    function: str  # "upgrade" or "downgrade"
    action: str  # "creates", "alters" or "drops"
    what: str  # table, column, index, unique, fk, check, constraint
    obj: str
    line: int

    @property
    def table(self) -> str:
        return self.obj.split(".")[0] if self.what == "column" else self.obj


# --- public API ----------------------------------------------------------------------------


def analyze(source: str | bytes) -> list[Finding]:
    """Findings of a revision file, upgrade's first, each function's in line order.

    Raises ValueError with a readable reason when the source cannot be parsed.
    """
    _, module = _parse(source)
    context = _ModuleContext(module)
    findings: list[Finding] = []
    for name in _FUNCTIONS:
        node = context.functions.get(name)
        if node is not None:
            findings.extend(_Scope(context, name, node).run())
    findings.extend(_irreversible_downgrade(context))
    order = {name: index for index, name in enumerate(_FUNCTIONS)}
    return sorted(findings, key=lambda finding: (order[finding.function], finding.line))


def touches(source: str | bytes) -> list[Touch]:
    """The tables and columns each function of a revision file creates, alters or drops, where
    the source names them literally (a name computed at run time is left out). Raises
    ValueError with a readable reason when the source cannot be parsed."""
    _, module = _parse(source)
    context = _ModuleContext(module)
    found: list[Touch] = []
    for name in _FUNCTIONS:
        node = context.functions.get(name)
        if node is not None:
            scope = _Scope(context, name, node)
            scope.run()
            found.extend(scope.touches)
    return found


def function_sources(source: str | bytes) -> dict[str, FunctionSource]:
    """The text of the module-level upgrade() and downgrade() a revision file defines."""
    text, module = _parse(source)
    found: dict[str, FunctionSource] = {}
    for name, node in _module_functions(module).items():
        if name not in _FUNCTIONS:
            continue
        segment = ast.get_source_segment(text, node) or ""
        end = node.end_lineno if node.end_lineno is not None else node.lineno
        found[name] = FunctionSource(name, segment, node.lineno, end)
    return {name: found[name] for name in _FUNCTIONS if name in found}


def highlight(code: str) -> str:
    """`code` as Pygments HTML: every character of the source is escaped, so it is safe to show."""
    return _pygments_highlight(code, PythonLexer(), HtmlFormatter(nowrap=False, cssclass="source"))


def highlight_css() -> str:
    """The stylesheet for `highlight()`'s markup."""
    return HtmlFormatter(style="default").get_style_defs(".source")


# --- parsing -------------------------------------------------------------------------------


def _parse(source: str | bytes) -> tuple[str, ast.Module]:
    try:
        text = _decode(source) if isinstance(source, bytes) else source
        module = ast.parse(text)
    except SyntaxError as exc:
        where = f" on line {exc.lineno}" if exc.lineno else ""
        raise ValueError(f"syntax error{where}: {exc.msg}") from None
    except (ValueError, LookupError) as exc:  # null bytes, undecodable text, unknown coding
        raise ValueError(f"cannot be parsed: {exc}") from None
    return text, module


def _decode(source: bytes) -> str:
    """Decode as Python would (BOM, coding cookie), keeping line endings as they are."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    return source.decode(encoding)


def _module_functions(module: ast.Module) -> dict[str, ast.FunctionDef]:
    # A later def of the same name replaces the earlier one, as when Python runs the module.
    return {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}


def _single_assignments(statements: Iterable[ast.AST]) -> dict[str, ast.expr]:
    """Names assigned exactly once, to their value: enough to follow `sql = "..."` to its text."""
    values: dict[str, ast.expr] = {}
    seen: set[str] = set()
    for name, value in name_assignments(statements):
        if name in seen:
            values.pop(name, None)
        else:
            values[name] = value
        seen.add(name)
    return values


class _ModuleContext:
    """What the whole file tells about names: how `op` is imported, and module-level values."""

    def __init__(self, module: ast.Module) -> None:
        self.functions = _module_functions(module)
        self.assignments = _single_assignments(module.body)
        self.op_names: set[str] = set()  # names bound to alembic.op
        self.alembic_names: set[str] = set()  # names bound to the alembic package
        for node in ast.walk(module):
            if isinstance(node, ast.ImportFrom) and node.module == "alembic" and not node.level:
                self.op_names.update(a.asname or a.name for a in node.names if a.name == "op")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "alembic.op" and alias.asname:
                        self.op_names.add(alias.asname)
                    elif alias.name == "alembic" and alias.asname:
                        self.alembic_names.add(alias.asname)
                    elif alias.name.split(".")[0] == "alembic" and not alias.asname:
                        self.alembic_names.add("alembic")
        if not self.op_names:
            self.op_names.add("op")

    def is_op(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.op_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "op"
            and isinstance(node.value, ast.Name)
            and node.value.id in self.alembic_names
        )

    def is_op_call(self, node: ast.expr, method: str) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == method
            and self.is_op(node.func.value)
        )


# --- the walk over upgrade() and downgrade() -----------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table as the source names it: `name` is None when only known at run time."""

    name: str | None


class _Scope(ast.NodeVisitor):
    """Walks one function (and the module-level helpers it calls) for the steps that matter."""

    def __init__(
        self,
        context: _ModuleContext,
        function: str,
        node: ast.FunctionDef,
        visited: set[str] | None = None,
        binds: Iterable[str] = (),
    ) -> None:
        self.context = context
        self.function = function
        self.node = node
        self.visited = visited if visited is not None else {node.name}
        self.assignments = {**context.assignments, **_single_assignments(ast.walk(node))}
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
        name = self.literal(_argument(call, position, keyword))
        schema = self.literal(_argument(call, None, "schema"))
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
        scope = _Scope(self.context, self.function, helper, self.visited, binds)
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
            column = self.literal(_argument(node, column_at, "column_name"))
            self.add(DESTRUCTIVE, method, node, f"drops {_column(table, column, word=True)}")
        elif method == "alter_column":
            self.alter_column(node, batch or self.table(node, 0), column_at)
        elif method == "drop_index":
            name = self.literal(_argument(node, 0, "index_name"))
            table = batch or self.table(node, 1)
            self.add(DESTRUCTIVE, method, node, _drop_named("index", name, table))
        elif method == "drop_constraint":
            name = self.literal(_argument(node, 0, "constraint_name"))
            table = batch or self.table(node, 1)
            kind = self.literal(_argument(node, 1 if batch else 2, "type_"))
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
            column = self.literal(_argument(node, at, "column_name"))
            action = "drops" if method == "drop_column" else "alters"
            self.touch(action, "column", batch or self.table(node, 0), node, column)
        elif method == "add_column":
            column = _argument(node, at, "column")
            name = None
            if isinstance(column, ast.Call) and _called_name(column) == "Column":
                name = self.literal(_argument(column, 0, "name"))
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
        new_type = _argument(node, None, "type_")
        if new_type is None or (isinstance(new_type, ast.Constant) and new_type.value is None):
            return  # nullability, defaults, comments and renames keep the data
        column = self.literal(_argument(node, column_at, "column_name"))
        old_type = _argument(node, None, "existing_type")
        was = f" from {ast.unparse(old_type)}" if old_type is not None else ""
        self.add(
            DESTRUCTIVE,
            "alter_column",
            node,
            f"changes the type of {_column(table, column, word=False)}{was} "
            f"to {ast.unparse(new_type)}",
        )

    def execute(self, node: ast.Call, method: str) -> None:
        statement = _argument(node, 0, "sqltext" if method == "execute" else "statement")
        if statement is None:
            return
        sql = self.sql_text(statement)
        if sql is not None:
            effects = _sql_effects(sql)
            shown = _excerpt(sql)
        else:
            effects = _construct_effects(statement)
            shown = _excerpt(ast.unparse(statement))
        if effects:
            self.add(DESTRUCTIVE, "execute", node, f"runs SQL that {_join(effects)}: {shown}")
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
            name = _called_name(node)
            if name in {"text", "DDL"}:
                argument = _argument(node, 0, "text" if name == "text" else "statement")
                return self.sql_text(argument, depth + 1) if argument is not None else None
            if name in {"format", "bindparams", "columns", "execution_options"} and isinstance(
                node.func, ast.Attribute
            ):
                return self.sql_text(node.func.value, depth + 1)
        return None

    def bulk_insert(self, node: ast.Call) -> None:
        table = _argument(node, 0, "table")
        if isinstance(table, ast.Name) and table.id in self.assignments:
            table = self.assignments[table.id]
        name = None
        if isinstance(table, ast.Call) and _called_name(table) in {"table", "Table"}:
            name = self.literal(_argument(table, 0, "name"))
        rows = _argument(node, 1, "rows")
        count = (
            f"{len(rows.elts)} row{'s' if len(rows.elts) != 1 else ''}"
            if isinstance(rows, ast.List | ast.Tuple)
            else "rows"
        )
        into = name if name is not None else f"a table {_RUN_TIME}"
        self.add(DATA_MIGRATION, "bulk_insert", node, f"inserts {count} into {into}")


def _argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == keyword:
            return item.value
    if position is not None and 0 <= position < len(call.args):
        argument = call.args[position]
        return None if isinstance(argument, ast.Starred) else argument
    return None


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


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


def _sql_effects(sql: str) -> list[str]:
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


def _construct_effects(node: ast.expr) -> list[str]:
    effects: list[str] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            effect = _CORE_EFFECTS.get(_called_name(child) or "")
            if effect is not None and effect not in effects:
                effects.append(effect)
    return effects


def _join(effects: list[str]) -> str:
    if len(effects) == 1:
        return effects[0]
    return ", ".join(effects[:-1]) + " and " + effects[-1]


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _EXCERPT_LENGTH:
        return flat
    cut = flat[:_EXCERPT_LENGTH].rsplit(" ", 1)[0]
    return f"{cut} …"


# --- downgrade -----------------------------------------------------------------------------


def _irreversible_downgrade(context: _ModuleContext) -> list[Finding]:
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
