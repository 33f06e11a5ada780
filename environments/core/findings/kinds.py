"""The vocabulary of findings: the kinds, a finding, and what a step touches."""

from __future__ import annotations

from dataclasses import dataclass

DESTRUCTIVE = "destructive"


IRREVERSIBLE_DOWNGRADE = "irreversible_downgrade"


DATA_MIGRATION = "data_migration"


@dataclass(frozen=True)
class Finding:
    """One step of a revision a reviewer should know about before it runs."""

    kind: str  # DESTRUCTIVE, IRREVERSIBLE_DOWNGRADE or DATA_MIGRATION
    operation: str  # the op method ("drop_column", "execute", ...), or "pass"/"raise"/"missing"
    function: str  # "upgrade" or "downgrade": the command that runs this step
    line: int  # 1-based line in the revision file
    detail: str  # one sentence for the page

    @property
    def severity(self) -> str:
        return "info" if self.kind == DATA_MIGRATION else "danger"


@dataclass(frozen=True)
class Touch:
    """A schema object a step of a revision creates, alters or drops, named as the source
    names it: `obj` is a table (`orders`) or a column (`orders.qty`); `what` says which."""

    function: str  # "upgrade" or "downgrade"
    action: str  # "creates", "alters" or "drops"
    what: str  # table, column, index, unique, fk, check, constraint
    obj: str
    line: int

    @property
    def table(self) -> str:
        return self.obj.split(".")[0] if self.what == "column" else self.obj
