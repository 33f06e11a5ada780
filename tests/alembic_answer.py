"""Alembic's own answer about a script directory, printed as JSON: run as a separate process.

    python tests/alembic_answer.py path/to/alembic.ini [HEADS ...]

Alembic imports every revision file (and, through `prepend_sys_path`, the project's own
modules), which is why this runs in a child process: the test process must not import the
projects it reads. Each HEADS argument is a comma-separated set of database heads ("" for an
empty version table); for each, the revisions `alembic upgrade heads` would apply, in order.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

from alembic.config import Config
from alembic.script import ScriptDirectory


def answer(ini: str, starts: list[str]) -> dict[str, object]:
    os.chdir(os.path.dirname(os.path.abspath(ini)))  # where alembic runs
    found: dict[str, object] = {"warnings": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            directory = ScriptDirectory.from_config(Config(ini))
            revision_map = directory.revision_map
            found["heads"] = sorted(revision_map.heads)
            found["bases"] = sorted(revision_map.bases)
            edges, labels = [], {}
            for node in revision_map._revision_map.values():
                if node is None or node.revision in labels:
                    continue
                labels[node.revision] = sorted(node._orig_branch_labels)
                edges += [
                    [node.revision, parent, "parent"] for parent in node._versioned_down_revisions
                ]
                edges += [[node.revision, dep, "depends_on"] for dep in node._resolved_dependencies]
            found["edges"] = sorted(edges)
            found["labels"] = labels
        except Exception as exc:  # Alembic's refusal is the answer
            found["error"] = f"{type(exc).__name__}: {exc}"
            return found
        pending: dict[str, object] = {}
        for start in starts:
            current = tuple(part for part in start.split(",") if part)
            try:
                steps = revision_map.iterate_revisions("heads", current, implicit_base=True)
                pending[start] = [step.revision for step in reversed(list(steps))]
            except Exception as exc:
                pending[start] = {"error": str(exc)}
        found["pending"] = pending
    found["warnings"] = [str(warning.message) for warning in caught]
    return found


if __name__ == "__main__":
    print(json.dumps(answer(sys.argv[1], sys.argv[2:])))
