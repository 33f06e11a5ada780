"""Resolve a name in a revision header to its literal value, statically.

Some projects write `branch_labels = (cli.EXPAND_BRANCH,)` or `depends_on = (BASE_REVISION,)`:
a constant assigned in the same file, or in a module of their own that the revision imports.
Alembic finds the value by importing the file; Retort must not run a line of it. So the value is
looked up the way Python would find it — the module-level assignment in the same file, or the
module an `import`/`from … import` names, searched for on the project's own import roots — and
read with `ast`. Anything else (a call, arithmetic, a name bound by code) stays unresolved, with
a sentence saying why.

No Django here.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

_MAX_DEPTH = 16  # a chain of re-exports longer than this is a loop or not worth following


class Unresolved(Exception):
    """The value could not be found without running code; the message says why."""


@dataclass(frozen=True)
class ImportRef:
    """What an import statement binds to a local name."""

    module: str  # dotted module path as written, "" for `from . import x`
    level: int  # leading dots of a relative import
    name: str | None = None  # `from module import name`; None for `import module`


Binding = ast.expr | ImportRef


class ModuleSymbols(NamedTuple):
    """A module's top-level bindings, the last statement for each name winning."""

    path: str
    bindings: dict[str, Binding]


def module_symbols(module: ast.Module, path: str) -> ModuleSymbols:
    """The names a module binds at its top level by assignment or import, in source order."""
    bindings: dict[str, Binding] = {}
    for node in module.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bindings[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name):
                bindings[node.target.id] = node.value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = ImportRef(alias.name, 0)
                else:  # `import a.b` binds `a`
                    top = alias.name.split(".", 1)[0]
                    bindings[top] = ImportRef(top, 0)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    bindings[alias.asname or alias.name] = ImportRef(
                        node.module or "", node.level, alias.name
                    )
    return ModuleSymbols(path, bindings)


