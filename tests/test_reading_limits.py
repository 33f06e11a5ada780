"""What Retort reads from a version directory is bounded: no pipe, device or link out of the
project is opened, and a huge revision file has only its header read."""

from __future__ import annotations

import os
import re
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from environments.core import script_config, scripts
from examples.inventory import revisions as inv
from tests.conftest import write_revision

MB = 1_000_000


def _versions(ini: Path) -> Path:
    return ini.parent / "migrations" / "versions"


def _within(seconds: float, work: Callable[[], object]) -> object:
    """Run `work`, failing (not hanging) if it never returns: a blocked read is the bug."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read never returned"
    return result[0]


def _huge(versions: Path, size: int) -> Path:
    """A real revision (a second head) followed by `size` bytes of comments."""
    path = write_revision(versions, "huge00000001", inv.CREATE_USERS, message="a data dump")
    with path.open("a") as file:
        line = "# " + "x" * 98 + "\n"
        for _ in range(size // len(line)):
            file.write(line)
    return path


def _index(ini: Path) -> scripts.ScriptIndex:
    return scripts.load_index(script_config.config_from_ini(ini))


def test_a_pipe_in_the_version_directory_is_named_never_opened(inventory):
    os.mkfifo(_versions(inventory) / "zz_pipe.py")

    index = _within(20, lambda: _index(inventory))

    assert index.heads == (inv.HEAD,)
    assert [str(p) for p in index.problems] == [
        "zz_pipe.py: is not a regular file (a pipe, a device or a socket); Retort does not open "
        "it. Remove it from the version directory."
    ]


def test_a_link_to_a_device_or_out_of_the_project_is_refused(inventory, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = write_revision(outside, "0ut0f0project", inv.HEAD)
    (_versions(inventory) / "zz_zero.py").symlink_to("/dev/zero")
    (_versions(inventory) / "zz_out.py").symlink_to(secret)

    index = _within(20, lambda: _index(inventory))

    assert index.heads == (inv.HEAD,)
    assert "0ut0f0project" not in index.revisions
    assert sorted(str(p) for p in index.problems) == [
        f"zz_out.py: links to {secret}, outside the project; Retort does not follow it.",
        "zz_zero.py: links to /dev/zero, outside the project; Retort does not follow it.",
    ]


def test_a_huge_revision_file_keeps_its_place_in_the_graph_but_only_its_header_is_read(
    inventory,
):
    _huge(_versions(inventory), 50 * MB)

    tracemalloc.start()
    index = _index(inventory)
    problems = index.problems
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert set(index.heads) == {inv.HEAD, "huge00000001"}
    assert [str(p) for p in problems] == [
        "huge00000001_change.py: is 50.0 MB, over Retort's limit of 1 MB "
        "(RETORT_MAX_REVISION_BYTES): only its header was read; its code is not checked, "
        "analysed or shown"
    ]
    assert peak < 5 * MB, f"read {peak} bytes"


@pytest.mark.django_db(transaction=True)  # the pages are fetched from a thread
def test_the_pages_answer_with_a_pipe_and_a_huge_file_in_the_directory(client_alice, demo_project):
    versions = _versions(Path(demo_project.alembic_ini))
    os.mkfifo(versions / "zz_pipe.py")
    _huge(versions, 50 * MB)

    def visit() -> list[tuple[int, str]]:
        tracemalloc.start()
        try:
            pages = [
                client_alice.get(url)
                for url in (
                    reverse("overview"),
                    reverse("project_graph", args=["inventory"]),
                    reverse("revision_panel", args=["inventory", "huge00000001"]),
                )
            ]
        finally:
            visit.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            connection.close()  # this thread's own connection
        return [(page.status_code, page.content.decode()) for page in pages]

    (overview, graph, panel) = _within(60, visit)

    assert [overview[0], graph[0], panel[0]] == [200, 200, 200]
    assert "zz_pipe.py" in overview[1]
    assert "is 50.0 MB, over Retort&#x27;s limit of 1 MB" in overview[1]
    assert "only its header was read" in panel[1]
    assert visit.peak < 20 * MB, f"the pages held {visit.peak} bytes"


def test_the_limit_is_configurable(inventory, settings, make_project, db):
    path = _huge(_versions(inventory), 2 * MB)
    settings.RETORT_MAX_REVISION_BYTES = 3 * MB
    project = make_project(inventory)

    index, _ = project.load_scripts()

    assert index.config.max_bytes == 3 * MB
    assert "huge00000001" in index.revisions
    assert not any(p.path == path.name for p in index.problems)


@pytest.mark.django_db
def test_a_long_function_is_shown_in_part_with_what_is_left_out_said(client_alice, demo_project):
    body = "\n".join(f"    op.execute('UPDATE t SET n = {i}')" for i in range(10_000))
    write_revision(
        _versions(Path(demo_project.alembic_ini)), "long00000001", inv.HEAD, body=body.strip()
    )

    html = client_alice.get(reverse("revision_panel", args=["inventory", "long00000001"]))

    text = html.content.decode()
    code = re.sub(
        r"<[^>]+>", "", text[text.index("<h3>upgrade()</h3>") : text.index("<h3>downgrade")]
    )
    assert html.status_code == 200
    assert "UPDATE t SET n = 0&#x27;" in code or "UPDATE t SET n = 0'" in code
    assert "UPDATE t SET n = 9999" not in code
    assert code.strip().endswith(
        "more lines, not shown here: open long00000001_change.py to read them."
    )
