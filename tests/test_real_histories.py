"""Histories real projects write — names for constants, a reused id, label dependencies,
several heads on purpose — read exactly as Alembic reads them, without running any of it.

Each history is written here for the purpose. Alembic's own answer comes from
`tests/alembic_answer.py` in a child process (which imports the files, with the project's
modules importable through `prepend_sys_path`), and from real `alembic` runs on SQLite files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from alembic.script.revision import RevisionError
from django.core.management import call_command

from environments.core import graph, script_config, scripts
from environments.core.heads import assess
from environments.core.status import Status, Target, read_one
from tests.conftest import EXAMPLE, REPO, alembic

ANSWER = REPO / "tests" / "alembic_answer.py"


# --- a project on disk ---------------------------------------------------------------------


# the sample project's logging sections, which its env.py (copied below) configures from
LOGGING = (EXAMPLE / "alembic.ini").read_text().partition("[loggers]")[2]


def _ini(ini: Path, alembic_section: str) -> None:
    ini.write_text(f"[alembic]\n{alembic_section}\n[loggers]{LOGGING}")


def _project(tmp_path: Path, name: str = "proj") -> Path:
    """An Alembic project whose own modules sit beside alembic.ini (`prepend_sys_path = .`)."""
    root = tmp_path / name
    (root / "migrations" / "versions").mkdir(parents=True)
    shutil.copy(EXAMPLE / "migrations" / "env.py", root / "migrations" / "env.py")
    _ini(
        root / "alembic.ini",
        "script_location = %(here)s/migrations\nprepend_sys_path = .\npath_separator = os\n",
    )
    return root / "alembic.ini"


def _versions(ini: Path) -> Path:
    return ini.parent / "migrations" / "versions"


def _revision(
    folder: Path,
    revision: str,
    header: str,
    *,
    prelude: str = "",
    filename: str | None = None,
    revises: str = "",
) -> Path:
    """A revision file as a project writes it: docstring, imports, then the header lines."""
    path = folder / (filename or f"{revision}_change.py")
    path.write_text(
        f'"""{revision} change\n\nRevision ID: {revision}\nRevises: {revises}\n'
        'Create Date: 2026-01-02 03:04:05.000000\n\n"""\n'
        f"from alembic import op\n{prelude}\n\n{header}\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n",
        encoding="utf-8",
    )
    return path


def _plain(folder: Path, revision: str, down: object, **extra: object) -> Path:
    lines = [f"revision = {revision!r}", f"down_revision = {down!r}"]
    lines.append(f"branch_labels = {extra.get('branch_labels')!r}")
    lines.append(f"depends_on = {extra.get('depends_on')!r}")
    return _revision(folder, revision, "\n".join(lines), revises=str(down))


# --- both answers --------------------------------------------------------------------------


def alembic_answer(ini: Path, *starts: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ANSWER), str(ini), *starts],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ini.parent,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def retort_answer(ini: Path, *starts: str) -> dict:
    index = scripts.load_index(script_config.config_from_ini(ini))
    if index.revision_map is None:
        return {"error": index.fatal}
    edges = []
    for revision in index.revisions.values():
        edges += [[revision.revision, parent, "parent"] for parent in revision.down_revisions]
        edges += [
            [revision.revision, dep, "depends_on"]
            for dep in index.dependencies_of(revision.revision)
        ]
    pending: dict[str, object] = {}
    for start in starts:
        try:
            pending[start] = list(index.pending(tuple(p for p in start.split(",") if p)))
        except RevisionError as exc:
            pending[start] = {"error": str(exc)}
    return {
        "heads": sorted(index.heads),
        "bases": sorted(index.bases),
        "edges": sorted(edges),
        "labels": {rev.revision: sorted(rev.branch_labels) for rev in index.revisions.values()},
        "pending": pending,
    }


def _same(ours: dict, theirs: dict) -> None:
    for key in ("heads", "bases", "edges", "labels", "pending"):
        assert ours[key] == theirs[key], key


def _status(ini: Path, url: str):
    index = scripts.load_index(script_config.config_from_ini(ini))
    return read_one(Target(key=1, url=lambda: url, index=index), timeout=5)


def _applied_by_alembic(ini: Path, url: str) -> list[str]:
    ran = alembic(ini, url, "upgrade", "heads")
    return re.findall(r"Running upgrade [^\n]*? -> (\w+)", ran.stderr + ran.stdout)


def _problems(ini: Path) -> list[str]:
    return [str(p) for p in scripts.load_index(script_config.config_from_ini(ini)).problems]


