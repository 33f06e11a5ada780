"""Read an Alembic script directory the way Alembic finds it, without importing a revision file.

Revision files of real projects import the application's own modules; importing them in the web
process would run foreign code and fail whenever those modules are missing. Instead each file is
parsed with `ast` for its module-level assignments and docstring, and the graph is built with
Alembic's own `RevisionMap`, so every question about order, heads and branches gets Alembic's
answer.
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import gc
import operator
import os
import re
import sys
import threading
import tomllib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple, TypeVar

from alembic.config import Config
from alembic.script.revision import Revision, RevisionError, RevisionMap
from alembic.util import CommandError

from environments.core import static_names
from environments.core.revision_map import LinearRevisionMap

T = TypeVar("T")

_LEGACY_REVISION_NAME = re.compile(r"([a-f0-9]+)\.py$")
_CREATE_DATE = re.compile(r"^Create Date:\s*(.+?)\s*$", re.MULTILINE)
_HEADER_NAMES = ("revision", "down_revision", "branch_labels", "depends_on")


class ScriptConfigError(Exception):
    """The project's Alembic configuration cannot be turned into a script directory."""


@dataclass(frozen=True)
class ScriptConfig:
    """Where a project's revision files live, resolved to absolute paths."""

    script_location: Path
    version_locations: tuple[Path, ...]
    recursive: bool = False
    import_roots: tuple[Path, ...] = ()  # where the project's own modules are found
    warnings: tuple[str, ...] = ()  # what Alembic warns about the configuration
    # a revision file larger than this has only its header read: never compiled, analysed or
    # shown (a 57 MB file once took the web process to 17 GB)
    max_bytes: int = 1_000_000


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
        return _as_tuple(self.down_revision)

    @property
    def dependencies(self) -> tuple[str, ...]:
        return _as_tuple(self.depends_on)


@dataclass(frozen=True)
class ScriptProblem:
    """A file (or the directory as a whole) that could not be read as Alembic would need."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class ScriptIndex:
    """Every readable revision of a script directory, and Alembic's map over them."""

    config: ScriptConfig
    revisions: dict[str, RevisionFile]
    read_problems: list[ScriptProblem]  # files whose header could not be read
    revision_map: RevisionMap | None
    fingerprint: tuple
    heads: tuple[str, ...] = ()
    bases: tuple[str, ...] = ()
    fatal: str | None = None  # set when no graph could be built at all
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # id → files declaring it
    # modules of the project a header's name was looked up in, with their (size, mtime)
    modules: tuple[tuple[str, tuple[int, int] | None], ...] = ()
    _pending_cache: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)
    memo: dict[object, object] = field(default_factory=dict)  # answers derived from the index
    _lock: threading.Lock = field(default_factory=threading.Lock)

    _syntax_problems: list[ScriptProblem] | None = None

    @property
    def problems(self) -> list[ScriptProblem]:
        """Unreadable headers, and syntax errors anywhere in a file (checked on first ask).

        Compiling every file costs more than reading the whole graph, so it happens only when
        someone asks for problems, once per version of each file.
        """
        if self._syntax_problems is None:
            by_path = {path: (size, mtime) for path, size, mtime in self.fingerprint[1]}
            found = []
            for revision in self.revisions.values():
                size, mtime = by_path.get(revision.filename, (0, 0))
                if size > self.config.max_bytes:
                    continue  # said already, and never compiled
                problem = check_syntax(revision.filename, size, mtime)
                if problem is not None:
                    found.append(problem)
            self._syntax_problems = found
        return self.read_problems + self._syntax_problems

    @property
    def has_multiple_heads(self) -> bool:
        return len(self.heads) > 1

    def shown_path(self, path: str) -> str:
        """A revision file's path as pages show it: relative to the project's folder."""
        return _shown_path(self.config, path)

    def knows(self, revision_id: str) -> bool:
        return revision_id in self.revisions

    def dependencies_of(self, revision_id: str) -> tuple[str, ...]:
        """The revision ids a revision's `depends_on` names, a branch label resolved to the
        revision Alembic resolves it to."""
        if self.revision_map is not None:
            node = self.revision_map._revision_map.get(revision_id)
            if node is not None:
                return tuple(node._resolved_dependencies)
        revision = self.revisions.get(revision_id)
        return revision.dependencies if revision else ()

    def pending(self, current_heads: Sequence[str]) -> tuple[str, ...]:
        """Revisions `alembic upgrade heads` would apply from `current_heads`, in its order."""
        key = tuple(sorted(current_heads))
        with self._lock:
            cached = self._pending_cache.get(key)
        if cached is not None:
            return cached
        assert self.revision_map is not None
        with self._lock:
            revisions = self.revision_map.iterate_revisions("heads", key, implicit_base=True)
            pending = tuple(rev.revision for rev in reversed(list(revisions)))
            if len(self._pending_cache) > 512:
                self._pending_cache.clear()
            self._pending_cache[key] = pending
        return pending

    def applied(self, current_heads: Sequence[str]) -> tuple[str, ...]:
        """Revisions a database at `current_heads` holds, newest first."""
        if not current_heads:
            return ()
        assert self.revision_map is not None
        with self._lock:
            revisions = self.revision_map.iterate_revisions(
                tuple(current_heads), "base", implicit_base=True
            )
            return tuple(rev.revision for rev in revisions)


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


