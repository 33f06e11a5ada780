"""The revision graph: Alembic's graph drawn faithfully, readable when long, per environment."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from django.urls import reverse

from environments.core import graph, script_config, scripts
from environments.core.graph import Layout
from examples.inventory import revisions as inv
from examples.synthetic import write_history
from tests.conftest import alembic, read_all, three_heads_history, write_revision


def _index(ini: Path) -> scripts.ScriptIndex:
    return scripts.load_index(script_config.config_from_ini(ini))


def _distance(point: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> float:
    (px, py), (ax, ay), (bx, by) = point, a, b
    dx, dy = bx - ax, by - ay
    if dx == dy == 0:
        return math.dist(point, a)
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.dist(point, (ax + t * dx, ay + t * dy))


def assert_well_drawn(layout: Layout, index: scripts.ScriptIndex, *, folded: bool) -> None:
    """Every edge of the RevisionMap exactly once; no edge through a node it does not join."""
    parent_edges = [(e.child, e.parent) for e in layout.edges if e.kind == "parent"]
    dependency_edges = [(e.child, e.parent) for e in layout.edges if e.kind == "depends_on"]
    assert len(parent_edges) == len(set(parent_edges)), "an edge is drawn twice"
    if not folded:
        expected = {
            (rev.revision, parent)
            for rev in index.revisions.values()
            for parent in rev.down_revisions
        }
        assert set(parent_edges) == expected
        expected_deps = {
            (rev.revision, dep) for rev in index.revisions.values() for dep in rev.dependencies
        }
        assert sorted(dependency_edges) == sorted(expected_deps)
    for edge in layout.edges:
        child, parent = layout.by_id[edge.child], layout.by_id[edge.parent]
        if edge.kind == "parent":
            assert child.row < parent.row, "a child is drawn below its parent"
        assert edge.points[0] == (child.x, child.y) and edge.points[-1] == (parent.x, parent.y)
        for node in layout.nodes:
            if node.id in (edge.child, edge.parent):
                continue
            for a, b in zip(edge.points, edge.points[1:], strict=False):
                assert _distance((node.x, node.y), a, b) > 6, (
                    f"edge {edge.child}->{edge.parent} passes through {node.id}"
                )
    rows = [node.row for node in layout.nodes]
    assert rows == list(range(len(layout.nodes))), "one node per row"


def test_the_sample_project_is_drawn_with_every_edge_exactly_once(inventory):
    index = _index(inventory)

    layout = graph.layout(index, fold_runs_longer_than=10**6)

    assert_well_drawn(layout, index, folded=False)
    merge = [e.parent for e in layout.edges if e.child == inv.MERGE_REVISION]
    assert sorted(merge) == sorted([inv.ADD_ORDERS_STATUS, inv.CREATE_ORDER_REPORTS])
    assert layout.nodes[0].id == inv.HEAD
    assert layout.nodes[-1].id == inv.CREATE_USERS
    depends = [e for e in layout.edges if e.kind == "depends_on"]
    assert [(e.child, e.parent) for e in depends] == [(inv.DEPENDS_ON_REVISION, inv.CREATE_ORDERS)]


@pytest.mark.parametrize("seed", range(6))
def test_generated_histories_are_drawn_faithfully(tmp_path, seed):
    rng = random.Random(seed)
    history = write_history(
        tmp_path / "gen",
        rng.randint(80, 240),
        seed=seed,
        branch_every=rng.randint(6, 20),
        branch_length=rng.randint(2, 6),
        heads=rng.randint(1, 4),
        depends_on_every=rng.randint(5, 15),
    )
    index = _index(history.alembic_ini)

    unfolded = graph.layout(index, fold_runs_longer_than=10**6)
    folded = graph.layout(index, fold_runs_longer_than=3)

    assert_well_drawn(unfolded, index, folded=False)
    assert_well_drawn(folded, index, folded=True)
    assert {n.id for n in unfolded.nodes} == set(index.revisions)
    assert unfolded.nodes[0].id in index.heads
    drawn_heads = {
        n.id
        for n in unfolded.nodes
        if not any(e.parent == n.id for e in unfolded.edges if e.kind == "parent")
    }
    assert drawn_heads == set(index.heads)


def test_three_heads_a_merge_of_merges_and_cross_branch_depends_on(tmp_path):
    ini = three_heads_history(tmp_path)
    index = _index(ini)

    layout = graph.layout(index, fold_runs_longer_than=10**6)

    assert_well_drawn(layout, index, folded=False)
    assert sorted(index.heads) == ["h10000000000", "h20000000000", "h30000000000"]
    assert {n.id for n in layout.nodes[:3]} == set(index.heads)
    assert len({n.lane for n in layout.nodes[:3]}) == 3, "concurrent heads get their own lanes"
    merge_of_merges = sorted(e.parent for e in layout.edges if e.child == "f10000000000")
    assert merge_of_merges == ["d10000000000", "e10000000000"]


def test_folding_keeps_markers_branch_points_merges_and_pending_visible(tmp_path):
    history = write_history(tmp_path / "gen", 2000, seed=2, branch_every=40, heads=2)
    index = _index(history.alembic_ini)
    rng = random.Random(4)
    markers = {f"env{i}": (rng.choice(history.revisions),) for i in range(5)}
    markers["env0"] = (history.revisions[-30],)  # a realistic gap: 30-odd revisions behind
    pending = index.pending(markers["env0"])

    layout = graph.layout(index, markers=markers, pending=pending)

    visible = {node.id for node in layout.nodes if not node.is_fold}
    assert len(layout.nodes) < 2000 / 2, "long linear runs fold"
    for heads in markers.values():
        assert set(heads) <= visible
    assert set(history.branch_points) <= visible
    assert set(history.merges) <= visible
    assert set(index.heads) | set(index.bases) <= visible
    assert set(pending) <= visible
    hidden = [rev for node in layout.nodes for rev in node.folded]
    assert len(hidden) + len(visible) == 2000
    assert_well_drawn(layout, index, folded=True)


def test_expanding_a_fold_shows_its_revisions(tmp_path):
    history = write_history(tmp_path / "gen", 200, seed=2, branch_every=60)
    index = _index(history.alembic_ini)
    fold = next(node for node in graph.layout(index).nodes if node.is_fold)

    expanded = graph.layout(index, expand=[fold.folded[0]])

    assert set(fold.folded) <= {node.id for node in expanded.nodes}


# --- the page, the panel, the API ----------------------------------------------------------

pytestmark_db = pytest.mark.django_db


@pytest.mark.django_db
def test_the_graph_page_marks_prods_six_pending_revisions_hollow(client_alice, demo_project):
    html = client_alice.get(reverse("project_graph", args=["inventory"]), {"env": "prod"}).content
    html = html.decode()

    pending = [
        rev for rev in inv.ALL_REVISIONS if f'data-revision="{rev}" data-state="pending"' in html
    ]
    applied = [
        rev for rev in inv.ALL_REVISIONS if f'data-revision="{rev}" data-state="applied"' in html
    ]
    assert pending == inv.ALL_REVISIONS[inv.ALL_REVISIONS.index(inv.PROD_TARGET) + 1 :]
    assert len(applied) == 8
    for name in ("dev", "staging", "prod"):
        assert f'data-environment="{name}"' in html
    assert f'class="node pending flagged" id="rev-{inv.DROP_COLUMN_REVISION}"' in html


@pytest.mark.django_db
def test_an_environment_on_two_heads_shows_two_markers(
    client_alice, inventory, make_project, sqlite_url
):
    url = sqlite_url()
    alembic(inventory, url, "upgrade", inv.CREATE_ORDERS)
    alembic(inventory, url, "upgrade", inv.CREATE_REPORT_RUNS)  # a second branch: two rows
    read_all(make_project(inventory, {"qa": url}))

    html = client_alice.get(reverse("project_graph", args=["inventory"])).content.decode()

    assert html.count('data-environment="qa"') == 1 + 2  # the picker link and two markers


@pytest.mark.django_db
def test_unknown_revisions_are_listed_apart_with_a_warning(client_alice, demo_project):
    import sqlite3

    prod = demo_project.environments.get(slug="prod")
    with sqlite3.connect(prod.get_url().removeprefix("sqlite:///")) as db:
        db.execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")
    read_all(demo_project)

    html = client_alice.get(reverse("project_graph", args=["inventory"]), {"env": "prod"}).content
    html = html.decode()

    assert "prod holds 1 revision the scripts do not have" in html
    assert "deadbeef0000" in html


@pytest.mark.django_db
def test_a_malicious_message_is_escaped_in_the_svg_and_the_panel(
    client_alice, inventory, make_project
):
    versions = inventory.parent / "migrations" / "versions"
    write_revision(versions, "evil00000001", inv.HEAD, message="</text><script>alert(1)</script>")
    make_project(inventory)

    page = client_alice.get(reverse("project_graph", args=["inventory"])).content.decode()
    panel = client_alice.get(
        reverse("revision_panel", args=["inventory", "evil00000001"]),
        headers={"HX-Request": "true"},
    ).content.decode()

    for html in (page, panel):
        assert "<script>alert(1)" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_the_panel_shows_the_drop_column_warning_and_the_code(client_alice, demo_project):
    html = client_alice.get(
        reverse("revision_panel", args=["inventory", inv.DROP_COLUMN_REVISION]),
        headers={"HX-Request": "true"},
    ).content.decode()

    assert "<html" not in html
    assert "Destructive" in html
    assert "drops column products.legacy_flag" in html
    assert "upgrade()" in html and "downgrade()" in html
    assert "drop_column" in html
    assert "Pending in</dt><dd>staging" not in html
    assert "prod" in html  # pending in prod


@pytest.mark.django_db
def test_find_jumps_to_a_revision_by_id_prefix_or_message_words(client_alice, demo_project):
    by_id = client_alice.get(
        reverse("project_graph", args=["inventory"]), {"q": inv.CREATE_SHIPMENTS[:5]}
    )
    by_words = client_alice.get(reverse("project_graph", args=["inventory"]), {"q": "legacy drop"})
    nothing = client_alice.get(reverse("project_graph", args=["inventory"]), {"q": "zebra"})

    assert f'highlighted" id="rev-{inv.CREATE_SHIPMENTS}"' in by_id.content.decode()
    assert f'highlighted" id="rev-{inv.DROP_COLUMN_REVISION}"' in by_words.content.decode()
    assert "No revision id starts with" in nothing.content.decode()


@pytest.mark.django_db
def test_the_api_graph_matches_the_revision_map(client_alice, tmp_path, make_project, sqlite_url):
    ini = three_heads_history(tmp_path)
    url = sqlite_url()
    make_project(ini, {"dev": url})
    index = _index(ini)

    data = json.loads(
        client_alice.get(reverse("api_graph", args=["inventory"]), {"env": "dev"}).content
    )

    assert sorted(data["heads"]) == sorted(index.revision_map.heads)
    assert sorted(data["bases"]) == sorted(index.revision_map.bases)
    nodes = {node["id"]: node for node in data["nodes"]}
    assert set(nodes) == set(index.revisions)
    for revision in index.revision_map._revision_map.values():
        if revision is None:
            continue
        node = nodes[revision.revision]
        assert sorted(node["parents"]) == sorted(revision._versioned_down_revisions)
        assert sorted(node["depends_on"]) == sorted(revision._resolved_dependencies)
        assert sorted(node["children"]) == sorted(revision.nextrev)
    kinds = {(e["from"], e["to"]): e["kind"] for e in data["edges"]}
    assert kinds[("c20000000000", "b10000000000")] == "depends_on"
    assert kinds[("f10000000000", "d10000000000")] == "parent"
    assert len(kinds) == len(data["edges"])
