"""The graph page's view-model (and the JSON API's): a project's revision graph with every
environment's position on it, and the panel of one revision. The layout and the SVG are the
core's (`core/graph.py`, `core/svg.py`); the htmx attributes that open a panel are added here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils.html import format_html

from environments import revision_analysis, source_html
from environments.core import findings as core_findings
from environments.core import graph as core_graph
from environments.core import svg
from environments.core.heads import HeadsVerdict
from environments.core.revision_headers import RevisionFile
from environments.core.scripts import ScriptIndex
from environments.models import CurrentState, Environment, Project

_SHOWN_CHARACTERS = 60_000  # of a function's source in the revision panel


def search(index: ScriptIndex, query: str) -> list[str]:
    """Revisions whose id starts with the query, or whose message has every word of it."""
    query = query.strip().lower()
    if not query:
        return []
    by_id = sorted(rev for rev in index.revisions if rev.lower().startswith(query))
    if by_id:
        return by_id
    words = query.split()
    return sorted(
        rev.revision
        for rev in index.revisions.values()
        if all(word in rev.message.lower() for word in words)
    )


@dataclass
class GraphView:
    project: Project
    index: ScriptIndex | None
    index_error: str | None
    environments: list[Environment]
    states: dict[int, CurrentState]
    selected: Environment | None = None
    layout: core_graph.Layout | None = None
    svg: str = ""
    matches: list[str] = field(default_factory=list)
    query: str = ""
    unknown: list[str] = field(default_factory=list)
    markers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    applied: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()
    flagged: frozenset[str] = frozenset()
    heads: HeadsVerdict | None = None  # whether several heads are intended

    @property
    def selected_state(self) -> CurrentState | None:
        return self.states.get(self.selected.pk) if self.selected else None


def _panel_opener(node_url: Callable[[str], str]) -> Callable[[str], str]:
    """A node's attributes on the page: htmx loads its panel on a click, Enter or Space."""

    def attrs(revision: str) -> str:
        return format_html(
            ' hx-get="{}" hx-target="#panel" hx-swap="innerHTML" tabindex="0" role="button"'
            " hx-trigger=\"click, keydown[key=='Enter'||key==' ']\"",
            node_url(revision),
        )

    return attrs


def graph_build(
    *,
    project: Project,
    environment_slug: str | None = None,
    query: str = "",
    expand: list[str] | None = None,
    node_url: Callable[[str], str] | None = None,
    expand_url=None,
) -> GraphView:
    """Lay out the project's graph with markers, the chosen environment's states and a search."""
    index, error = project.load_scripts()
    environments = list(project.environments.all())
    states = CurrentState.objects.of(environments)
    view = GraphView(project, index, error, environments, states, query=query)
    if index is None or index.revision_map is None:
        view.index_error = error or (index.fatal if index else None)
        return view
    view.heads = project.heads_verdict(index)
    pending_anywhere: set[str] = set()
    for environment in environments:
        state = states.get(environment.pk)
        if state is None:
            continue
        known = tuple(head for head in state.heads if index.knows(head))
        if known:
            view.markers[environment.name] = known
        pending_anywhere.update(state.pending)
        if environment.slug == environment_slug:
            view.selected = environment
            view.unknown = list(state.unknown)
            view.pending = frozenset(state.pending)
            view.applied = index.holds(known)
    view.matches = search(index, query)
    view.flagged = revision_analysis.destructive_revisions(index)
    view.layout = core_graph.layout(
        index,
        markers=view.markers,
        pending=pending_anywhere,
        keep=view.matches[:1],
        expand=expand or [],
    )
    view.svg = svg.render(
        view.layout,
        index,
        svg.Decorations(
            markers=view.markers,
            applied=view.applied,
            pending=view.pending,
            selected_environment=view.selected.name if view.selected else None,
            flagged=view.flagged,
            highlighted=view.matches[0] if view.matches else None,
            node_attrs=_panel_opener(node_url) if node_url else None,
            expand_url=expand_url,
        ),
    )
    return view