@dataclass
class Resolver:
    """Finds modules on the project's import roots and reads values from them.

    `roots` are searched in order for absolute imports, as sys.path would be. Every path
    looked at is remembered with its size and mtime (or None when absent) in `consulted`, so
    a cached result can be checked for staleness without reading anything again.
    """

    roots: Sequence[Path]
    max_bytes: int = 1_000_000
    consulted: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    _modules: dict[str, ModuleSymbols | str] = field(default_factory=dict)

    # --- values ----------------------------------------------------------------------------

    def value(self, expr: ast.expr, symbols: ModuleSymbols, depth: int = 0) -> object:
        """The literal `expr` stands for in `symbols`' module: a string, None, or a tuple of
        strings. Raises Unresolved."""
        if depth > _MAX_DEPTH:
            raise Unresolved("the names refer to each other in a loop")
        if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, str)):
            return expr.value
        if isinstance(expr, ast.Tuple | ast.List):
            items = []
            for element in expr.elts:
                item = self.value(element, symbols, depth + 1)
                if isinstance(item, tuple):
                    raise Unresolved("it nests a sequence inside a sequence")
                items.append(item)
            return tuple(items)
        if isinstance(expr, ast.Name):
            return self._name(expr.id, symbols, depth)
        if isinstance(expr, ast.Attribute):
            owner = self._module_of(expr.value, symbols, depth)
            return self._name(expr.attr, owner, depth + 1)
        raise Unresolved(f"it is {_describe(expr)}, which only running the file could evaluate")

    def _name(self, name: str, symbols: ModuleSymbols, depth: int) -> object:
        binding = symbols.bindings.get(name)
        where = os.path.basename(symbols.path)
        if binding is None:
            raise Unresolved(f"{where} assigns no value to {name} at its top level")
        if isinstance(binding, ImportRef):
            if binding.name is None:
                raise Unresolved(f"{name} is a module, not a value")
            return self._imported_name(binding, symbols, depth)
        return self.value(binding, symbols, depth + 1)

    def _imported_name(self, ref: ImportRef, symbols: ModuleSymbols, depth: int) -> object:
        assert ref.name is not None
        module = self.module(ref.module, ref.level, symbols.path)
        if ref.name in module.bindings:
            return self._name(ref.name, module, depth + 1)
        # `from package import submodule` where the value was wanted: not a value
        raise Unresolved(
            f"{os.path.basename(module.path)} assigns no value to {ref.name} at its top level"
        )

    def _module_of(self, expr: ast.expr, symbols: ModuleSymbols, depth: int) -> ModuleSymbols:
        """The module an expression such as `cli` or `app.constants` names."""
        if depth > _MAX_DEPTH:
            raise Unresolved("the imports refer to each other in a loop")
        if isinstance(expr, ast.Name):
            binding = symbols.bindings.get(expr.id)
            if not isinstance(binding, ImportRef):
                raise Unresolved(f"{expr.id} is not an imported module")
            if binding.name is None:
                return self.module(binding.module, binding.level, symbols.path)
            # `from package import module`
            return self.module(_join(binding.module, binding.name), binding.level, symbols.path)
        if isinstance(expr, ast.Attribute):
            parent = self._module_of(expr.value, symbols, depth + 1)
            if os.path.basename(parent.path) != "__init__.py":
                raise Unresolved(f"{os.path.basename(parent.path)} is a module, not a package")
            return self._first(
                _candidates(Path(parent.path).parent, expr.attr),
                f"module {expr.attr} was not found in {Path(parent.path).parent}",
            )
        raise Unresolved(f"it reads an attribute of {_describe(expr)}")

    # --- modules ---------------------------------------------------------------------------

    def module(self, dotted: str, level: int, importer: str) -> ModuleSymbols:
        """The symbols of a module of the project's own tree. Raises Unresolved."""
        if level:
            base = Path(importer).parent
            for _ in range(level - 1):
                base = base.parent
            return self._first(
                _candidates(base, dotted), f"module {'.' * level}{dotted} was not found in {base}"
            )
        looked = ", ".join(str(root) for root in self.roots) or "no folder"
        return self._first(
            [c for root in self.roots for c in _candidates(root, dotted)],
            f"module {dotted} was not found in the project; looked in {looked}",
        )

    def _first(self, candidates: Iterable[str], missing: str) -> ModuleSymbols:
        for candidate in candidates:
            if self._exists(candidate):
                return self._read(candidate)
        raise Unresolved(missing)

    def _exists(self, path: str) -> bool:
        try:
            stat = os.stat(path)
        except OSError:
            self.consulted[path] = None
            return False
        self.consulted[path] = (stat.st_size, stat.st_mtime_ns)
        return True

    def _read(self, path: str) -> ModuleSymbols:
        cached = self._modules.get(path)
        if cached is None:
            cached = self._parse(path)
            self._modules[path] = cached
        if isinstance(cached, str):
            raise Unresolved(cached)
        return cached

    def _parse(self, path: str) -> ModuleSymbols | str:
        name = os.path.basename(path)
        try:
            stat = os.stat(path)
            if not S_ISREG(stat.st_mode):
                return f"{name} is not a regular file"
            if stat.st_size > self.max_bytes:
                return f"{name} is larger than {self.max_bytes} bytes"
            return module_symbols(ast.parse(Path(path).read_bytes(), filename=path), path)
        except (SyntaxError, ValueError, OSError) as exc:
            return f"{name} cannot be parsed: {exc}"


def _join(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name


def _candidates(base: Path, dotted: str) -> list[str]:
    if not dotted:
        return [str(base / "__init__.py")]
    parts = dotted.split(".")
    stem = base.joinpath(*parts)
    return [f"{stem}.py", str(stem / "__init__.py")]


def _describe(expr: ast.expr) -> str:
    if isinstance(expr, ast.Call):
        return "a function call"
    if isinstance(expr, ast.BinOp | ast.BoolOp | ast.UnaryOp):
        return "an operation"
    if isinstance(expr, ast.Subscript):
        return "a subscript"
    if isinstance(expr, ast.Constant):
        return f"a {type(expr.value).__name__} constant"
    return "an expression"


def snapshot(paths: Iterable[str]) -> tuple[tuple[str, tuple[int, int] | None], ...]:
    """Each path with its size and mtime now (None when absent), to compare with `consulted`."""
    found = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append((path, None))
        else:
            found.append((path, (stat.st_size, stat.st_mtime_ns)))
    return tuple(found)
