"""A job's plan is Alembic's own answer: the revisions alembic then runs, in its order, and the
heads the version table holds afterwards — checked against the real alembic CLI."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path

import pytest

from environments.core import script_config, scripts
from environments.core.plan import PlanError, plan_job, step_of
from environments.core.versions import read_versions
from examples.inventory import revisions as inv
from examples.synthetic import write_history
from tests.conftest import alembic

_RUN_LINE = re.compile(r"Running (upgrade|downgrade) .*? -> ([^,\s]*)")


def _index(ini: Path) -> scripts.ScriptIndex:
    return scripts.load_index(script_config.config_from_ini(ini))


def _heads(url: str) -> tuple[str, ...]:
    state = read_versions(url, timeout=5)
    assert state.failure is None, state.message
    return tuple(sorted(state.heads or ()))


def _run_and_compare(ini: Path, url: str, kind: str, target: str) -> None:
    index = _index(ini)
    before = _heads(url)
    plan = plan_job(index, kind, target, before)

    result = alembic(ini, url, *plan.alembic_args)

    ran = [m.group(0) for m in _RUN_LINE.finditer(result.stderr + result.stdout)]
    assert len(ran) == len(plan.revisions), (kind, target, before, ran, plan.revisions)
    for line, revision in zip(ran, plan.revisions, strict=True):
        step = step_of(line)
        assert step is not None
        if kind == "upgrade":
            assert step[1] == revision  # "Running upgrade A -> <revision>"
        else:
            assert f" {revision} -> " in line  # "Running downgrade <revision> -> A"
    assert _heads(url) == plan.to_heads, (kind, target, before)


def test_upgrades_and_downgrades_of_the_sample_project_match_alembic(inventory, sqlite_url):
    url = sqlite_url("plan")
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    for kind, target in [
        ("upgrade", "+2"),
        ("upgrade", inv.STAGING_TARGET[:6]),  # a unique prefix
        ("downgrade", "-1"),
        ("upgrade", "heads"),
        ("downgrade", inv.MERGE_REPORTING),
        ("downgrade", inv.CREATE_ORDERS),  # unmerges: two heads afterwards
        ("upgrade", "reporting@head"),
        ("upgrade", "head"),
        ("downgrade", "base"),
    ]:
        _run_and_compare(inventory, url, kind, target)


@pytest.mark.parametrize("seed", [3, 11])
def test_random_multi_head_histories_match_alembic(tmp_path, sqlite_url, seed):
    history = write_history(
        tmp_path / "h",
        60,
        seed=seed,
        branch_every=12,
        branch_length=3,
        heads=3,
        depends_on_every=9,
    )
    ini = next((tmp_path / "h").rglob("alembic.ini"))
    index = _index(ini)
    chooser = random.Random(seed)
    url = sqlite_url(f"random{seed}")
    sqlite3.connect(url.removeprefix("sqlite:///")).close()  # an empty database to start from
    ids = sorted(index.revisions)
    _run_and_compare(ini, url, "upgrade", chooser.choice(ids))
    for _ in range(6):
        kind = chooser.choice(["upgrade", "downgrade"])
        heads = _heads(url)
        if kind == "upgrade":
            target = chooser.choice(["heads", "+1", chooser.choice(ids)])
        else:
            target = chooser.choice(["-1", chooser.choice(index.applied(heads) or ("base",))])
        try:
            plan_job(index, kind, target, heads)
        except PlanError:
            continue  # alembic refuses these too (checked below)
        _run_and_compare(ini, url, kind, target)
    assert history.heads


def test_a_refused_plan_is_refused_by_alembic_too(inventory, sqlite_url):
    url = sqlite_url("refused")
    alembic(inventory, url, "upgrade", inv.STAGING_TARGET)
    index = _index(inventory)

    with pytest.raises(PlanError, match="Cannot downgrade"):
        plan_job(index, "downgrade", inv.HEAD, _heads(url))
    assert alembic(inventory, url, "downgrade", inv.HEAD, check=False).returncode != 0


def test_stamp_sets_exactly_the_target_even_over_an_unknown_revision(inventory, sqlite_url):
    url = sqlite_url("stamp")
    alembic(inventory, url, "upgrade", inv.PROD_TARGET)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")
    index = _index(inventory)

    with pytest.raises(PlanError, match="deadbeef0000, which the scripts do not have"):
        plan_job(index, "upgrade", "heads", ("deadbeef0000",))
    plan = plan_job(index, "stamp", inv.PROD_TARGET, ("deadbeef0000",))
    alembic(inventory, url, *plan.alembic_args)

    assert _heads(url) == plan.to_heads == (inv.PROD_TARGET,)


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("upgrade", "nosuchrev", "is not a revision here"),
        ("upgrade", "", "Choose a target"),
        ("migrate", "heads", "Unknown job kind"),
        ("stamp", "+1", r"not \+N/-N"),
        ("downgrade", "-99", "Cannot downgrade"),
    ],
)
def test_bad_targets_get_a_sentence(inventory, kind, target, message):
    with pytest.raises(PlanError, match=message):
        plan_job(_index(inventory), kind, target, (inv.PROD_TARGET,))


def test_an_ambiguous_prefix_is_refused(tmp_path):
    write_history(tmp_path / "h", 300, seed=1)
    index = _index(next((tmp_path / "h").rglob("alembic.ini")))
    first_chars = {}
    for revision in index.revisions:
        first_chars.setdefault(revision[0], []).append(revision)
    prefix = next(char for char, ids in first_chars.items() if len(ids) > 1)

    with pytest.raises(PlanError, match="is not a revision here"):
        plan_job(index, "upgrade", prefix, ())
