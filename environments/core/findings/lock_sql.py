"""The lock rules (`locks.py`) applied to the SQL alembic renders for a plan (`alembic upgrade
--sql`): the second engine, which also sees the statements a revision builds at run time and
the raw SQL of `op.execute`. Each statement is attributed to the revision whose
`-- Running upgrade A -> B` comment it follows; transactions are followed from alembic's
BEGIN/COMMIT lines, so a CONCURRENTLY statement inside one is found.

No Django here.
"""

from __future__ import annotations

import re

from environments.core.findings.locks import LockFinding
from environments.core.plan import RUNNING

# string literals and comments, replaced by spaces of the same length (lines are kept)
_NOISE = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)
_NAME = r'(?:"(?:[^"]|"")+"|[\w$]+)(?:\.(?:"(?:[^"]|"")+"|[\w$]+))?'
_ALTER = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_NAME})\s+(.*)$", re.S | re.I
)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})?\s*"
    rf"ON\s+(?:ONLY\s+)?({_NAME})",
    re.S | re.I,
)
_DROP_INDEX = re.compile(
    rf"^DROP\s+INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?({_NAME})", re.S | re.I
)
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I
)
_DROP_TABLE = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME})", re.I)
_ACTIONS = (  # within ALTER TABLE: (pattern, rule, what the object is)
    (
        re.compile(
            r"\bADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
            r"(?!CONSTRAINT\b|PRIMARY\b|UNIQUE\b|FOREIGN\b|CHECK\b)([\w$\"]+)\b"
            r"(?=[^,]*\bNOT\s+NULL\b)(?![^,]*\bDEFAULT\b)",
            re.I,
        ),
        "adding-required-field",
    ),
    (
        re.compile(r"\bALTER\s+(?:COLUMN\s+)?([\w$\"]+)\s+SET\s+NOT\s+NULL\b", re.I),
        "adding-not-nullable-field",
    ),
    (
        re.compile(r"\bALTER\s+(?:COLUMN\s+)?([\w$\"]+)\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
        "changing-column-type",
    ),
    (
        re.compile(
            r"\bADD\s+CONSTRAINT\s+([\w$\"]+)\s+FOREIGN\s+KEY\b(?![^,]*\bNOT\s+VALID\b)", re.I
        ),
        "adding-foreign-key-constraint",
    ),
    (
        re.compile(r"\bADD\s+CONSTRAINT\s+([\w$\"]+)\s+CHECK\b(?![^,]*\bNOT\s+VALID\b)", re.I),
        "constraint-missing-not-valid",
    ),
    (
        re.compile(r"\bADD\s+CONSTRAINT\s+([\w$\"]+)\s+UNIQUE\b(?!\s+USING\s+INDEX\b)", re.I),
        "disallowed-unique-constraint",
    ),
    (
        re.compile(
            r"\bADD\s+(?:CONSTRAINT\s+([\w$\"]+)\s+)?PRIMARY\s+KEY\b(?!\s+USING\s+INDEX\b)", re.I
        ),
        "adding-serial-primary-key-field",
    ),
    (re.compile(r"\bRENAME\s+(?:COLUMN\s+)?(?!TO\b)([\w$\"]+)\s+TO\b", re.I), "renaming-column"),
    (re.compile(r"\bRENAME\s+TO\s+([\w$\"]+)", re.I), "renaming-table"),
    (
        re.compile(
            r"\bDROP\s+(?:COLUMN\s+)?(?!CONSTRAINT\b|NOT\b|DEFAULT\b|IDENTITY\b|EXPRESSION\b)"
            r"(?:IF\s+EXISTS\s+)?([\w$\"]+)",
            re.I,
        ),
        "ban-drop-column",
    ),
)


def sql_lock_findings(sql: str, function: str) -> list[tuple[str | None, LockFinding]]:
    """(revision, finding) for each statement of rendered SQL that a lock rule flags;
    `function`: "upgrade" or "downgrade", the command that rendered it."""
    clean = _NOISE.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), sql)
    found: list[tuple[str | None, LockFinding]] = []
    revision: str | None = None
    created: set[str] = set()
    in_transaction = False
    for start, end in _statements(clean):
        raw, statement = sql[start:end], clean[start:end]
        line = sql.count("\n", 0, start) + 1
        for comment in re.finditer(r"--[^\n]*", raw):
            running = RUNNING.search(comment.group(0))
            if running:
                kind, before, after = running.groups()
                revision = before.split(",")[0].strip() if kind == "downgrade" else after
                created = set()
        text = " ".join(statement.split())
        upper = text.upper()
        if upper in {"BEGIN", "START TRANSACTION"}:
            in_transaction = True
            continue
        if upper in {"COMMIT", "ROLLBACK", "END"}:
            in_transaction = False
            continue
        for rule, table, obj in _rules(text, created, in_transaction):
            found.append(
                (revision, LockFinding(rule, function, line + _leading(raw), table, obj, "sql"))
            )
    return found


def _statements(clean: str) -> list[tuple[int, int]]:
    """Where each statement is: the text between semicolons at the end of a line (alembic's
    rendering), found in the SQL with its literals and comments blanked out."""
    spans, start = [], 0
    for separator in re.finditer(r";[ \t]*(?:\n|$)", clean):
        spans.append((start, separator.start()))
        start = separator.end()
    spans.append((start, len(clean)))
    return spans


def _leading(raw: str) -> int:
    """Lines before the statement itself (blank lines and comments alembic writes first)."""
    count = 0
    for piece in raw.split("\n"):
        if piece.strip() and not piece.strip().startswith("--"):
            break
        count += 1
    return count


def _bare(name: str) -> str:
    last = re.split(r'\.(?=(?:[^"]*"[^"]*")*[^"]*$)', name)[-1]
    return last.strip('"').replace('""', '"')


def _rules(text: str, created: set[str], in_transaction: bool):
    """(rule, table, object) for one statement; remembers the tables it creates."""
    match = _CREATE_TABLE.match(text)
    if match:
        created.add(_bare(match.group(1)))
        return
    match = _DROP_TABLE.match(text)
    if match:
        yield "ban-drop-table", _bare(match.group(1)), _bare(match.group(1))
        return
    match = _CREATE_INDEX.match(text) or _DROP_INDEX.match(text)
    if match:
        creating = text.upper().startswith("CREATE")
        concurrently = bool(match.group(1))
        name = _bare(match.group(2) or "")
        table = _bare(match.group(3)) if creating else ""
        if table in created:
            return
        if concurrently and in_transaction:
            yield "ban-concurrent-index-creation-in-transaction", table, name
        elif not concurrently:
            yield (
                (
                    "require-concurrent-index-creation"
                    if creating
                    else "require-concurrent-index-deletion"
                ),
                table,
                name,
            )
        return
    match = _ALTER.match(text)
    if not match:
        return
    table = _bare(match.group(1))
    if table in created:
        return
    actions = match.group(2)
    for pattern, rule in _ACTIONS:
        for action in pattern.finditer(actions):
            name = _bare(action.group(1) or "") if action.groups() else ""
            if rule in _COLUMN_RULES and name:
                obj = f"{table}.{name}"
            else:
                obj = table if rule == "renaming-table" else (name or table)
            yield rule, table, obj


_COLUMN_RULES = {
    "adding-required-field",
    "adding-not-nullable-field",
    "changing-column-type",
    "renaming-column",
    "ban-drop-column",
}
