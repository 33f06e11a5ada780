"""Schemas read by reflection, normalised, and compared: the second face of drift.

`reflect_schema` reads a live database with SQLAlchemy's inspector (the `get_multi_*` calls:
a few catalogue queries for the whole schema, not a few per table) into plain, hashable values.
`compare_schemas` lists every difference in words. A drift report is only useful when it is
quiet when nothing is wrong, so what differs only in spelling is normalised first:
constraint and index names (generated names differ between databases; objects are matched by
what they cover), server-default spelling (`'x'::character varying` and `'x'`, `now()` and
`CURRENT_TIMESTAMP`, `(0)` and `0`), a sequence default behind a serial key, and — opt-in, for
comparing SQLite with PostgreSQL — type spelling, via SQLAlchemy's generic types.

No Django here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.types import TypeEngine

from environments.core import database_urls, versions


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as this dialect spells it, e.g. VARCHAR(255)
    generic: str  # SQLAlchemy's generic type, e.g. String(255): for cross-dialect comparison
    nullable: bool
    default: str | None  # normalised; None when there is none


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]  # column names, or the expression's text
    unique: bool


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]
    ondelete: str
    onupdate: str


@dataclass
class Table:
    name: str
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    indexes: list[Index] = field(default_factory=list)
    uniques: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


@dataclass
class Schema:
    dialect: str
    tables: dict[str, Table] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """One way two schemas differ: `object` names it (`users.email`), `detail` says how."""

    kind: str  # table, column, type, nullable, default, primary_key, index, unique, fk, check
    object: str
    detail: str
    only_in: str = ""  # the side's name that has the object when the other lacks it, else ""


# --- normalisation -------------------------------------------------------------------------

_CAST = re.compile(
    r"::(?:\"[^\"]+\"|[\w.]+)"
    r"(?:\s+(?:varying|precision|without\s+time\s+zone|with\s+time\s+zone))?"
    r"(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?"
)
_NOW = {
    "now()",
    "current_timestamp",
    "current_timestamp()",
    "localtimestamp",
    "transaction_timestamp()",
}


def normalize_default(text: str | None) -> str | None:
    """One spelling for a server default: casts and wrapping parentheses dropped, quoted
    numbers unquoted, the many spellings of "now" made one, a serial's sequence left out."""
    if text is None:
        return None
    value = " ".join(str(text).split())
    value = _CAST.sub("", value)
    while value.startswith("(") and value.endswith(")") and _balanced(value[1:-1]):
        value = value[1:-1].strip()
    if value.lower().startswith("nextval("):
        return None  # a serial/identity key's sequence: the key is what matters
    if value.lower() in _NOW:
        return "CURRENT_TIMESTAMP"
    if re.fullmatch(r"'-?\d+(\.\d+)?'", value):
        value = value[1:-1]
    if value.lower() in ("true", "false"):
        value = value.lower()
    return value


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def normalize_check(text: str) -> str:
    """A check's condition without the parentheses and spacing each database adds."""
    value = " ".join(_CAST.sub("", text).split()).lower()
    value = value.replace("(", "").replace(")", "")
    return re.sub(r"\s*([<>=!]+|and|or)\s*", r" \1 ", value).strip()


def _type_text(type_: TypeEngine, dialect) -> str:
    try:
        return " ".join(type_.compile(dialect=dialect).split()).upper()
    except Exception:  # noqa: BLE001 - an exotic type still needs a name
        return type(type_).__name__.upper()


def _generic_text(type_: TypeEngine) -> str:
    try:
        generic = type_.as_generic()
    except NotImplementedError:
        generic = type_
    name = type(generic).__name__
    length = getattr(generic, "length", None)
    precision = getattr(generic, "precision", None)
    scale = getattr(generic, "scale", None)
    if name in ("Text", "Unicode", "UnicodeText") and not length:
        name = "String"
    if length:
        return f"{name}({length})"
    if precision is not None:
        return f"{name}({precision}{f',{scale}' if scale is not None else ''})"
    return name


# --- reading -------------------------------------------------------------------------------