# --- configuration -------------------------------------------------------------------------


def config_from_ini(
    ini_path: str | Path,
    *,
    section: str = "alembic",
    working_dir: str | Path | None = None,
    script_location: str | None = None,
    version_locations: Sequence[str] | None = None,
    recursive_version_locations: bool | None = None,
) -> ScriptConfig:
    """Resolve a project's script directory from its alembic.ini, as configuration only.

    The options are read by Alembic's own `Config`, from the ini and from the pyproject.toml
    in the folder alembic runs in (`[tool.alembic]`), so separators, `%(here)s`,
    `prepend_sys_path` and `recursive_version_locations` mean what they mean to alembic.
    Relative paths resolve against `working_dir` (where alembic runs, default: the ini's
    folder), like Alembic resolves them against its working directory. Arguments override the
    file. Alembic's warnings about the configuration come back in `ScriptConfig.warnings`.
    """
    ini = Path(ini_path).resolve()
    if not ini.is_file():
        raise ScriptConfigError(f"The Alembic configuration file {ini} does not exist.")
    base = Path(working_dir).resolve() if working_dir else ini.parent
    config = Config(str(ini), toml_file=str(base / "pyproject.toml"), ini_section=section)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            location = script_location or config.get_alembic_option("script_location")
            if version_locations is None:
                version_locations = config.get_version_locations_list()
            if recursive_version_locations is None:
                recursive_version_locations = config.get_alembic_boolean_option(
                    "recursive_version_locations"
                )
            prepend = config.get_prepend_sys_paths_list() or []
        except (configparser.Error, UnicodeDecodeError, ValueError, CommandError) as exc:
            raise ScriptConfigError(f"{ini.name} could not be read: {exc}") from None
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ScriptConfigError(f"pyproject.toml could not be read: {exc}") from None
    if not location:
        raise ScriptConfigError(
            f"{ini.name} has no script_location in its [{section}] section; "
            "set one there or in Retort's project settings."
        )
    notes = tuple(dict.fromkeys(f"{ini.name}: {warning.message}" for warning in caught))
    found = build_config(
        str(location),
        [str(loc) for loc in version_locations or ()] or None,
        recursive=recursive_version_locations,
        base=base,
        import_roots=[(base / path).resolve() for path in prepend if path] + [ini.parent],
    )
    return dataclasses.replace(found, warnings=notes)


