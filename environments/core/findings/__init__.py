"""What a revision file will do to a database, read from its source without running it.

A reviewer approving a migration needs to see, before anything runs, which steps lose data
(dropped tables and columns, type changes, DELETE/UPDATE/DROP/TRUNCATE statements), which move
data rather than schema, and whether `alembic downgrade` through the revision can undo it. Like
`scripts.py`, this only parses the file with `ast`: revision files import the application's own
modules, and importing them here would run foreign code in the web process.
"""

from __future__ import annotations

from environments.core.findings.downgrade import irreversible_downgrade
from environments.core.findings.kinds import (
    DATA_MIGRATION,
    DESTRUCTIVE,
    IRREVERSIBLE_DOWNGRADE,
    Finding,
    Touch,
)
from environments.core.findings.source import (
    FUNCTIONS,
    FunctionSource,
    ModuleContext,
    function_sources,
    parse,
)
from environments.core.findings.walk import Scope

__all__ = [
    "DATA_MIGRATION",
    "DESTRUCTIVE",
    "IRREVERSIBLE_DOWNGRADE",
    "Finding",
    "FunctionSource",
    "Touch",
    "analyze",
    "function_sources",
    "touches",
]


def analyze(source: str | bytes) -> list[Finding]:
    """Findings of a revision file, upgrade's first, each function's in line order.

    Raises ValueError with a readable reason when the source cannot be parsed.
    """
    _, module = parse(source)
    context = ModuleContext(module)
    findings: list[Finding] = []
    for name in FUNCTIONS:
        node = context.functions.get(name)
        if node is not None:
            findings.extend(Scope(context, name, node).run())
    findings.extend(irreversible_downgrade(context))
    order = {name: index for index, name in enumerate(FUNCTIONS)}
    return sorted(findings, key=lambda finding: (order[finding.function], finding.line))


def touches(source: str | bytes) -> list[Touch]:
    """The tables and columns each function of a revision file creates, alters or drops, where
    the source names them literally (a name computed at run time is left out). Raises
    ValueError with a readable reason when the source cannot be parsed."""
    _, module = parse(source)
    context = ModuleContext(module)
    found: list[Touch] = []
    for name in FUNCTIONS:
        node = context.functions.get(name)
        if node is not None:
            scope = Scope(context, name, node)
            scope.run()
            found.extend(scope.touches)
    return found