def reflect_schema(
    connection: Connection, *, schema: str | None = None, exclude: Iterable[str] = ()
) -> Schema:
    """Everything `compare_schemas` looks at, for every table of `schema` but `exclude`."""
    inspector = inspect(connection)
    dialect = connection.dialect
    skipped = set(exclude)
    names = [name for name in inspector.get_table_names(schema=schema) if name not in skipped]
    found = Schema(dialect=dialect.name)
    if not names:
        return found
    scope = {"schema": schema, "filter_names": names}
    columns = inspector.get_multi_columns(**scope)
    keys = inspector.get_multi_pk_constraint(**scope)
    indexes = inspector.get_multi_indexes(**scope)
    uniques = inspector.get_multi_unique_constraints(**scope)
    foreign = inspector.get_multi_foreign_keys(**scope)
    try:
        checks = inspector.get_multi_check_constraints(**scope)
    except NotImplementedError:
        checks = {}
    for name in names:
        key = (schema, name)
        table = Table(name=name)
        for column in columns.get(key, []):
            table.columns[column["name"]] = Column(
                name=column["name"],
                type=_type_text(column["type"], dialect),
                generic=_generic_text(column["type"]),
                nullable=bool(column["nullable"]),
                default=normalize_default(column.get("default")),
            )
        table.primary_key = tuple((keys.get(key) or {}).get("constrained_columns") or ())
        for index in indexes.get(key, []):
            if index.get("duplicates_constraint"):
                continue  # the index behind a unique constraint: compared as the constraint
            expressions = index.get("expressions") or index.get("column_names") or []
            table.indexes.append(
                Index(
                    name=index.get("name") or "",
                    columns=tuple(str(e) for e in expressions if e is not None),
                    unique=bool(index.get("unique")),
                )
            )
        table.uniques = sorted(tuple(u["column_names"]) for u in uniques.get(key, []))
        for fk in foreign.get(key, []):
            options = fk.get("options") or {}
            table.foreign_keys.append(
                ForeignKey(
                    name=fk.get("name") or "",
                    columns=tuple(fk["constrained_columns"]),
                    referred_table=fk["referred_table"],
                    referred_columns=tuple(fk["referred_columns"]),
                    ondelete=(options.get("ondelete") or "NO ACTION").upper(),
                    onupdate=(options.get("onupdate") or "NO ACTION").upper(),
                )
            )
        table.checks = sorted(normalize_check(c["sqltext"]) for c in checks.get(key, []))
        found.tables[name] = table
    return found


