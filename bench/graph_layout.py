"""Issue #3: layout plus SVG for the 2,000-revision graph, against `alembic history`."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config

from bench.stats import Samples, repeat
from environments.core import findings, graph, script_config, scripts, svg
from examples.synthetic import SyntheticHistory


@dataclass(frozen=True)
class GraphFigures:
    folded: Samples
    unfolded: Samples
    folded_bytes: int
    unfolded_bytes: int
    folded_nodes: int
    history_inprocess: Samples
    history_cli: Samples


def _flagged(index: scripts.ScriptIndex) -> frozenset[str]:
    """What the page marks ⚠, from findings computed once (the page caches them too)."""
    flagged = set()
    for revision in index.revisions.values():
        found = findings.analyze(revision.path.read_bytes())
        if any(f.function == "upgrade" and f.severity == "danger" for f in found):
            flagged.add(revision.revision)
    return frozenset(flagged)


def measure(history: SyntheticHistory) -> GraphFigures:
    index = scripts.load_index(script_config.config_from_ini(history.alembic_ini))
    revisions = history.revisions
    markers = {"dev": (revisions[-1],), "staging": (revisions[-31],), "prod": (revisions[-201],)}
    pending = index.pending(markers["prod"])
    applied = frozenset(index.applied(markers["prod"]))
    flagged = _flagged(index)

    def draw(fold: int) -> str:
        layout = graph.layout(index, markers=markers, pending=pending, fold_runs_longer_than=fold)
        deco = svg.Decorations(
            markers=markers,
            applied=applied,
            pending=frozenset(pending),
            selected_environment="prod",
            flagged=flagged,
            node_attrs=lambda rev: f' hx-get="/projects/bench/revisions/{rev}" role="button"',
            expand_url=lambda fold_id: f"/projects/bench/graph?expand={fold_id}",
        )
        return svg.render(layout, index, deco)

    folded_svg, unfolded_svg = draw(4), draw(10**9)
    folded_nodes = folded_svg.count('class="node ')
    folded = repeat(lambda: draw(4), count=20, budget=30.0)
    unfolded = repeat(lambda: draw(10**9), count=10, budget=30.0)

    versions = history.directory / "migrations" / "versions"

    def history_inprocess() -> None:
        shutil.rmtree(versions / "__pycache__", ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()):
            command.history(Config(str(history.alembic_ini)))

    def history_cli() -> None:
        shutil.rmtree(versions / "__pycache__", ignore_errors=True)
        subprocess.run(
            [sys.executable, "-B", "-m", "alembic", "-c", str(history.alembic_ini), "history"],
            cwd=Path(history.alembic_ini).parent,
            env={"DATABASE_URL": "sqlite://", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=True,
            timeout=120,
        )

    return GraphFigures(
        folded=folded,
        unfolded=unfolded,
        folded_bytes=len(folded_svg.encode()),
        unfolded_bytes=len(unfolded_svg.encode()),
        folded_nodes=folded_nodes,
        history_inprocess=repeat(history_inprocess, count=3, budget=60.0),
        history_cli=repeat(history_cli, count=3, budget=60.0),
    )
