"""Draw a graph layout as SVG on the server: no JavaScript framework, no CDN.

Every piece of text that comes from a revision file is escaped here; the result is safe to
insert into a page as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from environments.core.graph import LANE, MARGIN, ROW, Layout, Node
from environments.core.scripts import ScriptIndex

CHAR = 7  # approximate width of a character at the label font size


@dataclass
class Decorations:
    """What to show on top of the bare graph."""

    markers: Mapping[str, Sequence[str]] = field(default_factory=dict)  # env name -> its heads
    applied: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()
    selected_environment: str | None = None
    flagged: frozenset[str] = frozenset()  # revisions with destructive findings
    highlighted: str | None = None
    # revision id -> the attributes (already escaped) that make a node open its panel: the web
    # side decides how (htmx, a link); the drawing only places them
    node_attrs: Callable[[str], str] | None = None
    expand_url: Callable[[str], str] | None = None  # fold node id -> page URL that expands it


def _state(revision: str, deco: Decorations) -> str:
    if deco.selected_environment is None:
        return "plain"
    if revision in deco.pending:
        return "pending"
    if revision in deco.applied:
        return "applied"
    return "plain"


def render(layout: Layout, index: ScriptIndex, deco: Decorations) -> str:
    markers_at: dict[str, list[str]] = {}
    for environment, heads in deco.markers.items():
        for head in heads:
            markers_at.setdefault(head, []).append(environment)
    label_x = layout.width + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="revision-graph" '
        f'width="{label_x + 760}" height="{layout.height + ROW}" '
        f'data-nodes="{len(layout.nodes)}" role="img" aria-label="Revision graph">'
    ]
    for lane_index in range(layout.lanes):
        x = MARGIN + lane_index * LANE
        parts.append(
            f'<line class="lane-guide" x1="{x}" y1="0" x2="{x}" y2="{layout.height + ROW}"/>'
        )
    for edge in layout.edges:
        d = "M" + " L".join(f"{x} {y}" for x, y in edge.points)
        parts.append(
            f'<path class="edge edge-{edge.kind}" d="{d}" data-child="{escape(edge.child)}" '
            f'data-parent="{escape(edge.parent)}"/>'
        )
    for node in layout.nodes:
        parts.append(_node(node, index, deco, markers_at.get(node.id, []), label_x))
    parts.append("</svg>")
    return "".join(parts)


def _node(
    node: Node, index: ScriptIndex, deco: Decorations, markers: list[str], label_x: int
) -> str:
    y = node.y
    if node.is_fold:
        count = len(node.folded)
        states = {_state(rev, deco) for rev in node.folded}
        state = states.pop() if len(states) == 1 else "mixed"
        href = escape(deco.expand_url(node.id)) if deco.expand_url else "#"
        return (
            f'<g class="node fold {state}" id="{escape(node.id.replace(":", "-"))}" '
            f'data-fold="{escape(node.id)}" data-count="{count}">'
            f"<title>{count} revisions folded: {escape(node.folded[0])} … "
            f"{escape(node.folded[-1])}</title>"
            f'<rect x="{node.x - 5}" y="{y - 9}" width="10" height="18" rx="5"/>'
            f'<a href="{href}"><text x="{label_x}" y="{y + 4}" class="fold-label">'
            f"… {count} revisions … (expand)</text></a></g>"
        )
    revision = index.revisions[node.id]
    state = _state(node.id, deco)
    classes = ["node", state]
    if node.id in deco.flagged:
        classes.append("flagged")
    if node.id == deco.highlighted:
        classes.append("highlighted")
    attrs = deco.node_attrs(node.id) if deco.node_attrs else ""
    out = [
        f'<g class="{" ".join(classes)}" id="rev-{escape(node.id)}" '
        f'data-revision="{escape(node.id)}"'
        f' data-state="{state}"{attrs}>',
        f"<title>{escape(node.id)}: {escape(revision.message)}</title>",
        f'<circle cx="{node.x}" cy="{y}" r="6"/>',
    ]
    x = label_x
    for environment in sorted(markers):
        width = len(environment) * CHAR + 12
        current = " current-env" if environment == deco.selected_environment else ""
        out.append(
            f'<g class="marker{current}" data-environment="{escape(environment)}">'
            f'<rect x="{x}" y="{y - 9}" width="{width}" height="18" rx="9"/>'
            f'<text x="{x + 6}" y="{y + 4}">{escape(environment)}</text></g>'
        )
        x += width + 4
    if node.id in deco.flagged:
        out.append(f'<text x="{x}" y="{y + 4}" class="flag">⚠</text>')
        x += 16
    out.append(f'<text x="{x}" y="{y + 4}" class="rev-id">{escape(node.id[:12])}</text>')
    x += 12 * CHAR + 8
    for label in revision.branch_labels:
        width = len(label) * CHAR + 10
        out.append(
            f'<g class="branch-label">'
            f'<rect x="{x}" y="{y - 8}" width="{width}" height="16" rx="3"/>'
            f'<text x="{x + 5}" y="{y + 4}">{escape(label)}</text></g>'
        )
        x += width + 4
    message = revision.message if len(revision.message) <= 90 else revision.message[:89] + "…"
    out.append(f'<text x="{x}" y="{y + 4}" class="message">{escape(message)}</text>')
    out.append("</g>")
    return "".join(out)
