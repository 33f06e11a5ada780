"""What one revision file declares — `revision`, `down_revision`, `branch_labels`,
`depends_on` and its docstring — read from its text without importing it: a fast scan of the
header, `ast` for anything unusual, and names resolved through the project's own modules
(`static_names.py`)."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from environments.core import static_names

_LEGACY_REVISION_NAME = re.compile(r"([a-f0-9]+)\.py$")


_CREATE_DATE = re.compile(r"^Create Date:\s*(.+?)\s*$", re.MULTILINE)


_HEADER_NAMES = ("revision", "down_revision", "branch_labels", "depends_on")


class HeaderNames(NamedTuple):
    """Header values written as names rather than literals, left for the index to resolve
    against the project's own modules (`static_names`)."""

    symbols: static_names.ModuleSymbols
    # (header, line, source text, expression) for each header that is not a literal
    expressions: tuple[tuple[str, int, str, ast.expr], ...]


class RevisionFile(NamedTuple):
    """What a revision file declares, read statically. A named tuple: two thousand of them are
    made on every cold read, and a tuple is made in a third of a frozen dataclass's time."""

    revision: str
    down_revision: str | tuple[str, ...] | None
    branch_labels: tuple[str, ...]
    depends_on: str | tuple[str, ...] | None
    doc: str
    filename: str  # the file's path
    names: HeaderNames | None = None  # headers still to resolve; None once all are literals

    @property
    def path(self) -> Path:
        return Path(self.filename)

    @property
    def message(self) -> str:
        """The docstring's first paragraph, as `alembic history` shows it."""
        return self.doc.split("\n\n", 1)[0].strip()

    @property
    def create_date(self) -> str | None:
        found = _CREATE_DATE.search(self.doc)
        return found.group(1) if found else None

    @property
    def down_revisions(self) -> tuple[str, ...]:
        return as_tuple(self.down_revision)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return as_tuple(self.depends_on)


def as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def read_revision_source(source: bytes, path: str | Path) -> RevisionFile:
    """Read a revision file's header: a fast scan, or `ast` whenever the file is unusual.

    The scan finds the four module-level assignments and the docstring in the text and
    evaluates only those literals; anything it cannot read with certainty (a header missing,
    a value that is not a literal, an odd docstring) goes through the full parser instead.
    """
    try:
        return scan_header(source, path)
    except NeedsParser:
        return parse_revision_source(source, path)


class NeedsParser(Exception):
    """The fast scan is not sure; let the parser decide."""


# A header assignment at the start of a line. The leading newline lets the regex engine jump
# from line to line instead of trying the alternatives at every byte of the file. A plain
# string or None is taken apart here; any other value goes to `_literal`.
_HEADER = re.compile(
    rb"\n(revision|down_revision|branch_labels|depends_on)[ \t]*(?::[^=\n]*)?=[ \t]*"
    rb"(?:([\"'])([^\"'\\\n]*)\2[ \t]*(?:#[^\n]*)?$|(None)[ \t]*(?:#[^\n]*)?$|([^\n]+))",
    re.MULTILINE,
)


_HEADER_KEYS = {name.encode(): name for name in _HEADER_NAMES}


_DOCSTRING_OPENS = re.compile(rb'\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*([rRuU]?)("""|\'\'\')')


def _header_values(source: bytes, start: int) -> dict[str, object]:
    """The header assignments at the start of a line after `start`; the last one wins, as
    when Python runs the module."""
    values: dict[str, object] = {}
    for name, quote, string, none, other in _HEADER.findall(b"\n" + source[start:]):
        if quote:
            try:
                value: object = string.decode()
            except UnicodeDecodeError:
                raise NeedsParser from None
        elif none:
            value = None
        elif other.count(b"(") != other.count(b")") or other.count(b"[") != other.count(b"]"):
            raise NeedsParser  # a value spread over several lines
        else:
            value = _literal(other)
        values[_HEADER_KEYS[name]] = value
    return values


