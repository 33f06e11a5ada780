"""Reading script directories statically gives the same answers as Alembic importing them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from environments.core import revision_files, revision_headers, script_config, scripts
from examples.inventory import revisions as inv
from examples.synthetic import write_history
from tests.conftest import alembic, write_revision


def _alembic_view(ini: Path) -> dict[str, tuple]:
    directory = ScriptDirectory.from_config(Config(str(ini)))
    return {
        script.revision: (
            tuple(sorted(script._versioned_down_revisions)),
            tuple(sorted(script._orig_branch_labels)),
            tuple(sorted(revision_headers.as_tuple(script.dependencies))),
            script.doc,
        )
        for script in directory.walk_revisions()
    }


def _our_view(index: scripts.ScriptIndex) -> dict[str, tuple]:
    return {
        rev.revision: (
            tuple(sorted(rev.down_revisions)),
            tuple(sorted(rev.branch_labels)),
            tuple(sorted(rev.dependencies)),
            rev.message,
        )
        for rev in index.revisions.values()
    }


def test_it_reads_the_sample_project_exactly_as_alembic_does(inventory):
    index = scripts.load_index(script_config.config_from_ini(inventory))

    assert _our_view(index) == _alembic_view(inventory)
    assert index.heads == (inv.HEAD,)
    assert index.problems == []
    assert index.revisions[inv.CREATE_REPORT_RUNS].branch_labels == ("reporting",)
    assert index.revisions[inv.DEPENDS_ON_REVISION].dependencies == (inv.DEPENDS_ON_TARGET,)
    assert set(index.revisions[inv.MERGE_REVISION].down_revisions) == {
        inv.ADD_ORDERS_STATUS,
        inv.CREATE_ORDER_REPORTS,
    }


def test_it_reads_generated_histories_with_branches_merges_and_depends_on(tmp_path):
    history = write_history(tmp_path / "gen", 300, seed=7, heads=3, depends_on_every=25)
    index = scripts.load_index(script_config.config_from_ini(history.alembic_ini))

    assert _our_view(index) == _alembic_view(history.alembic_ini)
    assert sorted(index.heads) == sorted(history.heads)
    assert len(index.heads) == 3
    assert index.has_multiple_heads


def test_it_reads_the_message_and_create_date_from_the_docstring(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, "aaa111", None, message="add the widgets table")
    config = script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)

    revision = scripts.load_index(config).revisions["aaa111"]

    assert revision.message == "add the widgets table"
    assert revision.create_date == "2026-01-02 03:04:05.000000"


def test_it_reads_annotated_and_plain_assignments_and_tuples(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "m.py").write_text(
        '"""merge"""\n'
        "from typing import Sequence, Union\n"
        "revision: str = 'ccc333'\n"
        "down_revision: Union[str, Sequence[str], None] = ('aaa111', 'bbb222')\n"
        "branch_labels: Union[str, Sequence[str], None] = 'release'\n"
        "depends_on: Union[str, Sequence[str], None] = ['aaa111']\n"
    )
    revision = revision_headers.parse_revision_source(
        (versions / "m.py").read_bytes(), versions / "m.py"
    )

    assert revision.revision == "ccc333"
    assert revision.down_revisions == ("aaa111", "bbb222")
    assert revision.branch_labels == ("release",)
    assert revision.dependencies == ("aaa111",)


def test_a_file_with_a_syntax_error_is_named_and_the_rest_still_loads(inventory):
    versions = inventory.parent / "migrations" / "versions"
    (versions / "9999_broken.py").write_text('revision = "zzz"\ndef upgrade(:\n    pass\n')

    index = scripts.load_index(script_config.config_from_ini(inventory))

    assert len(index.revisions) == len(inv.ALL_REVISIONS)
    assert [p.path for p in index.problems] == ["9999_broken.py"]
    assert "syntax error on line 2" in index.problems[0].message


def test_a_file_without_a_revision_id_is_named(inventory):
    versions = inventory.parent / "migrations" / "versions"
    (versions / "notes_helper.py").write_text('"""helpers, not a revision"""\nX = 1\n')

    index = scripts.load_index(script_config.config_from_ini(inventory))

    assert [str(p) for p in index.problems] == [
        "notes_helper.py: declares no revision id (no module-level `revision = ...`)"
    ]
    assert index.heads == (inv.HEAD,)


def test_a_revision_id_computed_at_import_time_is_reported_not_executed(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    marker = tmp_path / "imported"
    (versions / "x.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nrevision = 'abc' + 'def'\ndown_revision = None\n"
    )
    config = script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)

    index = scripts.load_index(config)

    assert not marker.exists(), "a revision file was executed"
    assert str(index.problems[0]) == (
        "x.py: revision on line 2 is `'abc' + 'def'`, which Retort could not resolve without "
        "running code (it is an operation, which only running the file could evaluate); "
        "without an id the file is left out of the graph."
    )


def test_revision_files_are_never_imported(inventory):
    versions = inventory.parent / "migrations" / "versions"
    marker = inventory.parent / "imported"
    path = next(versions.glob(f"{inv.CREATE_USERS}_*.py"))
    path.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + path.read_text())

    index = scripts.load_index(script_config.config_from_ini(inventory))

    assert inv.CREATE_USERS in index.revisions
    assert not marker.exists()


@pytest.mark.parametrize(
    ("separator", "joiner"),
    [("os", os.pathsep), ("space", " "), ("newline", "\n    "), (";", ";"), (None, ", ")],
)
def test_version_locations_are_split_on_the_configured_path_separator(tmp_path, separator, joiner):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write_revision(one, "aaa111", None)
    write_revision(two, "bbb222", "aaa111")
    sep_line = f"path_separator = {separator}\n" if separator else ""
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/scripts\n"
        f"version_locations = %(here)s/one{joiner}%(here)s/two\n{sep_line}"
    )

    index = scripts.load_index(script_config.config_from_ini(tmp_path / "alembic.ini"))

    assert set(index.revisions) == {"aaa111", "bbb222"}
    assert index.heads == ("bbb222",)


def test_recursive_version_locations_reads_subfolders_only_when_asked(tmp_path):
    versions = tmp_path / "scripts" / "versions"
    (versions / "2025").mkdir(parents=True)
    write_revision(versions, "aaa111", None)
    write_revision(versions / "2025", "bbb222", "aaa111")
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/scripts\n")

    flat = scripts.load_index(script_config.config_from_ini(ini))
    ini.write_text(
        "[alembic]\nscript_location = %(here)s/scripts\nrecursive_version_locations = true\n"
    )
    deep = scripts.load_index(script_config.config_from_ini(ini))
    overridden = scripts.load_index(
        script_config.config_from_ini(ini, recursive_version_locations=False)
    )

    assert set(flat.revisions) == {"aaa111"}
    assert set(deep.revisions) == {"aaa111", "bbb222"}
    assert set(overridden.revisions) == {"aaa111"}


def test_relative_script_location_resolves_against_the_working_directory(tmp_path):
    project = tmp_path / "app"
    (project / "db" / "versions").mkdir(parents=True)
    write_revision(project / "db" / "versions", "aaa111", None)
    (project / "config").mkdir()
    ini = project / "config" / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = db\n")

    config = script_config.config_from_ini(ini, working_dir=project)

    assert config.script_location == project / "db"
    assert set(scripts.load_index(config).revisions) == {"aaa111"}


def test_a_missing_script_location_says_how_to_fix_it(tmp_path):
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nsqlalchemy.url = sqlite://\n")

    with pytest.raises(script_config.ScriptConfigError, match="no script_location"):
        script_config.config_from_ini(ini)
    with pytest.raises(script_config.ScriptConfigError, match="does not exist"):
        script_config.config_from_ini(tmp_path / "nope.ini")


def test_a_missing_version_directory_is_reported_as_such(tmp_path):
    config = script_config.build_config(str(tmp_path / "gone"), base=tmp_path)

    index = scripts.load_index(config)

    assert index.revision_map is None
    assert "does not exist" in index.fatal


def test_an_unchanged_directory_is_not_read_again_and_a_change_rereads_one_file(inventory):
    config = script_config.config_from_ini(inventory)
    first = scripts.load_index(config)
    assert scripts.load_index(config) is first

    path = next((inventory.parent / "migrations" / "versions").glob(f"{inv.HEAD}_*.py"))
    path.write_text(path.read_text().replace('"""', '"""Renamed: ', 1))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    untouched = next(
        (inventory.parent / "migrations" / "versions").glob(f"{inv.CREATE_USERS}_*.py")
    ).resolve()
    untouched = str(untouched)
    before = revision_files._file_cache[untouched][2]

    second = scripts.load_index(config)

    assert second is not first
    assert second.revisions[inv.HEAD].message.startswith("Renamed: ")
    assert revision_files._file_cache[untouched][2] is before


def test_pending_revisions_come_in_the_order_alembic_upgrade_heads_applies_them(
    tmp_path, sqlite_url
):
    history = write_history(tmp_path / "gen", 60, seed=3, branch_every=10, branch_length=3, heads=2)
    index = scripts.load_index(script_config.config_from_ini(history.alembic_ini))
    url = sqlite_url("order")
    start = history.revisions[5]
    alembic(history.alembic_ini, url, "upgrade", start)

    predicted = index.pending((start,))
    ran = alembic(history.alembic_ini, url, "upgrade", "heads")
    applied = re.findall(r"Running upgrade [^\n]*? -> (\w+)", ran.stderr + ran.stdout)

    assert list(predicted) == applied
    assert len(predicted) == len(history.revisions) - 6


def test_a_cycle_or_broken_graph_is_a_readable_error(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, "aaa111", "bbb222")
    write_revision(versions, "bbb222", "aaa111")
    config = script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)

    index = scripts.load_index(config)

    assert index.revision_map is None
    assert index.fatal.startswith("The revision graph is broken")


def test_a_parent_revision_no_file_declares_is_a_readable_error(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, "aaa111", None)
    write_revision(versions, "ccc333", "bbb222")
    config = script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)

    index = scripts.load_index(config)

    assert index.revision_map is None
    assert index.fatal == (
        "The revision graph is broken: ccc333_change.py names revision bbb222 as its parent, "
        "and no revision file declares it. Restore that file, or point down_revision at a "
        "revision that exists."
    )


def test_a_syntax_error_below_a_readable_header_is_reported_and_the_graph_still_loads(inventory):
    versions = inventory.parent / "migrations" / "versions"
    write_revision(versions, "bodybad00001", inv.HEAD, body="op.execute(  # never closed")

    index = scripts.load_index(script_config.config_from_ini(inventory))

    assert index.heads == ("bodybad00001",)
    [problem] = index.problems
    assert problem.path == "bodybad00001_change.py"
    assert problem.message.startswith("syntax error on line")
    assert "alembic cannot load the scripts" in problem.message


@pytest.mark.parametrize(
    "header",
    [
        'revision = "abc123"  # the id\ndown_revision = (\n    "aaa111",\n    "bbb222",\n)\n',
        "revision = 'abc123'\ndown_revision = ['aaa111', 'bbb222']\n",
        'revision: str = "abc123"\ndown_revision: tuple[str, str] = ("aaa111", "bbb222")\n',
    ],
)
def test_the_fast_scan_and_the_parser_agree_on_every_header_style(tmp_path, header):
    source = (
        'r"""Merge two\\branches\n\nRevision ID: abc123\nCreate Date: 2026-01-01 00:00:00\n"""\n'
        + header
        + "branch_labels = None\ndepends_on = None\n\ndef upgrade():\n    pass\n"
    ).encode()
    path = tmp_path / "abc123_merge.py"

    fast = revision_headers.read_revision_source(source, path)
    slow = revision_headers.parse_revision_source(source, path)

    assert fast == slow
    assert fast.down_revisions == ("aaa111", "bbb222")
    assert fast.message == "Merge two\\branches"
    assert fast.create_date == "2026-01-01 00:00:00"


def test_a_long_file_and_a_long_docstring_are_read_whole_when_needed(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    long_doc = "a long story\n\n" + "more words " * 2000
    (versions / "big.py").write_text(
        f'"""{long_doc}"""\nrevision = "big001"\ndown_revision = None\n'
        "branch_labels = None\ndepends_on = None\n" + "# padding\n" * 3000
    )
    config = script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)

    revision = scripts.load_index(config).revisions["big001"]

    assert revision.message == "a long story"
    assert revision.doc.endswith("more words")


def test_a_revision_reached_through_a_link_is_read_once(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    original = write_revision(versions, "aaa111", None)
    (versions / "zz_link.py").symlink_to(original)

    index = scripts.load_index(
        script_config.build_config(str(tmp_path), [str(versions)], base=tmp_path)
    )

    assert set(index.revisions) == {"aaa111"}
    assert index.problems == []