def build_config(
    script_location: str,
    version_locations: Sequence[str] | None = None,
    *,
    recursive: bool = False,
    base: Path,
    import_roots: Sequence[Path] = (),
) -> ScriptConfig:
    root = _resolve(script_location, base)
    if version_locations:
        locations = tuple(_resolve(loc, base) for loc in version_locations)
    else:
        locations = (root / "versions",)
    # where a revision's `import constants` is looked for: prepend_sys_path, the ini's folder,
    # the folder alembic runs in, then the script location, as Python would search sys.path
    roots = tuple(dict.fromkeys([*import_roots, base, root]))
    return ScriptConfig(
        script_location=root, version_locations=locations, recursive=recursive, import_roots=roots
    )


def _resolve(location: str, base: Path) -> Path:
    if (
        ":" in location
        and not os.path.isabs(location)
        and not re.match(r"^[A-Za-z]:[\\/]", location)
    ):
        package, _, resource = location.partition(":")
        return _package_resource(package, resource, base)
    path = Path(location)
    return (path if path.is_absolute() else base / path).resolve()


def _package_resource(package: str, resource: str, base: Path) -> Path:
    """Find `package:resource` on disk without importing the package."""
    parts = package.split(".")
    for root in (base, *[Path(p) for p in sys.path if p]):
        candidate = root.joinpath(*parts)
        if (candidate / "__init__.py").is_file() or candidate.is_dir():
            return (candidate / resource).resolve()
    raise ScriptConfigError(
        f"The package {package!r} of script location '{package}:{resource}' was not found "
        f"under {base}; set script_location to a path instead."
    )


# --- reading files -------------------------------------------------------------------------


def _is_revision_file(name: str) -> bool:
    """Alembic's rule, `(?!\\.\\#|__init__)(.*\\.py)$`, without a regex per file."""
    return name.endswith(".py") and not name.startswith((".#", "__init__")) and "\n" not in name


_by_name = operator.attrgetter("name")


def list_revision_files(
    config: ScriptConfig, refused: list[tuple[str, str]] | None = None
) -> list[tuple[str, int, int]]:
    """The files Alembic would load, in its order, each once, with their size and mtime.

    Only regular files inside the project are listed: a FIFO or a device (reading one would
    hang or never end) and a link leading out of the project are left out, each with the
    reason appended to `refused`. Only directories are resolved (a file reached twice through
    links to the same folder is listed once); resolving every file would cost more than reading
    it.
    """
    refused = [] if refused is None else refused
    inside = _project_roots(config)
    seen_dirs: set[str] = set()
    seen_links: set[str] = set()
    found: list[tuple[str, int, int]] = []
    for location in config.version_locations:
        pending = [os.path.realpath(location)]
        while pending:
            directory = pending.pop(0)
            if directory in seen_dirs or not os.path.isdir(directory):
                continue
            seen_dirs.add(directory)
            subdirs = []
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=_by_name)
            for entry in entries:
                if entry.is_dir():
                    if entry.name != "__pycache__":
                        real = os.path.realpath(entry.path)
                        if _within(real, inside):
                            subdirs.append(real)
                        elif config.recursive:
                            refused.append((entry.path, _outside(real)))
                elif _is_revision_file(entry.name):
                    if entry.is_symlink():
                        real = os.path.realpath(entry.path)
                        # Alembic loads a file reached twice only once
                        if real in seen_links or os.path.dirname(real) in seen_dirs:
                            continue
                        seen_links.add(real)
                        if not _within(real, inside):
                            refused.append((entry.path, _outside(real)))
                            continue
                    try:
                        stat = entry.stat()
                    except OSError:
                        continue
                    if not S_ISREG(stat.st_mode):
                        refused.append((entry.path, _NOT_A_FILE))
                        continue
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
            if config.recursive:
                pending[:0] = subdirs
    return found


_NOT_A_FILE = (
    "is not a regular file (a pipe, a device or a socket); Retort does not open it. Remove it "
    "from the version directory."
)


def _project_roots(config: ScriptConfig) -> tuple[str, ...]:
    """Where a project's revision files may live: its folder and its version locations."""
    roots = [config.script_location.parent, *config.version_locations]
    return tuple(os.path.realpath(root) for root in roots)