def scan_header(source: bytes, path: str | Path, *, complete: bool = True) -> RevisionFile:
    opens = _DOCSTRING_OPENS.match(source)
    closes = source.find(opens.group(2), opens.end()) if opens else -1
    if opens is not None and closes == -1 and not complete:
        raise NeedsParser  # a docstring longer than what was read
    body_start = closes + 3 if closes != -1 else 0
    values = _header_values(source, body_start)
    if len(values) != len(_HEADER_NAMES) or not isinstance(values["revision"], str):
        raise NeedsParser
    doc = ""
    if closes != -1:
        body = source[opens.end() : closes]
        if b"\\" in body and opens.group(1) not in (b"r", b"R"):
            raise NeedsParser  # escapes: let the parser interpret them
        try:
            doc = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise NeedsParser from None
    return _revision_file(values, doc, path)


_STRINGS = re.compile(
    rb"""\A[(\[]\s*((?:(?:"[^"\\\n]*"|'[^'\\\n]*')\s*,\s*)*(?:"[^"\\\n]*"|'[^'\\\n]*')?)\s*,?\s*[)\]]\Z"""
)


_ITEM = re.compile(rb""""([^"\\\n]*)"|'([^'\\\n]*)'""")


def _literal(text: bytes) -> object:
    """The value of a tuple or list of plain strings (or anything `ast.literal_eval` reads
    alone); else the parser. Plain strings and None are read by `_HEADER` itself."""
    value = text.split(b"#", 1)[0].strip() if b"#" in text else text.strip()
    if value == b"None":
        return None
    match = _STRINGS.match(value)
    if match:
        items = [(a if a else b).decode() for a, b in _ITEM.findall(match.group(1))]
        return items if value.startswith(b"[") else tuple(items)
    try:
        return ast.literal_eval(text.decode("utf-8").strip())
    except (ValueError, SyntaxError, TypeError, UnicodeDecodeError):
        raise NeedsParser from None


def name_assignments(statements: Iterable[ast.AST]) -> Iterator[tuple[str, ast.expr]]:
    """`name = value` and `name: type = value` statements, as (name, value)."""
    for node in statements:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            yield target.id, value


def parse_revision_source(source: bytes | str, path: str | Path) -> RevisionFile:
    """Read a revision file's header with `ast`. Raises ValueError with a readable reason."""
    try:
        module = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        where = f" on line {exc.lineno}" if exc.lineno else ""
        raise ValueError(f"syntax error{where}: {exc.msg}") from None
    except ValueError as exc:  # e.g. null bytes
        raise ValueError(f"cannot be parsed: {exc}") from None

    values: dict[str, object] = {}
    expressions: dict[str, tuple[str, int, str, ast.expr]] = {}
    source_text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    for name, value in name_assignments(module.body):
        if name in _HEADER_NAMES:
            try:
                values[name] = ast.literal_eval(value)
                expressions.pop(name, None)
            except (ValueError, SyntaxError, TypeError):
                # a name, not a literal: resolved later against the project's own modules
                text = ast.get_source_segment(source_text, value) or ast.unparse(value)
                expressions[name] = (name, value.lineno, " ".join(text.split()), value)
                values.pop(name, None)

    doc = (ast.get_docstring(module, clean=False) or "").strip()
    if values.get("revision") is None and "revision" not in expressions:
        legacy = _LEGACY_REVISION_NAME.match(os.path.basename(path))
        if legacy is None:
            raise ValueError("declares no revision id (no module-level `revision = ...`)")
        values["revision"] = legacy.group(1)
    names = None
    if expressions:
        symbols = static_names.module_symbols(module, str(path))
        names = HeaderNames(symbols, tuple(expressions.values()))
        values.setdefault("revision", "")  # filled in by the index, or the file is left out
    return _revision_file(values, doc, path, names)


def _revision_file(
    values: dict[str, object], doc: str, path: str | Path, names: HeaderNames | None = None
) -> RevisionFile:
    revision = values.get("revision")
    if names is None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError("its revision id is not a non-empty string")
    if not isinstance(revision, str):
        raise ValueError("its revision id is not a string")
    return RevisionFile(
        revision,
        _revision_refs(values.get("down_revision"), "down_revision"),
        as_tuple(_revision_refs(values.get("branch_labels"), "branch_labels")),
        _revision_refs(values.get("depends_on"), "depends_on"),
        doc,
        str(path),
        names,
    )


