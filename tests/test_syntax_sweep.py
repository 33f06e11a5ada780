"""Many revision files are compiled on two cores while their headers are read: every syntax
error is still found, in the same words, whichever process compiled its file — and a child
that dies leaves no file unchecked."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from environments.core import script_config, scripts, syntax_check
from examples.synthetic import write_history

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no sweep is made")


def _broken(directory: Path, names: list[str]) -> list[str]:
    """Break the body of these revision files below their headers; their names."""
    for name in names:
        path = directory / name
        path.write_text(path.read_text().replace("def downgrade()", "def downgrade(:"))
    return names


@pytest.fixture
def history(tmp_path):  # noqa: ANN201
    written = write_history(tmp_path / "big", 400, seed=5)
    versions = written.directory / "migrations" / "versions"
    files = sorted(path.name for path in versions.glob("*.py"))
    # the first is compiled by the child, the last by the parent, one in the middle by either
    broken = _broken(versions, [files[0], files[len(files) // 2], files[-1]])
    return written, versions, broken


def _problems(history) -> dict[str, str]:  # noqa: ANN001
    written, _, _ = history
    index = scripts.load_index(script_config.config_from_ini(written.alembic_ini))
    assert len(index.revisions) == 400  # the headers still read
    return {problem.path: problem.message for problem in index.problems}


def test_every_syntax_error_is_found_when_the_files_are_compiled_on_two_cores(history):
    _, versions, broken = history
    files = [
        (str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in versions.iterdir()
    ]
    assert syntax_check.sweep_start([], 10**6) is None  # nothing to compile: no child
    sweeping = syntax_check.sweep_start(files, 10**6)
    assert sweeping is not None
    sweeping.finish()
    assert all(
        syntax_check._syntax_cache.holds(*file) for file in files
    )  # a verdict for every file

    found = _problems(history)

    assert sorted(found) == sorted(broken)
    for message in found.values():
        assert message.startswith("syntax error on line ")
        assert "alembic cannot load the scripts" in message


def test_the_sweep_finds_what_compiling_one_file_at_a_time_finds(history, monkeypatch):
    made = []

    class Counted(syntax_check.Sweep):
        def __init__(self, files) -> None:  # noqa: ANN001
            made.append(len(files))
            super().__init__(files)

    monkeypatch.setattr(syntax_check, "Sweep", Counted)
    swept = _problems(history)
    assert made == [400]  # the read compiled on two cores
    syntax_check._syntax_cache.clear()
    scripts._index_cache.clear()
    monkeypatch.setattr(syntax_check, "SWEEP_FROM", 10**9)  # every file compiled when asked

    assert _problems(history) == swept
    assert made == [400]


def test_a_child_that_dies_leaves_no_file_unchecked(history, monkeypatch):
    _, versions, broken = history
    files = sorted(
        (str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in versions.iterdir()
    )

    def dies_having_claimed_ten(self, writer) -> None:  # noqa: ANN001
        for position in range(10):
            self.claims[position] = syntax_check._CHILD
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(syntax_check.Sweep, "_child", dies_having_claimed_ten)
    sweeping = syntax_check.Sweep(files)
    sweeping.finish()

    verdicts = {os.path.basename(path): syntax_check._syntax_cache[path][2] for path, _, _ in files}
    assert len(verdicts) == 400
    assert sorted(name for name, problem in verdicts.items() if problem) == sorted(broken)


def test_a_reader_that_asks_for_no_problems_compiles_nothing(history, monkeypatch):
    written, versions, _ = history
    made = []
    monkeypatch.setattr(syntax_check.Sweep, "__init__", lambda self, files: made.append(files))

    index = scripts.load_index(script_config.config_from_ini(written.alembic_ini), syntax=False)

    assert len(index.revisions) == 400 and made == []
    assert not any(str(path) in syntax_check._syntax_cache for path in versions.iterdir())
