"""Read an Alembic script directory the way Alembic finds it, without importing a revision file.

Revision files of real projects import the application's own modules; importing them in the web
process would run foreign code and fail whenever those modules are missing. Instead each file is
parsed with `ast` for its module-level assignments and docstring, and the graph is built with
Alembic's own `RevisionMap`, so every question about order, heads and branches gets Alembic's
answer.
"""

from __future__ import annotations

import gc
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script.revision import Revision, RevisionError, RevisionMap

from environments.core import revision_order, static_names, syntax_check
from environments.core.revision_files import (
    ScriptProblem,
    list_revision_files,
    read_file,
    too_large,
)
from environments.core.revision_headers import RevisionFile, resolve_names
from environments.core.revision_map import LinearRevisionMap
from environments.core.script_config import ScriptConfig


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
    # (kind, heads) → applied, pending or held revisions; read without the lock
    _answers: dict[tuple, tuple | frozenset] = field(default_factory=dict)
    _places: tuple[dict[str, int], dict[str, int]] | None = None
    memo: dict[object, object] = field(default_factory=dict)  # answers derived from the index
    _lock: threading.Lock = field(default_factory=threading.Lock)  # held to compute, not read

    _syntax_problems: list[ScriptProblem] | None = None

    @property
    def problems(self) -> list[ScriptProblem]:
        """Unreadable headers, and syntax errors anywhere in a file.

        Compiling every file costs more than reading the whole graph: a few files are compiled
        when someone first asks, many on a second core while the index is read
        (syntax_check.py); either way once per version of each file.
        """
        if self._syntax_problems is None:
            by_path = {path: (size, mtime) for path, size, mtime in self.fingerprint[1]}
            found = []
            for revision in self.revisions.values():
                size, mtime = by_path.get(revision.filename, (0, 0))
                if size > self.config.max_bytes:
                    continue  # said already, and never compiled
                problem = syntax_check.check_syntax(revision.filename, size, mtime)
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
        return self._answer("pending", current_heads)

    def applied(self, current_heads: Sequence[str]) -> tuple[str, ...]:
        """Revisions a database at `current_heads` holds, newest first."""
        return self._answer("applied", current_heads) if current_heads else ()

    def holds(self, current_heads: Sequence[str]) -> frozenset[str]:
        """The same revisions as `applied`, as a set (no order to work out)."""
        return self._answer("holds", current_heads) if current_heads else frozenset()

    def _answer(self, kind: str, current_heads: Sequence[str]):  # noqa: ANN202
        """Computed once per (index, heads); a cached answer is read without a lock."""
        key = (kind, tuple(sorted(current_heads)))
        found = self._answers.get(key)
        if found is not None:
            return found
        assert self.revision_map is not None
        with self._lock:  # one thread computes, the others wait for its answer
            found = self._answers.get(key)
            if found is None:
                found = self._compute(kind, key[1])
                if len(self._answers) > 2048:
                    self._answers.clear()
                self._answers[key] = found
        return found

    def _compute(self, kind: str, heads: tuple[str, ...]):  # noqa: ANN202
        revision_map = self.revision_map
        assert revision_map is not None
        map_ = revision_map._revision_map
        try:
            held = self._held(heads)
            if kind == "holds":
                return held
            if kind == "applied":
                todo, targets = held, heads
            else:
                targets = revision_map._real_heads  # what "heads" names: no dependents either
                todo = self._held(targets) - held
            newest_first = revision_order.upgrade_order(map_, todo, targets, *self._order())
            return tuple(newest_first) if kind == "applied" else tuple(reversed(newest_first))
        except revision_order.Unusual:
            pass  # Alembic's own code answers (or names what is wrong)
        if kind == "pending":
            found = revision_map.iterate_revisions("heads", heads, implicit_base=True)
            return tuple(rev.revision for rev in reversed(list(found)))
        found = revision_map.iterate_revisions(heads, "base", implicit_base=True)
        ids = tuple(rev.revision for rev in found)
        return frozenset(ids) if kind == "holds" else ids

    def _held(self, heads: Sequence[str]) -> frozenset[str]:
        """`holds`, cached with it, for `_compute` (which runs under the lock): the held set
        of the script heads is worked out once for every `pending`, not once per call."""
        key = ("holds", tuple(sorted(heads)))
        found = self._answers.get(key)
        if found is None:
            assert self.revision_map is not None
            found = self._answers[key] = revision_order.ancestors(
                self.revision_map._revision_map, key[1]
            )
        return found

    def _order(self) -> tuple[dict[str, int], dict[str, int]]:
        """What `revision_order.upgrade_order` needs of the map, once per index."""
        if self._places is None:
            assert self.revision_map is not None
            map_ = self.revision_map._revision_map
            self._places = (revision_order.positions(map_), revision_order.depths(map_))
        return self._places


_index_cache: dict[ScriptConfig, ScriptIndex] = {}


_build_lock = threading.Lock()


def load_index(config: ScriptConfig, *, syntax: bool = True) -> ScriptIndex:
    """The script directory's index; re-read only when its fingerprint changed (its revision
    files, and any module of the project a header's name was looked up in). `syntax`: many
    files are compiled on a second core while it is read, for `problems` (off for a caller
    that never asks for them: a reader of version tables)."""
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
            index = _build_index(config, files, print_, refused, syntax=syntax)
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


def _build_index(
    config: ScriptConfig,
    files: list[tuple[str, int, int]],
    print_: tuple,
    refused: Sequence[tuple[str, str]] = (),
    *,
    syntax: bool = True,
) -> ScriptIndex:
    # many files: compiled on a second core while their headers are read (syntax_check.py)
    sweep = syntax_check.sweep_start(files, config.max_bytes) if syntax else None
    try:
        return _read_index(config, files, print_, refused)
    finally:
        if sweep is not None:
            sweep.finish()


def _read_index(
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
        parsed = read_file(path, size, mtime, config.max_bytes)
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
