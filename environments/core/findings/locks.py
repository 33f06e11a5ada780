"""Lock-aware review of a revision for PostgreSQL: which steps take a lock that stops the
application, or fail on a table with rows, and how to spell them safely.

The rules carry squawk's ids (https://squawk.dev), the field's common vocabulary, so people
can look them up. They are applied twice: to the revision file's `op.*` calls, read with
`ast` (never run), and to the SQL alembic renders for the plan (`sql_lock_findings`), which
also sees what a revision computes at run time. Steps on a table the same revision creates
are exempt (nobody else can be using it yet), as squawk exempts tables created in the same
transaction.

A finding a team has weighed is acknowledged in the file, on the step's line or the line
above it: `# retort-allow: ban-drop-column` (several ids separated by commas or spaces).

No Django here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace

from environments.core.findings.source import FUNCTIONS, ModuleContext, argument, parse

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SEVERITIES = ("warning", "danger")  # in rising order; "acknowledged" counts as neither


def reaches(severity: str, threshold: str) -> bool:
    """A finding of `severity` is at least `threshold` ("" reaches nothing)."""
    if threshold not in SEVERITIES or severity not in SEVERITIES:
        return False
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


@dataclass(frozen=True)
class Rule:
    id: str  # squawk's
    severity: str  # "danger": the step fails or stops the application long; "warning"
    lock: str
    what: str  # what the step does, "{}" being the object
    safer: str


RULES = {
    rule.id: rule
    for rule in (
        Rule(
            "adding-required-field",
            "danger",
            ACCESS_EXCLUSIVE,
            "adds NOT NULL column {} without a default: it fails on a table that has rows",
            "add it nullable (or with a server_default), backfill it, then make it NOT NULL",
        ),
        Rule(
            "adding-not-nullable-field",
            "warning",
            ACCESS_EXCLUSIVE,
            "makes {} NOT NULL: every row is read while the table is locked",
            'first op.create_check_constraint("ck_…", table, "col IS NOT NULL", '
            "postgresql_not_valid=True) and VALIDATE CONSTRAINT it; PostgreSQL 12+ then sets "
            "NOT NULL without the scan",
        ),
        Rule(
            "changing-column-type",
            "danger",
            ACCESS_EXCLUSIVE,
            "changes the type of {}: most type changes rewrite the table and its indexes while "
            "it is locked",
            "add a column of the new type, backfill it in batches, switch the application to "
            "it, then drop the old one",
        ),
        Rule(
            "require-concurrent-index-creation",
            "warning",
            "SHARE",
            "builds index {} without CONCURRENTLY: writes to the table wait until it is built",
            "op.create_index(…, postgresql_concurrently=True) inside "
            "`with op.get_context().autocommit_block():`",
        ),
        Rule(
            "require-concurrent-index-deletion",
            "warning",
            ACCESS_EXCLUSIVE,
            "drops index {} without CONCURRENTLY: reads and writes of the table wait",
            "op.drop_index(…, postgresql_concurrently=True) inside "
            "`with op.get_context().autocommit_block():`",
        ),
        Rule(
            "ban-concurrent-index-creation-in-transaction",
            "danger",
            "SHARE UPDATE EXCLUSIVE",
            "builds or drops index {} CONCURRENTLY inside a transaction: PostgreSQL refuses "
            "it and the run fails",
            "put it inside `with op.get_context().autocommit_block():`",
        ),
        Rule(
            "adding-foreign-key-constraint",
            "warning",
            "SHARE ROW EXCLUSIVE",
            "adds foreign key {} without NOT VALID: every row is checked while writes to both "
            "tables wait",
            "postgresql_not_valid=True, then `ALTER TABLE … VALIDATE CONSTRAINT …` in a later "
            "revision",
        ),
        Rule(
            "constraint-missing-not-valid",
            "warning",
            ACCESS_EXCLUSIVE,
            "adds check constraint {} without NOT VALID: every row is checked while the table "
            "is locked",
            "postgresql_not_valid=True, then `ALTER TABLE … VALIDATE CONSTRAINT …` in a later "
            "revision",
        ),
        Rule(
            "disallowed-unique-constraint",
            "warning",
            ACCESS_EXCLUSIVE,
            "adds unique constraint {}: its index is built while the table is locked",
            "CREATE UNIQUE INDEX CONCURRENTLY first, then `ALTER TABLE … ADD CONSTRAINT … "
            "UNIQUE USING INDEX …`",
        ),
        Rule(
            "adding-serial-primary-key-field",
            "warning",
            ACCESS_EXCLUSIVE,
            "adds primary key {}: its index is built while the table is locked",
            "CREATE UNIQUE INDEX CONCURRENTLY first, then `ALTER TABLE … ADD CONSTRAINT … "
            "PRIMARY KEY USING INDEX …`",
        ),
        Rule(
            "renaming-column",
            "warning",
            ACCESS_EXCLUSIVE,
            "renames column {}: the running application's queries that name it fail",
            "add the new column, write both, move the readers, drop the old one in a later release",
        ),
        Rule(
            "renaming-table",
            "warning",
            ACCESS_EXCLUSIVE,
            "renames table {}: the running application's queries that name it fail",
            "create the new table (or a view under the old name) and move the application "
            "before dropping the old name",
        ),
        Rule(
            "ban-drop-column",
            "warning",
            ACCESS_EXCLUSIVE,
            "drops column {}: the running application's queries that name it fail, and its "
            "data is gone",
            "stop using it in the application (and its models) first, deploy, then drop it",
        ),
        Rule(
            "ban-drop-table",
            "warning",
            ACCESS_EXCLUSIVE,
            "drops table {}: the running application's queries that name it fail, and its "
            "data is gone",
            "stop using it in the application first, deploy, then drop it",
        ),
    )
}


@dataclass(frozen=True)
class LockFinding:
    """One step of a revision that takes a lock the application feels, or fails on data."""

    rule: str
    function: str  # "upgrade" or "downgrade"
    line: int  # in the revision file (op.*) or in the rendered SQL (sql)
    table: str  # "" when the source computes it
    obj: str  # what the step works on: a column, index or constraint, or the table
    engine: str = "op"  # "op": the file's calls; "sql": the rendered SQL
    acknowledged: bool = False  # `# retort-allow: <id>` on or above its line

    @property
    def severity(self) -> str:
        return "acknowledged" if self.acknowledged else RULES[self.rule].severity

    @property
    def lock(self) -> str:
        return RULES[self.rule].lock

    def sentence(self) -> str:
        rule = RULES[self.rule]
        where = f"line {self.line}" if self.engine == "op" else f"line {self.line} of its SQL"
        on = f" on {self.table}" if self.table else ""
        text = (
            f"{self.rule}: {rule.what.format(self.obj or self.table or '(computed)')} "
            f"({where}; takes {rule.lock}{on}). Safer: {rule.safer}."
        )
        return text + (" Acknowledged in the file." if self.acknowledged else "")


_ALLOW = re.compile(r"#\s*retort-allow\s*:\s*([\w\-, ]+)", re.IGNORECASE)


def lock_findings(source: str | bytes) -> list[LockFinding]:
    """The lock findings of a revision file's upgrade() and downgrade(), in line order.
    Raises ValueError with a readable reason when the source cannot be parsed."""
    text, module = parse(source)
    context = ModuleContext(module)
    found: list[LockFinding] = []
    for name in FUNCTIONS:
        node = context.functions.get(name)
        if node is not None:
            walker = _Walk(context, name)
            for statement in node.body:
                walker.visit(statement)
            found += walker.findings
    return acknowledge(sorted(found, key=lambda f: (f.function, f.line)), text)


def acknowledge(found: list[LockFinding], source: str) -> list[LockFinding]:
    """Mark the findings a `# retort-allow:` comment on their line, or the line above, names."""
    lines = source.splitlines()
    allowed: dict[int, set[str]] = {}
    for number, line in enumerate(lines, start=1):
        match = _ALLOW.search(line)
        if match:
            ids = {part for part in re.split(r"[\s,]+", match.group(1).strip().lower()) if part}
            for target in (number, number + 1):
                allowed.setdefault(target, set()).update(ids)
    return [
        replace(finding, acknowledged=True)
        if finding.engine == "op" and finding.rule in allowed.get(finding.line, ())
        else finding
        for finding in found
    ]


class _Walk(ast.NodeVisitor):
    """op.* calls of one function, inside batch_alter_table and autocommit_block too."""

    def __init__(self, context: ModuleContext, function: str) -> None:
        self.context = context
        self.function = function
        self.created: set[str] = set()  # tables this function creates: exempt
        self.batches: dict[str, str] = {}  # batch_alter_table's name → its table
        self.autocommit = 0
        self.findings: list[LockFinding] = []

    def visit_With(self, node: ast.With) -> None:
        bound: list[str] = []
        entered = 0
        for item in node.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                if call.func.attr == "autocommit_block":
                    entered += 1
                elif self.context.is_op_call(call, "batch_alter_table"):
                    table = _literal(argument(call, 0, "table_name"))
                    variable = item.optional_vars
                    if isinstance(variable, ast.Name):
                        self.batches[variable.id] = table or ""
                        bound.append(variable.id)
        self.autocommit += entered
        for statement in node.body:
            self.visit(statement)
        self.autocommit -= entered
        for name in bound:
            self.batches.pop(name, None)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = node.func
        if not isinstance(func, ast.Attribute):
            return
        if self.context.is_op(func.value):
            self._step(func.attr, node, table=None)
        elif isinstance(func.value, ast.Name) and func.value.id in self.batches:
            self._step(func.attr, node, table=self.batches[func.value.id])

    def _add(self, rule: str, node: ast.Call, table: str, obj: str = "") -> None:
        if table and table in self.created and rule not in {"ban-drop-table"}:
            return
        self.findings.append(
            LockFinding(rule, self.function, node.lineno, table, obj or table, "op")
        )

    def _step(self, method: str, node: ast.Call, *, table: str | None) -> None:
        """One op call; `table` is set for a batch_alter_table's (whose calls omit it)."""
        batch = table is not None
        shift = 0 if batch else 1  # a batch call's arguments start one place earlier

        def arg(position: int, keyword: str) -> ast.expr | None:
            return argument(node, position - 1 + shift if position else None, keyword)

        name_of_table = table if batch else (_literal(argument(node, 0, "table_name")) or "")
        if method == "create_table":
            created = _literal(argument(node, 0, "table_name"))
            if created:
                self.created.add(created)
            return
        if method == "add_column":
            column = arg(1, "column")
            if _required_column(column):
                self._add(
                    "adding-required-field", node, name_of_table, _column(column, name_of_table)
                )
        elif method == "alter_column":
            column = _literal(arg(1, "column_name")) or ""
            qualified = f"{name_of_table}.{column}" if column else name_of_table
            if _is_true(argument(node, None, "nullable"), negate=True):
                self._add("adding-not-nullable-field", node, name_of_table, qualified)
            if argument(node, None, "type_") is not None:
                self._add("changing-column-type", node, name_of_table, qualified)
            if argument(node, None, "new_column_name") is not None:
                self._add("renaming-column", node, name_of_table, qualified)
        elif method == "create_index":
            index_table = table if batch else _literal(argument(node, 1, "table_name")) or ""
            name = _literal(argument(node, 0, "index_name")) or ""
            self._index(node, index_table, name, creating=True)
        elif method == "drop_index":
            index_table = table if batch else _literal(argument(node, 1, "table_name")) or ""
            name = _literal(argument(node, 0, "index_name")) or ""
            self._index(node, index_table, name, creating=False)
        elif method == "create_foreign_key":
            source_table = table if batch else _literal(argument(node, 1, "source_table")) or ""
            if not _is_true(argument(node, None, "postgresql_not_valid")):
                name = _literal(argument(node, 0, "constraint_name")) or ""
                self._add("adding-foreign-key-constraint", node, source_table, name)
        elif method == "create_check_constraint":
            check_table = table if batch else _literal(argument(node, 1, "table_name")) or ""
            if not _is_true(argument(node, None, "postgresql_not_valid")):
                name = _literal(argument(node, 0, "constraint_name")) or ""
                self._add("constraint-missing-not-valid", node, check_table, name)
        elif method in {"create_unique_constraint", "create_primary_key"}:
            key_table = table if batch else _literal(argument(node, 1, "table_name")) or ""
            name = _literal(argument(node, 0, "constraint_name")) or ""
            rule = (
                "disallowed-unique-constraint"
                if method == "create_unique_constraint"
                else "adding-serial-primary-key-field"
            )
            self._add(rule, node, key_table, name)
        elif method == "rename_table":
            self._add("renaming-table", node, _literal(argument(node, 0, "old_table_name")) or "")
        elif method == "drop_column":
            column = _literal(arg(1, "column_name")) or ""
            qualified = f"{name_of_table}.{column}" if column else name_of_table
            self._add("ban-drop-column", node, name_of_table, qualified)
        elif method == "drop_table" and not batch:
            self._add("ban-drop-table", node, name_of_table)

    def _index(self, node: ast.Call, table: str, name: str, *, creating: bool) -> None:
        concurrently = _is_true(argument(node, None, "postgresql_concurrently"))
        if concurrently and not self.autocommit:
            self._add("ban-concurrent-index-creation-in-transaction", node, table, name)
        elif not concurrently:
            rule = (
                "require-concurrent-index-creation"
                if creating
                else "require-concurrent-index-deletion"
            )
            self._add(rule, node, table, name)


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and node.args and getattr(node.func, "attr", None) == "f":
        return _literal(node.args[0])  # op.f("ix_…")
    return None


def _is_true(node: ast.expr | None, *, negate: bool = False) -> bool:
    """The argument is the literal True (or, `negate`, the literal False)."""
    return isinstance(node, ast.Constant) and node.value is (not negate)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((item.value for item in call.keywords if item.arg == name), None)


def _required_column(column: ast.expr | None) -> bool:
    """A sa.Column(…, nullable=False) (or primary_key=True) with no server_default."""
    if (
        not isinstance(column, ast.Call)
        or getattr(column.func, "attr", getattr(column.func, "id", "")) != "Column"
    ):
        return False
    not_null = _is_true(_keyword(column, "nullable"), negate=True) or _is_true(
        _keyword(column, "primary_key")
    )
    return not_null and _keyword(column, "server_default") is None


def _column(column: ast.expr | None, table: str) -> str:
    name = _literal(column.args[0]) if isinstance(column, ast.Call) and column.args else None
    return f"{table}.{name}" if name and table else (name or table)