class SchemaReadError(Exception):
    """The database could not be read; the message is in words, without any password."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def read_schema(
    url: str,
    *,
    schema: str | None = None,
    exclude: Iterable[str] = ("alembic_version",),
    timeout: float = 3.0,
    statement_timeout: float = 120.0,
) -> Schema:
    """Connect (briefly: `timeout`) and reflect; raises SchemaReadError."""
    try:
        target = database_urls.sync_url(url)
        engine = versions.open_engine(target, timeout, statement_timeout)
    except versions.ReadFailure as exc:
        raise SchemaReadError(exc.message, unreachable=True) from None
    except Exception as exc:  # noqa: BLE001 - a bad URL or a missing driver, in words
        raise SchemaReadError(
            database_urls.redact(f"The URL is not usable: {exc}", url), unreachable=False
        ) from None
    try:
        with engine.connect() as connection:
            return reflect_schema(connection, schema=schema, exclude=exclude)
    except DBAPIError as exc:
        kind, message = versions.classify(exc.orig if exc.orig is not None else exc)
        message = message.replace("Reading the version table failed", "Reading the schema failed")
        raise SchemaReadError(
            database_urls.redact(message, target), unreachable=kind.value != "error"
        ) from None
    except SQLAlchemyError as exc:
        raise SchemaReadError(
            database_urls.redact(f"Reading the schema failed: {exc}", target), unreachable=False
        ) from None
    finally:
        engine.dispose()


# --- comparing -----------------------------------------------------------------------------


def _cols(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def compare_schemas(
    left: Schema,
    right: Schema,
    *,
    left_name: str = "left",
    right_name: str = "right",
    cross_dialect: bool = False,
    phrasing=None,
) -> list[Difference]:
    """Every difference between two schemas, table by table, in words. With `cross_dialect`
    (comparing, say, SQLite with PostgreSQL) types are compared as SQLAlchemy's generic types
    and defaults are not compared (each dialect spells them its own way). `phrasing(has,
    thing)` words what one side has and the other lacks (default: "A has …; B does not")."""

    def say(has: str, thing: str) -> str:
        if phrasing is not None:
            return phrasing(has, thing)
        lacks = right_name if has == left_name else left_name
        return f"{has} has {thing}; {lacks} does not"

    found: list[Difference] = []
    for name in sorted(set(left.tables) | set(right.tables)):
        a, b = left.tables.get(name), right.tables.get(name)
        if a is None or b is None:
            has = right_name if a is None else left_name
            found.append(Difference("table", name, say(has, f"table {name}"), has))
            continue
        found += _compare_tables(a, b, left_name, right_name, cross_dialect, say)
    return found


def _compare_tables(a: Table, b: Table, ln: str, rn: str, cross: bool, say) -> list[Difference]:
    found: list[Difference] = []
    table = a.name
    for column in sorted(set(a.columns) | set(b.columns)):
        ca, cb = a.columns.get(column), b.columns.get(column)
        where = f"{table}.{column}"
        if ca is None or cb is None:
            has = rn if ca is None else ln
            found.append(Difference("column", where, say(has, f"column {where}"), has))
            continue
        ta, tb = (ca.generic, cb.generic) if cross else (ca.type, cb.type)
        if ta != tb:
            found.append(Difference("type", where, f"{where} is {ta} in {ln} but {tb} in {rn}"))
        if ca.nullable != cb.nullable:
            na = "nullable" if ca.nullable else "NOT NULL"
            nb = "nullable" if cb.nullable else "NOT NULL"
            found.append(Difference("nullable", where, f"{where} is {na} in {ln} but {nb} in {rn}"))
        if not cross and ca.default != cb.default:
            found.append(
                Difference(
                    "default",
                    where,
                    f"{where} defaults to {ca.default or 'nothing'} in {ln} "
                    f"but {cb.default or 'nothing'} in {rn}",
                )
            )
    if a.primary_key != b.primary_key:
        found.append(
            Difference(
                "primary_key",
                table,
                f"{table}'s primary key is ({_cols(a.primary_key) or 'none'}) in {ln} but "
                f"({_cols(b.primary_key) or 'none'}) in {rn}",
            )
        )
    found += _compare_sets(
        table,
        "index",
        {(i.columns, i.unique): i for i in a.indexes},
        {(i.columns, i.unique): i for i in b.indexes},
        lambda i: (
            f"{'unique ' if i.unique else ''}index {i.name or ''} on {table} "
            f"({_cols(i.columns)})".replace("  ", " ")
        ),
        ln,
        rn,
        say,
    )
    found += _compare_sets(
        table,
        "unique",
        {u: u for u in a.uniques},
        {u: u for u in b.uniques},
        lambda u: f"a unique constraint on {table} ({_cols(u)})",
        ln,
        rn,
        say,
    )
    fk_key = lambda f: (f.columns, f.referred_table, f.referred_columns, f.ondelete, f.onupdate)  # noqa: E731
    found += _compare_sets(
        table,
        "fk",
        {fk_key(f): f for f in a.foreign_keys},
        {fk_key(f): f for f in b.foreign_keys},
        lambda f: (
            f"a foreign key {table} ({_cols(f.columns)}) → {f.referred_table} "
            f"({_cols(f.referred_columns)})"
            + (f" ON DELETE {f.ondelete}" if f.ondelete != "NO ACTION" else "")
        ),
        ln,
        rn,
        say,
    )
    found += _compare_sets(
        table,
        "check",
        {c: c for c in a.checks},
        {c: c for c in b.checks},
        lambda c: f"a check on {table} ({c})",
        ln,
        rn,
        say,
    )
    return found


def _compare_sets(table, kind, left: dict, right: dict, describe, ln, rn, say) -> list[Difference]:
    found = []
    for key in sorted(set(left) - set(right), key=str):
        found.append(Difference(kind, table, say(ln, describe(left[key])), ln))
    for key in sorted(set(right) - set(left), key=str):
        found.append(Difference(kind, table, say(rn, describe(right[key])), rn))
    return found
