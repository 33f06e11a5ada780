"""What a database at some heads holds and what `alembic upgrade heads` would apply, in
Alembic's own order: `ScriptIndex.applied`, `pending` and `holds` (revision_order.py) against
a stock `RevisionMap`'s `iterate_revisions`, on random histories with branches, merges of
labelled branches, labels and dependencies, from every kind of starting point."""

from __future__ import annotations

import random
import threading

import pytest
from alembic.script.revision import RevisionMap

from environments.core.revision_map import LinearRevisionMap
from environments.core.scripts import ScriptIndex
from tests.test_revision_map import build, random_history, view


def index_over(rows: list[tuple]) -> ScriptIndex:
    revision_map = build(LinearRevisionMap, rows)
    return ScriptIndex(
        config=None,  # type: ignore[arg-type] - only the map is asked
        revisions={},
        read_problems=[],
        revision_map=revision_map,
        fingerprint=(),
        heads=tuple(revision_map.heads),
        bases=tuple(revision_map.bases),
    )


def alembic_applied(revision_map: RevisionMap, heads) -> list[str]:
    return [r.revision for r in revision_map.iterate_revisions(heads, "base", implicit_base=True)]


def alembic_pending(revision_map: RevisionMap, heads) -> list[str]:
    found = revision_map.iterate_revisions("heads", tuple(heads), implicit_base=True)
    return [r.revision for r in reversed(list(found))]


def starting_points(rows: list[tuple], rng: random.Random) -> list[tuple[str, ...]]:
    """Empty, one revision anywhere, several revisions at once (as a database on two
    branches holds), and the heads."""
    ids = [row[0] for row in rows]
    points: list[tuple[str, ...]] = [()]
    points += [(rng.choice(ids),) for _ in range(6)]
    points += [tuple(rng.sample(ids, rng.choice((2, 3)))) for _ in range(4)]
    return points


def unrelated(revision_map: RevisionMap, heads: tuple[str, ...]) -> bool:
    """No head is below another (a version table alembic itself would write)."""
    for head in heads:
        below = {
            r.revision for r in revision_map._get_ancestor_nodes([revision_map.get_revision(head)])
        }
        if any(other != head and other in below for other in heads):
            return False
    return True


def outcome(call, *args):
    """What a call answers, or the kind of error it raises (Alembic's own wording of an
    overlap depends on the order the heads come in, and on a set's order)."""
    try:
        return list(call(*args))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return type(exc)


@pytest.mark.parametrize("seed", range(30))
def test_labelled_histories_apply_in_alembics_order(seed):
    rows = random_history(2000 + seed, size=120 + seed * 9, label_rate=0.05 + seed * 0.005)
    theirs = build(RevisionMap, rows)
    ours = index_over(rows)

    assert view(ours.revision_map) == view(theirs)
    assert ours.heads == tuple(theirs.heads) and ours.bases == tuple(theirs.bases)
    rng = random.Random(seed)
    points = starting_points(rows, rng) + [tuple(theirs.heads)]
    for heads in points:
        assert outcome(ours.pending, heads) == outcome(alembic_pending, theirs, heads), heads
        if heads:
            applied = outcome(alembic_applied, theirs, heads)
            assert outcome(ours.applied, heads) == applied, heads
            if isinstance(applied, list):
                assert ours.holds(heads) == frozenset(applied), heads
    assert sum(1 for heads in points if unrelated(theirs, heads)) >= 6


@pytest.mark.parametrize("seed", range(20))
def test_unlabelled_histories_apply_in_alembics_order(seed):
    rows = random_history(seed, size=60 + seed * 7, label_rate=0.0)
    theirs = build(RevisionMap, rows)
    ours = index_over(rows)
    for heads in starting_points(rows, random.Random(seed)):
        assert outcome(ours.pending, heads) == outcome(alembic_pending, theirs, heads), heads
        if heads:
            assert outcome(ours.applied, heads) == outcome(alembic_applied, theirs, heads)


def test_a_revision_the_map_does_not_know_fails_as_alembic_fails():
    rows = random_history(7, size=40)
    theirs, ours = build(RevisionMap, rows), index_over(rows)

    with pytest.raises(Exception) as alembic_error:
        alembic_pending(theirs, ("nosuchrevision",))
    with pytest.raises(Exception) as our_error:
        ours.pending(("nosuchrevision",))

    assert type(our_error.value) is type(alembic_error.value)
    assert str(our_error.value) == str(alembic_error.value)


def test_an_answer_is_worked_out_once_and_read_without_the_lock():
    rows = random_history(11, size=200, label_rate=0.1)
    index = index_over(rows)
    heads = (rows[50][0],)
    first = index.pending(heads)

    with index._lock:  # another thread holding the lock does not stop a cached read
        done = []
        reader = threading.Thread(target=lambda: done.append(index.pending(heads)))
        reader.start()
        reader.join(timeout=5)

    assert done == [first]
    assert index.pending(list(reversed(heads))) is first