# --- names instead of literals -------------------------------------------------------------


def _expand_contract(ini: Path, *, expand: tuple[str, str], contract: tuple[str, str]) -> None:
    """base → expand branch and contract branch, their labels written as `expand`/`contract`
    say: each a (prelude, expression) pair."""
    versions = _versions(ini)
    _plain(versions, "base0001", None)
    for branch, (prelude, labels), depends_on in (
        ("expa", expand, None),
        ("cont", contract, "expa0001"),
    ):
        _revision(
            versions,
            f"{branch}0001",
            f"revision = '{branch}0001'\ndown_revision = 'base0001'\nbranch_labels = {labels}\n"
            f"depends_on = {depends_on!r}",
            prelude=prelude,
            revises="base0001",
        )
        _plain(versions, f"{branch}0002", f"{branch}0001")


def test_a_label_assigned_in_the_same_file_is_read_as_alembic_reads_it(tmp_path):
    ini = _project(tmp_path)
    _expand_contract(
        ini,
        expand=("EXPAND_BRANCH = 'expand'", "(EXPAND_BRANCH,)"),
        contract=("LABEL: str = 'contract'\nCONTRACT = LABEL", "CONTRACT"),
    )

    ours = retort_answer(ini, "", "base0001", "expa0002")

    _same(ours, alembic_answer(ini, "", "base0001", "expa0002"))
    assert ours["labels"]["expa0001"] == ["expand"]
    assert ours["labels"]["cont0001"] == ["contract"]
    assert _problems(ini) == []


def test_a_label_from_a_sibling_module_is_read_and_the_database_reads_as_alembic_says(
    tmp_path, sqlite_url
):
    ini = _project(tmp_path)
    (ini.parent / "cli.py").write_text('EXPAND_BRANCH = "expand"\nCONTRACT_BRANCH = "contract"\n')
    _expand_contract(
        ini,
        expand=("import cli", "(cli.EXPAND_BRANCH,)"),
        contract=("from cli import CONTRACT_BRANCH", "[CONTRACT_BRANCH]"),
    )
    url = sqlite_url()
    alembic(ini, url, "upgrade", "expa0001")

    state = _status(ini, url)
    theirs = alembic_answer(ini, "expa0001")

    _same(retort_answer(ini, "expa0001"), theirs)
    assert state.status is Status.BEHIND
    assert list(state.pending) == theirs["pending"]["expa0001"]
    assert _applied_by_alembic(ini, url) == list(state.pending)
    assert _status(ini, url).status is Status.CURRENT


