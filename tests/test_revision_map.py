"""The linear-time RevisionMap gives Alembic's answers: the same heads, bases, order, children,
normalised dependencies and errors as a stock `RevisionMap`, on random histories and broken
ones."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
from alembic.script.revision import Revision, RevisionMap

from environments.core import script_config, scripts
from environments.core.revision_map import LinearRevisionMap
from tests.conftest import three_heads_history


def random_history(seed: int, size: int, label_rate: float = 0.03) -> list[tuple]:
    """(id, down_revision, depends_on, branch_labels) rows of a random history: several
    roots, branches, merges of two and three parents, depends_on on ids, on branch labels and
    on ancestors already (which Alembic normalises away), `label_rate` of them labelled (one
    label or two)."""
    rng = random.Random(seed)
    rows: list[tuple] = []
    ids: list[str] = []
    labels: dict[str, str] = {}
    tips: list[str] = []
    for n in range(size):
        revision = f"r{seed}x{n:04d}"
        roll = rng.random()
        if not ids or roll < 0.03:
            down = None  # a new root
        elif roll < 0.15 and len(tips) > 1:
            down = tuple(rng.sample(tips, min(len(tips), rng.choice((2, 2, 3)))))
        elif roll < 0.35:
            down = rng.choice(ids[-30:])  # branch off something recent
        else:
            down = rng.choice(tips) if tips else ids[-1]
        depends = None
        if ids and rng.random() < 0.12:
            pool = ids + list(labels)
            depends = tuple(rng.sample(pool, min(len(pool), rng.choice((1, 1, 2)))))
        label = None
        if rng.random() < label_rate:
            label = (f"line{n}",) if rng.random() < 0.8 else (f"line{n}", f"also{n}")
            labels.update(dict.fromkeys(label, revision))
        parents = () if down is None else ((down,) if isinstance(down, str) else down)
        tips = [t for t in tips if t not in parents] + [revision]
        rows.append((revision, down, depends, label))
        ids.append(revision)
    return rows


def build(cls: type[RevisionMap], rows: list[tuple]) -> RevisionMap:
    nodes = [
        Revision(rev, down, dependencies=dep, branch_labels=label) for rev, down, dep, label in rows
    ]
    revision_map = cls(lambda: nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        revision_map._revision_map  # noqa: B018
    return revision_map


def view(revision_map: RevisionMap) -> dict:
    """Everything the map computes while it is built, in order where Alembic keeps order."""
    nodes = {
        key: (
            rev.revision,
            sorted(rev.nextrev),
            sorted(rev._all_nextrev),
            rev._resolved_dependencies,
            rev._normalized_resolved_dependencies,
            sorted(rev.branch_labels),
        )
        for key, rev in revision_map._revision_map.items()
        if rev is not None
    }
    return {
        "heads": revision_map.heads,
        "bases": revision_map.bases,
        "real_heads": revision_map._real_heads,
        "real_bases": revision_map._real_bases,
        # Revisions keep the files' order; Alembic adds branch labels from a set of Revision
        # objects, so their order differs from one build to the next even in Alembic.
        "keys": [
            key for key, rev in revision_map._revision_map.items() if rev and rev.revision == key
        ],
        "labels": sorted(
            key for key, rev in revision_map._revision_map.items() if rev and rev.revision != key
        ),
        "nodes": nodes,
        "walk": [r.revision for r in revision_map.iterate_revisions("heads", "base")],
    }


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_give_alembics_answers(seed):
    rows = random_history(seed, size=60 + seed * 7)
    shuffled = random.Random(seed).sample(rows, len(rows))  # files come in name order

    for order in (rows, shuffled):
        assert view(build(LinearRevisionMap, order)) == view(build(RevisionMap, order))


@pytest.mark.parametrize("seed", range(30))
def test_labelled_histories_give_alembics_branch_labels(seed):
    rows = random_history(1000 + seed, size=150 + seed * 11, label_rate=0.05 + seed * 0.005)
    assert sum(1 for row in rows if row[3]) >= 0.03 * len(rows)

    ours, theirs = view(build(LinearRevisionMap, rows)), view(build(RevisionMap, rows))

    assert ours == theirs


@pytest.mark.parametrize(
    "rows",
    [
        # a plain line above the label: its labels go down to the root
        [("a", None, None, None), ("b", "a", None, None), ("c", "b", None, ("x",))],
        # a branch point below the label stops them
        [
            ("a", None, None, None),
            ("b", "a", None, None),
            ("c", "a", None, None),
            ("d", "b", None, ("x",)),
        ],
        # a dependency on the labelled revision's parent makes it a branch point as well
        [
            ("a", None, None, None),
            ("b", "a", None, None),
            ("c", "b", None, ("x",)),
            ("z", None, "b", None),
        ],
        # above the label the line branches: nothing goes below it
        [
            ("a", None, None, None),
            ("b", "a", None, ("x",)),
            ("c", "b", None, None),
            ("d", "b", None, None),
        ],
        # a merge above the label stops the walk, and labelled branches merged carry both
        [
            ("a", None, None, None),
            ("b", "a", None, ("x",)),
            ("c", "a", None, ("y",)),
            ("m", ("b", "c"), None, None),
            ("n", "m", None, ("z",)),
        ],
    ],
    ids=["line", "branch below", "dependency below", "branch above", "merged labels"],
)
def test_each_rule_of_alembics_label_walk_is_kept(rows):
    assert view(build(LinearRevisionMap, rows)) == view(build(RevisionMap, rows))


def test_a_dependency_an_ancestor_already_has_is_normalised_away_as_alembic_does():
    rows = [
        ("a", None, None, None),
        ("b", "a", None, None),
        ("c", "b", "a", None),
        ("d", "c", ("a", "x"), None),  # c, an ancestor, depends on a already
        ("x", None, None, ("side",)),
        ("e", "d", "side", None),
    ]
    ours, theirs = build(LinearRevisionMap, rows), build(RevisionMap, rows)

    assert view(ours) == view(theirs)
    assert ours.get_revision("c")._normalized_resolved_dependencies == ("a",)
    assert ours.get_revision("d")._normalized_resolved_dependencies == ("x",)


@pytest.mark.parametrize(
    "rows",
    [
        [("a", "b", None, None), ("b", "a", None, None)],  # a cycle
        [("a", None, None, None), ("b", "c", None, None), ("c", "b", None, None)],
        [("a", None, "c", None), ("b", "a", None, None), ("c", "b", None, None)],  # via depends_on
        [("a", None, None, ("lab",)), ("b", "lab", "a", None)],  # a label as down_revision
        [("a", None, None, None), ("b", "zzz", None, None)],  # a parent no file declares
    ],
    ids=["cycle", "cycle beside a base", "dependency cycle", "label as parent", "missing"],
)
def test_a_broken_history_fails_as_alembic_fails(rows):
    def failure(cls):
        try:
            build(cls, rows).heads  # noqa: B018
        except Exception as exc:  # noqa: BLE001 - the comparison is the point
            return type(exc), str(exc)
        return None

    expected = failure(RevisionMap)

    assert expected is not None
    assert failure(LinearRevisionMap) == expected


@pytest.mark.parametrize("history", ["inventory", "three heads"])
def test_real_script_directories_read_the_same_either_way(history, inventory, tmp_path: Path):
    ini = inventory if history == "inventory" else three_heads_history(tmp_path)
    index = scripts.load_index(script_config.config_from_ini(ini))
    nodes = [
        Revision(r.revision, r.down_revision, r.depends_on, r.branch_labels or None)
        for r in index.revisions.values()
    ]

    assert isinstance(index.revision_map, LinearRevisionMap)
    assert view(index.revision_map) == view(RevisionMap(lambda: nodes))