def _within(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _outside(real: str) -> str:
    return f"links to {real}, outside the project; Retort does not follow it."


def read_revision_source(source: bytes, path: str | Path) -> RevisionFile:
    """Read a revision file's header: a fast scan, or `ast` whenever the file is unusual.

    The scan finds the four module-level assignments and the docstring in the text and
    evaluates only those literals; anything it cannot read with certainty (a header missing,
    a value that is not a literal, an odd docstring) goes through the full parser instead.
    """
    try:
        return _scan_header(source, path)
    except _NeedsParser:
        return parse_revision_source(source, path)


class _NeedsParser(Exception):
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
                raise _NeedsParser from None
        elif none:
            value = None
        elif other.count(b"(") != other.count(b")") or other.count(b"[") != other.count(b"]"):
            raise _NeedsParser  # a value spread over several lines
        else:
            value = _literal(other)
        values[_HEADER_KEYS[name]] = value
    return values


def _scan_header(source: bytes, path: str | Path, *, complete: bool = True) -> RevisionFile:
    opens = _DOCSTRING_OPENS.match(source)
    closes = source.find(opens.group(2), opens.end()) if opens else -1
    if opens is not None and closes == -1 and not complete:
        raise _NeedsParser  # a docstring longer than what was read
    body_start = closes + 3 if closes != -1 else 0
    values = _header_values(source, body_start)
    if len(values) != len(_HEADER_NAMES) or not isinstance(values["revision"], str):
        raise _NeedsParser
    doc = ""
    if closes != -1:
        body = source[opens.end() : closes]
        if b"\\" in body and opens.group(1) not in (b"r", b"R"):
            raise _NeedsParser  # escapes: let the parser interpret them
        try:
            doc = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _NeedsParser from None
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
        raise _NeedsParser from None


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
        _as_tuple(_revision_refs(values.get("branch_labels"), "branch_labels")),
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


# --- names in headers ----------------------------------------------------------------------

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
            _as_tuple(_revision_refs(values["branch_labels"], "branch_labels")),
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


# --- the index -----------------------------------------------------------------------------


class FileCache(dict):
    """Results computed from a file, kept while its size and modification time stay the same."""

    def get_or_compute(self, path: Path, size: int, mtime: int, compute: Callable[[], T]) -> T:
        cached = self.get(path)
        if cached is not None and cached[0] == size and cached[1] == mtime:
            return cached[2]
        result = compute()
        self[path] = (size, mtime, result)
        return result


_file_cache = FileCache()
_syntax_cache = FileCache()
_index_cache: dict[ScriptConfig, ScriptIndex] = {}
_build_lock = threading.Lock()


def load_index(config: ScriptConfig) -> ScriptIndex:
    """The script directory's index; re-read only when its fingerprint changed (its revision
    files, and any module of the project a header's name was looked up in)."""
    refused: list[tuple[str, str]] = []
    files = list_revision_files(config, refused)
    print_ = (config, tuple(files), tuple(refused))
    cached = _index_cache.get(config)
    if cached is not None and _still_valid(cached, print_):
        return cached
    with _build_lock:
        cached = _index_cache.get(config)
        if cached is not None and _still_valid(cached, print_):
            return cached
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a build allocates many small objects and frees none of them
        try:
            index = _build_index(config, files, print_, refused)
        finally:
            if gc_was_enabled:
                gc.enable()
        _index_cache[config] = index
        return index


def _still_valid(index: ScriptIndex, print_: tuple) -> bool:
    if index.fingerprint != print_:
        return False
    if not index.modules:
        return True
    return static_names.snapshot(path for path, _ in index.modules) == index.modules


def _read_file(
    path: str, size: int, mtime: int, max_bytes: int = 1_000_000
) -> RevisionFile | ScriptProblem:
    def read() -> RevisionFile | ScriptProblem:
        try:
            return _read_header(path, size, max_bytes)
        except ValueError as exc:
            return ScriptProblem(os.path.basename(path), str(exc))
        except OSError as exc:
            return ScriptProblem(os.path.basename(path), f"cannot be read: {exc.strerror}")

    return _file_cache.get_or_compute(path, size, mtime, read)


_PREFIX = 8192


def _read_header(path: str, size: int, max_bytes: int = 1_000_000) -> RevisionFile:
    """Headers sit at the top of a revision file: scan its first bytes, the rest only if needed
    (and never more than `max_bytes`)."""
    # non-blocking: a file swapped for a pipe since it was listed must not hang the read
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        prefix = os.read(fd, _PREFIX)
    finally:
        os.close(fd)
    if len(prefix) < _PREFIX and size <= _PREFIX:
        return read_revision_source(prefix, path)
    try:
        return _scan_header(prefix, path, complete=False)
    except _NeedsParser:
        if size > max_bytes:
            raise ValueError(
                f"{_too_large(size, max_bytes)}, and its header is not plain enough to read "
                f"from its first {_PREFIX // 1024} KiB; the file is left out"
            ) from None
        return read_revision_source(Path(path).read_bytes(), path)


def _too_large(size: int, max_bytes: int) -> str:
    return f"is {size / 1_000_000:.1f} MB, over Retort's limit of {max_bytes / 1_000_000:g} MB"


def too_large(size: int, max_bytes: int) -> str | None:
    """The sentence for a file over the size limit (None when within it)."""
    if size <= max_bytes:
        return None
    return (
        f"{_too_large(size, max_bytes)} (RETORT_MAX_REVISION_BYTES): only its header was read; "
        "its code is not checked, analysed or shown"
    )


def check_syntax(path: str, size: int, mtime: int) -> ScriptProblem | None:
    """Compile (never run) a file whose header was read by the fast scan, once per version."""

    def compile_file() -> ScriptProblem | None:
        try:
            compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f" on line {exc.lineno}" if exc.lineno else ""
            return ScriptProblem(
                os.path.basename(path),
                f"syntax error{where}: {exc.msg} — alembic cannot load the scripts until it is "
                "fixed",
            )
        except (ValueError, OSError) as exc:
            return ScriptProblem(os.path.basename(path), f"cannot be compiled: {exc}")
        return None

    return _syntax_cache.get_or_compute(path, size, mtime, compile_file)


def _build_index(
    config: ScriptConfig,
    files: list[tuple[str, int, int]],
    print_: tuple,
    refused: Sequence[tuple[str, str]] = (),
) -> ScriptIndex:
    problems = [ScriptProblem(config.script_location.name, note) for note in config.warnings]
    if not any(location.is_dir() for location in config.version_locations):
        where = ", ".join(str(loc) for loc in config.version_locations)
        fatal = f"The version directory {where} does not exist."
        return ScriptIndex(config, {}, problems, None, print_, fatal=fatal)
    revisions: dict[str, RevisionFile] = {}
    graph_nodes: list[Revision] = []
    declared_in: dict[str, list[str]] = {}
    resolver = static_names.Resolver(config.import_roots, config.max_bytes)
    nameless: list[str] = []  # files whose revision id could not be resolved
    problems.extend(ScriptProblem(os.path.basename(path), reason) for path, reason in refused)
    for path, size, mtime in files:
        parsed = _read_file(path, size, mtime, config.max_bytes)
        if isinstance(parsed, ScriptProblem):
            problems.append(parsed)
            continue
        oversized = too_large(size, config.max_bytes)
        if oversized:
            problems.append(ScriptProblem(parsed.path.name, oversized))
        if parsed.names is not None:
            resolved, notes = resolve_names(parsed, resolver)
            problems.extend(ScriptProblem(parsed.path.name, note) for note in notes)
            if resolved is None:
                nameless.append(parsed.path.name)
                continue
            parsed = resolved
        try:
            node = Revision(
                parsed.revision,
                parsed.down_revision,
                dependencies=parsed.depends_on,
                branch_labels=parsed.branch_labels or None,
            )
        except RevisionError as exc:
            problems.append(ScriptProblem(parsed.path.name, str(exc)))
            continue
        # Alembic keeps every file in its map's input and the last one under the id; so do we
        declared_in.setdefault(parsed.revision, []).append(parsed.filename)
        revisions[parsed.revision] = parsed
        graph_nodes.append(node)
    duplicates = {rev: paths for rev, paths in declared_in.items() if len(paths) > 1}
    problems.extend(_duplicate_problem(config, rev, paths) for rev, paths in duplicates.items())
    modules = tuple(sorted(resolver.consulted.items()))

    revision_map = LinearRevisionMap(lambda: graph_nodes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            heads = revision_map.heads
            bases = revision_map.bases
            # touch every lazily built structure now, while we hold the lock
            revision_map._revision_map  # noqa: B018
        except RevisionError as exc:
            return ScriptIndex(
                config,
                revisions,
                problems,
                None,
                print_,
                fatal=f"The revision graph is broken: {exc}",
                duplicates=duplicates,
                modules=modules,
            )
        except KeyError as exc:  # Alembic warns, then looks the missing revision up anyway
            return ScriptIndex(
                config,
                revisions,
                problems,
                None,
                print_,
                fatal=_missing_parent(revisions, exc, nameless),
                duplicates=duplicates,
                modules=modules,
            )
    for warning in caught:
        if duplicates and "is present more than once" in str(warning.message):
            continue  # said above, with both files named
        problems.append(ScriptProblem(str(config.script_location.name), str(warning.message)))
    return ScriptIndex(
        config,
        revisions,
        problems,
        revision_map,
        print_,
        heads=tuple(heads),
        bases=tuple(bases),
        duplicates=duplicates,
        modules=modules,
    )


def _shown_path(config: ScriptConfig, path: str) -> str:
    """A path relative to the project's folder, where that is shorter."""
    try:
        return str(Path(path).relative_to(config.script_location.parent))
    except ValueError:
        return path


def _duplicate_problem(config: ScriptConfig, revision: str, paths: list[str]) -> ScriptProblem:
    shown = [_shown_path(config, path) for path in paths]
    return ScriptProblem(
        os.path.basename(paths[-1]),
        f"revision {revision} is declared in {len(paths)} files ({', '.join(shown)}). Alembic "
        f'warns "Revision {revision} is present more than once", keeps the last one '
        f"({shown[-1]}) and then refuses to plan upgrades; remove or rename the other.",
    )


def _missing_parent(
    revisions: dict[str, RevisionFile], error: KeyError, nameless: Sequence[str] = ()
) -> str:
    missing = str(error.args[0]) if error.args else "?"
    as_parent = sorted(
        os.path.basename(revision.filename)
        for revision in revisions.values()
        if missing in revision.down_revisions
    )
    as_dependency = sorted(
        os.path.basename(revision.filename)
        for revision in revisions.values()
        if missing in revision.dependencies
    )
    unread = (
        f" ({', '.join(nameless)} could not be read for its revision id, which may be it)"
        if nameless
        else ""
    )
    if as_parent:
        return (
            f"The revision graph is broken: {', '.join(as_parent)} names revision {missing} as "
            f"its parent, and no revision file declares it{unread}. Restore that file, or point "
            "down_revision at a revision that exists."
        )
    if "@" in missing:
        return (
            f"The revision graph is broken: {', '.join(as_dependency)} depends on {missing}, "
            "which alembic cannot load: depends_on takes revision ids or branch labels, not "
            f"label@head. Name the branch label ({missing.split('@', 1)[0]}) or a revision id."
        )
    return (
        f"The revision graph is broken: {', '.join(as_dependency) or 'a revision file'} "
        f"depends on {missing} (depends_on), and no revision file declares it as a revision or "
        f"a branch label{unread}. Restore that file, or correct depends_on."
    )
