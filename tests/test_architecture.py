"""The house rules, checked on the source (issue #17): no import circle among the app's modules
and no import hidden in a function to dodge one; every module imports on its own; every change
of a job's status goes through `environments/transitions.py`."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("environments", "dashboard")


def app_modules() -> dict[str, Path]:
    """Every module of the app by dotted name (migrations aside)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = app_modules()


def imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The app modules an import statement of `module` loads."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")[: -node.level] if node.level else []
            base = ".".join([*package, base] if base else package)
        # `from package import x` runs the package (and loads x when x is a submodule)
        bases = [base] + [f"{base}.{alias.name}" for alias in node.names]
    for name in bases:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            names.add(name)
    return names


def module_level(tree: ast.Module):
    """The module's own statements, into `if`/`try` blocks (`if TYPE_CHECKING:` counts: a
    circle a type checker walks is still a circle), not into functions or classes."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If | ast.Try):
            pending += [*node.body, *node.orelse, *getattr(node, "handlers", ())]
            pending += getattr(node, "finalbody", [])
        elif isinstance(node, ast.ExceptHandler):
            pending += node.body


# Modules imported inside a function on purpose, with the reason; such an import is counted in
# the import graph like any other, so a circle through one is still a circle.
LATE = {
    "environments.core.scripts": "Alembic's revision map, imported when a project's scripts are "
    "first read (`Project.load_scripts`): every process loads the models, and the CI gate's "
    "quick answer never reads the scripts",
}


def late_imports(module: str, tree: ast.Module) -> list[tuple[int, str, set[str]]]:
    """Each import inside a function of `module`: line, function, the app modules it loads."""
    found = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom) and imported(node, module):
                    found.append((node.lineno, function.name, imported(node, module)))
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        graph[module] = {
            target
            for node in module_level(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for target in imported(node, module)
        }
        for _, _, targets in late_imports(module, tree):
            graph[module] |= targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk (each reported once, from where it closes)."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_apps_modules_import_one_another_without_a_circle():
    graph = import_graph()

    assert graph["environments.pages.jobs_page"] >= {
        "environments.planning",
        "environments.transitions",
    }
    assert cycles(graph) == []


def test_the_graph_counts_a_package_import_and_a_type_checking_import():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from environments.core.backups import files\n"
        "if TYPE_CHECKING:\n    from environments.models.reads import CurrentState\n"
    )
    found = {
        target
        for node in module_level(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in imported(node, "environments.somewhere")
    }
    assert found == {
        "environments.core.backups",
        "environments.core.backups.files",
        "environments.models.reads",
    }


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_another_of_the_app_inside_a_function_but_the_late_ones():
    hidden = []
    for module, path in MODULES.items():
        for line, function, targets in late_imports(module, ast.parse(path.read_text())):
            # `from environments.core import scripts` also names the package, which is loaded
            if not targets - {name.rpartition(".")[0] for name in LATE} <= set(LATE):
                hidden.append(f"{path.relative_to(REPO)}:{line} in {function}()")
    assert hidden == []


def test_the_import_graph_counts_a_late_import():
    graph = import_graph()

    assert "environments.core.scripts" in graph["environments.models.registry"]


def test_every_module_imports_on_its_own():
    def import_alone(module: str) -> tuple[str, str]:
        code = (
            "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
            f"'dashboard.settings'); django.setup(); import {module}"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        return module, result.stderr.strip().splitlines()[-1] if result.returncode else ""

    with ThreadPoolExecutor(max_workers=6) as pool:
        failures = [(m, e) for m, e in pool.map(import_alone, sorted(MODULES)) if e]
    assert failures == []


# --- a job's status changes in one place ----------------------------------------------------


def _root_name(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def status_writes(tree: ast.AST) -> list[int]:
    """Lines that write a Job's status: `Job.objects….update/create(status=…)`, `job.status =`,
    `setattr(job, "status", …)` and saves naming the status field."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            writes = node.func.attr in {"update", "create", "get_or_create", "update_or_create"}
            named = any(k.arg in {"status", "defaults"} for k in node.keywords)
            if writes and named and _root_name(node.func) == "Job":
                lines.append(node.lineno)
            if node.func.attr == "save" and "job" in _root_name(node.func).lower():
                for keyword in node.keywords:
                    if keyword.arg == "update_fields" and "status" in ast.unparse(keyword.value):
                        lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for element in ast.walk(target):
                    if (
                        isinstance(element, ast.Attribute)
                        and element.attr == "status"
                        and "job" in ast.unparse(element.value).lower()
                    ):
                        lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "status"
        ):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_every_job_status_change_goes_through_the_transition_module():
    outside = {
        f"{path.relative_to(REPO)}:{line}"
        for module, path in MODULES.items()
        if module != "environments.transitions"
        for line in status_writes(ast.parse(path.read_text()))
    }
    inside = status_writes(ast.parse(MODULES["environments.transitions"].read_text()))

    assert outside == set()
    assert inside  # the check sees the writes where they are


def test_the_status_write_finder_sees_each_way_of_writing_it():
    source = """
Job.objects.filter(pk=1).update(status="queued")
Job.objects.create(environment=e, status="running")
job.status = "failed"
locked.job.status = "x"
setattr(job, "status", "x")
job.save(update_fields=["status"])
Job.objects.filter(status="queued").count()
snapshot.status = "current"
"""
    assert status_writes(ast.parse(source)) == [2, 3, 4, 5, 6, 7]


def test_no_module_of_the_app_is_over_450_lines():
    """One concept per module: a module that grows past this holds two (migrations aside)."""
    long = {
        f"{path.relative_to(REPO)}: {count} lines"
        for path in MODULES.values()
        if (count := len(path.read_text().splitlines())) > 450
    }
    assert long == set()