def graph_json(view: GraphView) -> dict[str, object]:
    """The graph as data: nodes, edges with their kind, environment markers, findings."""
    index, layout = view.index, view.layout
    if index is None or layout is None:
        return {"project": view.project.slug, "error": view.index_error}
    children: dict[str, list[str]] = {}
    for revision in index.revisions.values():
        for parent in revision.down_revisions:
            children.setdefault(parent, []).append(revision.revision)
    nodes = []
    for node in layout.nodes:
        if node.is_fold:
            nodes.append(
                {
                    "id": node.id,
                    "kind": "fold",
                    "row": node.row,
                    "lane": node.lane,
                    "revisions": list(node.folded),
                }
            )
            continue
        revision = index.revisions[node.id]
        found = revision_analysis.revision_findings(revision)
        nodes.append(
            {
                "id": node.id,
                "kind": "revision",
                "row": node.row,
                "lane": node.lane,
                "message": revision.message,
                "create_date": revision.create_date,
                "parents": list(revision.down_revisions),
                "children": sorted(children.get(node.id, [])),
                "depends_on": list(index.dependencies_of(node.id)),
                "depends_on_declared": list(revision.dependencies),
                "branch_labels": list(revision.branch_labels),
                "is_head": node.id in index.heads,
                "is_base": node.id in index.bases,
                "environments": sorted(e for e, heads in view.markers.items() if node.id in heads),
                "state": (
                    "pending"
                    if node.id in view.pending
                    else "applied"
                    if node.id in view.applied
                    else None
                ),
                "findings": [revision_analysis.finding_dict(f) for f in found]
                if isinstance(found, list)
                else [],
            }
        )
    return {
        "project": view.project.slug,
        "environment": view.selected.slug if view.selected else None,
        "heads": list(index.heads),
        "heads_expected": view.heads.expected if view.heads else None,
        "heads_reason": view.heads.sentence if view.heads else "",
        "bases": list(index.bases),
        "nodes": nodes,
        "edges": [
            {"from": edge.child, "to": edge.parent, "kind": edge.kind} for edge in layout.edges
        ],
        "markers": [
            {"environment": env, "revision": head}
            for env, heads in sorted(view.markers.items())
            for head in heads
        ],
        "unknown": view.unknown,
    }


@dataclass
class RevisionPanel:
    revision: RevisionFile
    children: list[str]
    at_revision: list[str]  # environments whose heads are this revision
    applied_in: list[str]  # environments that have applied it
    pending_in: list[str]
    findings: list[core_findings.Finding]
    findings_error: str | None
    upgrade_html: str
    downgrade_html: str
    path: str
    is_head: bool
    is_base: bool


def revision_panel_build(*, project: Project, revision_id: str) -> RevisionPanel | None:
    """Everything the panel shows about one revision, read statically from its file."""
    index, _ = project.load_scripts()
    if index is None or index.revision_map is None:
        return None
    revision = index.revisions.get(revision_id)
    if revision is None:
        return None
    children = sorted(
        rev.revision for rev in index.revisions.values() if revision_id in rev.down_revisions
    )
    at_revision, applied_in, pending_in = [], [], []
    environments = list(project.environments.all())
    states = CurrentState.objects.of(environments)
    for environment in environments:
        state = states.get(environment.pk)
        if state is None or state.unknown:
            continue
        if revision_id in state.heads:
            at_revision.append(environment.name)
        if revision_id in state.pending:
            pending_in.append(environment.name)
        elif state.heads and revision_id in index.holds(state.heads):
            applied_in.append(environment.name)
    found = revision_analysis.revision_findings(revision)
    try:
        sources = (
            core_findings.function_sources(revision.path.read_bytes())
            if isinstance(found, list)  # not for a file too large to analyse
            else {}
        )
    except (OSError, ValueError):
        sources = {}

    def highlighted(name: str) -> str:
        function = sources.get(name)
        if not function:
            return ""
        code = function.source
        if len(code) <= _SHOWN_CHARACTERS:
            return source_html.highlight(code)
        # highlighting costs about 3 s per MB: show the start, say what is left out
        shown = code[: code.rfind("\n", 0, _SHOWN_CHARACTERS) + 1]
        left = code.count("\n") - shown.count("\n")
        return source_html.highlight(shown) + format_html(
            '<p class="muted">… {} more lines, not shown here: open {} to read them.</p>',
            left,
            revision.path.name,
        )

    return RevisionPanel(
        revision=revision,
        children=children,
        at_revision=at_revision,
        applied_in=applied_in,
        pending_in=pending_in,
        findings=found if isinstance(found, list) else [],
        findings_error=found if isinstance(found, str) else None,
        upgrade_html=highlighted("upgrade"),
        downgrade_html=highlighted("downgrade"),
        path=index.shown_path(revision.filename),
        is_head=revision_id in index.heads,
        is_base=revision_id in index.bases,
    )
