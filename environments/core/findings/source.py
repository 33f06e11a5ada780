"""A revision file as source: parsed (never run), its module-level functions and their text,
the values its names hold, and how it imports `op`."""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

from environments.core.revision_headers import name_assignments

FUNCTIONS = ("upgrade", "downgrade")


@dataclass(frozen=True)
class FunctionSource:
    """The exact text of a module-level function of a revision file."""

    name: str
    source: str
    first_line: int
    last_line: int


def function_sources(source: str | bytes) -> dict[str, FunctionSource]:
    """The text of the module-level upgrade() and downgrade() a revision file defines."""
    text, module = parse(source)
    found: dict[str, FunctionSource] = {}
    for name, node in module_functions(module).items():
        if name not in FUNCTIONS:
            continue
        segment = ast.get_source_segment(text, node) or ""
        end = node.end_lineno if node.end_lineno is not None else node.lineno
        found[name] = FunctionSource(name, segment, node.lineno, end)
    return {name: found[name] for name in FUNCTIONS if name in found}


def parse(source: str | bytes) -> tuple[str, ast.Module]:
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


def module_functions(module: ast.Module) -> dict[str, ast.FunctionDef]:
    # A later def of the same name replaces the earlier one, as when Python runs the module.
    return {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}


def single_assignments(statements: Iterable[ast.AST]) -> dict[str, ast.expr]:
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


class ModuleContext:
    """What the whole file tells about names: how `op` is imported, and module-level values."""

    def __init__(self, module: ast.Module) -> None:
        self.functions = module_functions(module)
        self.assignments = single_assignments(module.body)
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


def argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == keyword:
            return item.value
    if position is not None and 0 <= position < len(call.args):
        argument = call.args[position]
        return None if isinstance(argument, ast.Starred) else argument
    return None


def called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None