def _revision_refs(value: object, name: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value) or None
    raise ValueError(f"{name} must be a string, a tuple of strings or None")


_DOC_REVISION_ID = re.compile(r"^Revision ID:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


_DOC_REVISES = re.compile(r"^Revises:[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def resolve_names(
    revision: RevisionFile, resolver: static_names.Resolver
) -> tuple[RevisionFile | None, list[str]]:
    """`revision` with its named headers replaced by their values, and a sentence for each
    that could not be resolved. None when even its revision id cannot be known.

    What cannot be resolved is left out, keeping everything known: an unresolved label or
    dependency is dropped (the revision stays in the graph), an unresolved parent or id falls
    back to the docstring alembic's template writes ("Revision ID:", "Revises:").
    """
    assert revision.names is not None
    values: dict[str, object] = {
        "revision": revision.revision,
        "down_revision": revision.down_revision,
        "branch_labels": revision.branch_labels,
        "depends_on": revision.depends_on,
    }
    notes: list[str] = []
    for header, line, text, expression in revision.names.expressions:
        where = f"{header} on line {line} is `{text}`"
        sequence = isinstance(expression, ast.Tuple | ast.List)
        items = expression.elts if sequence else [expression]
        found: list[object] = []
        for item in items:
            try:
                value = resolver.value(item, revision.names.symbols)
            except static_names.Unresolved as exc:
                sentence = (
                    f"{where}, and Retort could not resolve its item `{ast.unparse(item)}` "
                    f"without running code ({exc})"
                    if sequence
                    else f"{where}, which Retort could not resolve without running code ({exc})"
                )
                notes.append(_unresolved_note(header, sentence, revision.doc, values))
                continue
            found.extend(value if isinstance(value, tuple) else (value,))
        strings = tuple(item for item in found if isinstance(item, str) and item)
        if header in ("revision", "down_revision") and len(found) != len(items):
            continue  # the fallback (or the lack of one) is already in `values`
        if header == "revision":
            values["revision"] = strings[0] if len(strings) == 1 else values["revision"]
            if len(strings) != 1:
                notes.append(f"{where}, which resolves to {found!r}, not a revision id.")
        elif header == "down_revision":
            values[header] = strings if sequence else (strings[0] if strings else None)
        else:
            values[header] = tuple(strings) if header == "branch_labels" else (strings or None)
    if not values["revision"]:
        return None, notes
    return (
        RevisionFile(
            str(values["revision"]),
            _revision_refs(values["down_revision"], "down_revision"),
            as_tuple(_revision_refs(values["branch_labels"], "branch_labels")),
            _revision_refs(values["depends_on"], "depends_on"),
            revision.doc,
            revision.filename,
        ),
        notes,
    )


def _unresolved_note(header: str, sentence: str, doc: str, values: dict[str, object]) -> str:
    """`sentence` completed with what Retort did instead, the fallback set in `values`."""
    if header == "revision":
        found = _DOC_REVISION_ID.search(doc)
        if found:
            values["revision"] = found.group(1)
            return f"{sentence}; Retort took {found.group(1)} from the docstring's Revision ID."
        return f"{sentence}; without an id the file is left out of the graph."
    if header == "down_revision":
        found = _DOC_REVISES.search(doc)
        if found:
            parents = tuple(
                part.strip()
                for part in found.group(1).split(",")
                if part.strip() and part.strip() != "None"
            )
            values["down_revision"] = parents or None
            shown = ", ".join(parents) or "none"
            return f"{sentence}; Retort took its parents ({shown}) from the docstring's Revises."
        values["down_revision"] = None
        return (
            f"{sentence}; it is drawn as a base, so heads and pending lists near it may be wrong."
        )
    if header == "branch_labels":
        return f"{sentence}; the revision is shown without that branch label."
    return f"{sentence}; the revision is shown without that dependency."