def test_constants_from_a_package_two_levels_up_and_imported_under_another_name(tmp_path):
    ini = _project(tmp_path)
    package = ini.parent / "myapp" / "db"
    package.mkdir(parents=True)
    (ini.parent / "myapp" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .names import EXPAND as EXPAND_LABEL\n")
    (package / "names.py").write_text("EXPAND = 'expand'\n")
    (package / "constants.py").write_text(
        "CONTRACT = 'contract'\nBASE_REVISION: str = 'base0001'\n"
    )
    _expand_contract(
        ini,
        expand=("from myapp import db", "(db.EXPAND_LABEL,)"),
        contract=(
            "import myapp.db.constants\nfrom myapp.db.constants import BASE_REVISION as BASE",
            "(myapp.db.constants.CONTRACT,)",
        ),
    )
    _revision(
        _versions(ini),
        "cont0003",
        "revision = 'cont0003'\ndown_revision = 'cont0002'\nbranch_labels = None\n"
        "depends_on = (BASE,)",
        prelude="from myapp.db.constants import BASE_REVISION as BASE",
        revises="cont0002",
    )

    ours = retort_answer(ini, "", "expa0002")

    _same(ours, alembic_answer(ini, "", "expa0002"))
    assert ours["labels"]["expa0001"] == ["expand"]
    assert ours["labels"]["cont0001"] == ["contract"]
    assert ["cont0003", "base0001", "depends_on"] in ours["edges"]
    assert _problems(ini) == []


def test_a_call_is_named_with_its_file_line_and_expression_and_the_rest_still_reads(
    tmp_path, sqlite_url
):
    ini = _project(tmp_path)
    _expand_contract(
        ini,
        expand=("def label(name):\n    return name", '(label("expand"),)'),
        contract=("", "('contract',)"),
    )
    url = sqlite_url()
    alembic(ini, url, "upgrade", "base0001")

    ours, theirs = retort_answer(ini, "base0001"), alembic_answer(ini, "base0001")
    state = _status(ini, url)

    # Alembic ran the call and knows the label; Retort shows the revision without it
    assert theirs["labels"]["expa0001"] == ["expand"]
    assert ours["labels"]["expa0001"] == []
    for key in ("heads", "bases", "edges", "pending"):
        assert ours[key] == theirs[key], key
    assert _problems(ini) == [
        'expa0001_change.py: branch_labels on line 14 is `(label("expand"),)`, and Retort '
        "could not resolve its item `label('expand')` without running code (it is a function "
        "call, which only running the file could evaluate); the revision is shown without that "
        "branch label."
    ]
    assert state.status is Status.BEHIND
    assert list(state.pending) == theirs["pending"]["base0001"]


def test_a_module_that_cannot_be_found_is_named_and_nothing_else_breaks(tmp_path):
    ini = _project(tmp_path)
    _expand_contract(
        ini,
        expand=("import cli", "(cli.EXPAND_BRANCH,)"),
        contract=("", "'contract'"),
    )

    index = scripts.load_index(script_config.config_from_ini(ini))

    assert sorted(index.heads) == ["cont0002", "expa0002"]
    [problem] = index.problems
    assert problem.path == "expa0001_change.py"
    assert problem.message.startswith(
        "branch_labels on line 13 is `(cli.EXPAND_BRANCH,)`, and Retort could not resolve its "
        "item `cli.EXPAND_BRANCH` without running code (module cli was not found in the "
        "project; looked in "
    )


def test_a_parent_written_as_a_name_it_cannot_resolve_falls_back_to_the_docstring(tmp_path):
    ini = _project(tmp_path)
    versions = _versions(ini)
    _plain(versions, "base0001", None)
    _revision(
        versions,
        "next0001",
        "revision = 'next0001'\ndown_revision = parent_of(__file__)\nbranch_labels = None\n"
        "depends_on = None",
        revises="base0001",
    )
    _plain(versions, "next0002", "next0001")

    index = scripts.load_index(script_config.config_from_ini(ini))

    assert index.heads == ("next0002",)
    assert index.revisions["next0001"].down_revisions == ("base0001",)
    [problem] = index.problems
    assert problem.message.endswith(
        "Retort took its parents (base0001) from the docstring's Revises."
    )


def test_a_constants_module_is_read_never_imported_and_a_change_to_it_is_seen(tmp_path):
    ini = _project(tmp_path)
    marker = tmp_path / "imported"
    (ini.parent / "cli.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nEXPAND_BRANCH = 'expand'\n"
    )
    _expand_contract(
        ini, expand=("import cli", "(cli.EXPAND_BRANCH,)"), contract=("", "'contract'")
    )
    config = script_config.config_from_ini(ini)

    first = scripts.load_index(config)
    (ini.parent / "cli.py").write_text("EXPAND_BRANCH = 'widen'\n")
    second = scripts.load_index(config)

    assert not marker.exists(), "a constants module was imported"
    assert "cli" not in sys.modules
    assert first.revisions["expa0001"].branch_labels == ("expand",)
    assert second.revisions["expa0001"].branch_labels == ("widen",)
    assert scripts.load_index(config) is second


# --- the same id in two files --------------------------------------------------------------


def _squashed(tmp_path: Path) -> Path:
    """A squash revision reusing the old base's id, with the old directory still listed."""
    ini = _project(tmp_path)
    old, new = ini.parent / "old", ini.parent / "new"
    old.mkdir()
    new.mkdir()
    _ini(
        ini,
        "script_location = %(here)s/migrations\nprepend_sys_path = .\npath_separator = os\n"
        "version_locations = %(here)s/old:%(here)s/new\n",
    )
    _plain(old, "aaaa0001", None)
    _plain(old, "aaaa0002", "aaaa0001")
    _plain(old, "aaaa0003", "aaaa0002")
    _revision(
        new,
        "aaaa0001",
        "revision = 'aaaa0001'\ndown_revision = None\nbranch_labels = None\ndepends_on = None",
        filename="aaaa0001_squashed.py",
    )
    _plain(new, "bbbb0001", "aaaa0001")
    return ini


def test_a_revision_id_in_two_files_is_named_and_read_as_alembic_reads_it(tmp_path):
    ini = _squashed(tmp_path)

    ours = retort_answer(ini, "aaaa0002")
    theirs = alembic_answer(ini, "aaaa0002")
    index = scripts.load_index(script_config.config_from_ini(ini))

    assert ours["heads"] == theirs["heads"]
    assert ours["bases"] == theirs["bases"]
    assert ours["pending"] == theirs["pending"]
    assert "error" in theirs["pending"]["aaaa0002"]
    assert index.revisions["aaaa0001"].path.name == "aaaa0001_squashed.py"  # the last, as Alembic
    assert [str(p) for p in index.problems] == [
        "aaaa0001_squashed.py: revision aaaa0001 is declared in 2 files "
        '(old/aaaa0001_change.py, new/aaaa0001_squashed.py). Alembic warns "Revision aaaa0001 '
        'is present more than once", keeps the last one (new/aaaa0001_squashed.py) and then '
        "refuses to plan upgrades; remove or rename the other."
    ]


def test_a_database_under_a_duplicated_id_is_an_error_in_words_as_alembic_refuses(
    tmp_path, target_url
):
    ini = _squashed(tmp_path)
    alembic(ini, target_url, "stamp", "aaaa0002")

    state = _status(ini, target_url)
    refused = alembic(ini, target_url, "upgrade", "heads", check=False)

    assert refused.returncode != 0
    assert "overlaps with other requested revisions" in refused.stderr
    assert state.status is Status.ERROR
    assert state.pending == ()
    assert state.error.startswith("Alembic cannot plan an upgrade from aaaa0002: Requested ")
    assert state.error.endswith(
        "The scripts declare the same revision in more than one file (aaaa0001 in "
        "old/aaaa0001_change.py, new/aaaa0001_squashed.py); alembic refuses to plan until one "
        "of them is removed."
    )


# --- depends_on naming a branch label ------------------------------------------------------


def _reporting(ini: Path, depends_on: str) -> None:
    versions = _versions(ini)
    _plain(versions, "main0001", None)
    _plain(versions, "repo0001", None, branch_labels=("reporting",))
    _plain(versions, "repo0002", "repo0001")
    _plain(versions, "main0002", "main0001", depends_on=depends_on)
    _plain(versions, "main0003", "main0002")


def test_depends_on_a_branch_label_is_an_edge_like_any_other(tmp_path, sqlite_url):
    ini = _project(tmp_path)
    _reporting(ini, "reporting")
    url = sqlite_url()
    alembic(ini, url, "upgrade", "main0001")

    ours, theirs = retort_answer(ini, "main0001"), alembic_answer(ini, "main0001")
    index = scripts.load_index(script_config.config_from_ini(ini))
    layout = graph.layout(index)
    state = _status(ini, url)

    _same(ours, theirs)
    assert ["main0002", "repo0001", "depends_on"] in ours["edges"]
    assert ("main0002", "repo0001", "depends_on") in {
        (e.child, e.parent, e.kind) for e in layout.edges
    }
    assert list(state.pending) == theirs["pending"]["main0001"]
    assert _applied_by_alembic(ini, url) == list(state.pending)


def test_depends_on_label_at_head_is_refused_in_words_as_alembic_refuses_it(tmp_path):
    ini = _project(tmp_path)
    _reporting(ini, "reporting@head")

    theirs = alembic_answer(ini)
    ours = retort_answer(ini)

    assert theirs["error"] == "KeyError: 'reporting@head'"
    assert ours["error"] == (
        "The revision graph is broken: main0002_change.py depends on reporting@head, which "
        "alembic cannot load: depends_on takes revision ids or branch labels, not label@head. "
        "Name the branch label (reporting) or a revision id."
    )


def test_depends_on_a_revision_nobody_declares_is_not_called_a_parent(tmp_path):
    ini = _project(tmp_path)
    _reporting(ini, "gone0001")

    assert retort_answer(ini)["error"] == (
        "The revision graph is broken: main0002_change.py depends on gone0001 (depends_on), "
        "and no revision file declares it as a revision or a branch label. Restore that file, "
        "or correct depends_on."
    )


# --- several heads, on purpose or not ------------------------------------------------------


def _three_labelled_heads(ini: Path) -> None:
    versions = _versions(ini)
    _plain(versions, "core0001", None)
    _plain(versions, "expa0001", "core0001", branch_labels=("expand",))
    _plain(versions, "cont0001", "core0001", branch_labels=("contract",))
    _plain(versions, "plug0001", None, branch_labels=("plugin",))
    _plain(versions, "plug0002", "plug0001", depends_on="expa0001")


def _diverged(ini: Path) -> None:
    versions = _versions(ini)
    _plain(versions, "root0001", None)
    _plain(versions, "root0002", "root0001")
    _plain(versions, "left0001", "root0002")
    _plain(versions, "righ0001", "root0002")


def test_three_heads_on_labelled_branches_are_expected_and_read_as_alembic_reads_them(tmp_path):
    ini = _project(tmp_path)
    _three_labelled_heads(ini)

    ours = retort_answer(ini, "", "core0001")
    verdict = assess(scripts.load_index(script_config.config_from_ini(ini)))

    _same(ours, alembic_answer(ini, "", "core0001"))
    assert ours["heads"] == ["cont0001", "expa0001", "plug0002"]
    assert verdict.expected
    assert verdict.sentence == "3 heads, expected (branches contract, expand, plugin)"


def test_two_unlabelled_heads_that_diverged_are_a_missing_merge(tmp_path):
    ini = _project(tmp_path)
    _diverged(ini)

    ours = retort_answer(ini, "root0001")
    verdict = assess(scripts.load_index(script_config.config_from_ini(ini)))

    _same(ours, alembic_answer(ini, "root0001"))
    assert not verdict.expected
    assert (
        verdict.sentence
        == "2 heads — a merge is missing: left0001, righ0001 diverged from root0002"
    )


def _gate(*args: str) -> tuple[int, str]:
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("migration_status", *args, stdout=out)
    return exit_info.value.code, out.getvalue()


@pytest.mark.django_db
def test_the_gate_passes_a_multi_branch_project_whose_databases_are_at_heads(
    tmp_path, make_project, sqlite_url
):
    ini = _project(tmp_path)
    _three_labelled_heads(ini)
    urls = {"staging": sqlite_url("staging"), "prod": sqlite_url("prod")}
    for url in urls.values():
        alembic(ini, url, "upgrade", "heads")
    make_project(ini, urls)

    code, output = _gate("--json")
    text_code, text = _gate()

    assert code == text_code == 0
    rows = json.loads(output)
    assert [row["status"] for row in rows] == ["current", "current"]
    assert all(row["heads_expected"] is True for row in rows)
    assert rows[0]["heads_reason"] == "3 heads, expected (branches contract, expand, plugin)"
    assert "(scripts: 3 heads, expected (branches contract, expand, plugin))" in text


@pytest.mark.django_db
def test_the_gate_fails_an_unmerged_split_and_names_the_diverged_heads(
    tmp_path, make_project, sqlite_url
):
    ini = _project(tmp_path)
    _diverged(ini)
    url = sqlite_url()
    alembic(ini, url, "upgrade", "heads")
    make_project(ini, {"prod": url})

    code, output = _gate("--json")
    _, text = _gate()

    assert code == 1
    [row] = json.loads(output)
    assert row["status"] == "current"
    assert row["heads_expected"] is False
    assert row["heads_reason"] == (
        "2 heads — a merge is missing: left0001, righ0001 diverged from root0002"
    )
    assert "a merge is missing: left0001, righ0001 diverged from root0002" in text


@pytest.mark.django_db
def test_a_project_can_declare_its_heads_expected_or_single(tmp_path, make_project, sqlite_url):
    ini = _project(tmp_path)
    _three_labelled_heads(ini)
    url = sqlite_url()
    alembic(ini, url, "upgrade", "heads")
    project = make_project(ini, {"prod": url}, multiple_heads="single")

    single_code, single = _gate("--json")
    project.multiple_heads = "expected"
    project.save()
    expected_code, expected = _gate("--json")

    assert single_code == 1
    assert json.loads(single)[0]["heads_reason"] == (
        "3 heads — the project keeps a single head: merge cont0001, expa0001, plug0002 with "
        "alembic merge heads"
    )
    assert expected_code == 0
    assert json.loads(expected)[0]["heads_reason"] == (
        "3 heads, expected (the project declares several heads expected)"
    )


# --- configuration as Alembic reads it -----------------------------------------------------


def test_version_locations_without_a_path_separator_carry_alembics_warning(tmp_path):
    ini = _project(tmp_path)
    (ini.parent / "more").mkdir()
    _ini(
        ini,
        "script_location = %(here)s/migrations\n"
        "version_locations = %(here)s/migrations/versions, %(here)s/more\n",
    )
    _plain(_versions(ini), "aaaa0001", None)
    _plain(ini.parent / "more", "bbbb0001", "aaaa0001")

    index = scripts.load_index(script_config.config_from_ini(ini))
    theirs = alembic_answer(ini)

    assert index.heads == ("bbbb0001",)
    assert [str(p) for p in index.problems] == [
        "migrations: alembic.ini: No path_separator found in configuration; falling back to "
        "legacy splitting on spaces/commas for version_locations.  Consider adding "
        "path_separator=os to Alembic config."
    ]
    assert any("No path_separator found" in warning for warning in theirs["warnings"])


def test_pyproject_tool_alembic_is_read_as_alembic_reads_it(tmp_path):
    root = tmp_path / "proj"
    (root / "db" / "versions").mkdir(parents=True)
    (root / "extra").mkdir()
    (root / "alembic.ini").write_text("[alembic]\n")
    (root / "pyproject.toml").write_text(
        '[tool.alembic]\nscript_location = "%(here)s/db"\n'
        'version_locations = ["%(here)s/db/versions", "%(here)s/extra"]\n'
    )
    _plain(root / "db" / "versions", "aaaa0001", None)
    _plain(root / "extra", "bbbb0001", "aaaa0001")

    config = script_config.config_from_ini(root / "alembic.ini")

    assert config.script_location == root / "db"
    assert config.version_locations == (root / "db" / "versions", root / "extra")
    assert scripts.load_index(config).heads == ("bbbb0001",)


# --- what the pages say --------------------------------------------------------------------


def _text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", response.content.decode()))


@pytest.mark.django_db
def test_the_overview_and_the_graph_say_whether_several_heads_are_meant(
    tmp_path, make_project, sqlite_url, client_alice
):
    labelled, split = _project(tmp_path, "labelled"), _project(tmp_path, "split")
    _three_labelled_heads(labelled)
    _diverged(split)
    make_project(labelled, {"prod": sqlite_url("a")}, name="labelled", slug="labelled")
    make_project(split, {"prod": sqlite_url("b")}, name="split", slug="split")

    overview = _text(client_alice.get("/"))
    labelled_graph = _text(client_alice.get("/projects/labelled/graph"))
    split_graph = _text(client_alice.get("/projects/split/graph"))

    assert "3 heads, expected (branches contract, expand, plugin): upgrades go to heads." in (
        overview
    )
    assert (
        "2 heads — a merge is missing: left0001, righ0001 diverged from root0002. "
        "alembic upgrade head fails here: merge them with alembic merge heads"
    ) in overview
    assert "3 heads, expected (branches contract, expand, plugin)." in labelled_graph
    assert "a merge is missing: left0001, righ0001 diverged from root0002." in split_graph


@pytest.mark.django_db
def test_the_graph_api_returns_a_label_dependency_as_an_edge(
    tmp_path, make_project, sqlite_url, client_alice
):
    ini = _project(tmp_path)
    _reporting(ini, "reporting")
    make_project(ini, {"dev": sqlite_url()}, name="reports", slug="reports")

    data = client_alice.get("/api/v1/projects/reports/graph").json()
    page = client_alice.get("/projects/reports/graph").content.decode()

    nodes = {node["id"]: node for node in data["nodes"]}
    assert nodes["main0002"]["depends_on"] == ["repo0001"]
    assert nodes["main0002"]["depends_on_declared"] == ["reporting"]
    assert {"from": "main0002", "to": "repo0001", "kind": "depends_on"} in data["edges"]
    assert page.count("edge-depends_on") == 1
    assert data["heads_expected"] is True


@pytest.mark.django_db
def test_no_page_imports_a_revision_file_or_a_constants_module(
    tmp_path, make_project, sqlite_url, client_alice
):
    ini = _project(tmp_path)
    marker = tmp_path / "imported"
    run = f"open({str(marker)!r}, 'a').write('ran')\n"
    (ini.parent / "cli.py").write_text(run + "EXPAND_BRANCH = 'expand'\n")
    _expand_contract(
        ini, expand=("import cli", "(cli.EXPAND_BRANCH,)"), contract=("", "'contract'")
    )
    for path in _versions(ini).glob("*.py"):
        path.write_text(run + path.read_text())
    make_project(ini, {"dev": sqlite_url()}, name="branches", slug="branches")

    pages = [
        client_alice.get(url)
        for url in (
            "/",
            "/projects/branches/",
            "/projects/branches/graph?env=dev",
            "/api/v1/projects/branches/graph",
            "/projects/branches/revisions/expa0001",
            "/projects/branches/environments/dev/",
        )
    ]

    assert [page.status_code for page in pages] == [200] * 6
    labels = {node["id"]: node["branch_labels"] for node in pages[3].json()["nodes"]}
    assert labels["expa0001"] == ["expand"]
    assert not marker.exists(), "the web process ran a project's file"
