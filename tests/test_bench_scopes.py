"""Every figure bench/RESULTS.md can show says in one line what its timer holds and what it
does not (bench/scopes.py): the figures named in the bench's code, each looked up."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from bench.report import Figure, Report, render
from bench.scopes import SCOPES

BENCH = Path(__file__).resolve().parent.parent / "bench"
# the start of a figure's name, as the bench's code writes it: "7c. …" or f"13a. …"
NAMED = re.compile(r'Figure\(\s*f?"(\d+[a-z]?)\.', re.MULTILINE)


def test_every_figure_the_bench_names_has_a_scope_line():
    named = {match for path in BENCH.glob("*.py") for match in NAMED.findall(path.read_text())}

    assert len(named) >= 60  # the pattern still finds the figures
    assert sorted(named - set(SCOPES)) == []
    assert sorted(set(SCOPES) - named) == []  # and no line for a figure that is gone


def test_the_results_say_each_figures_scope_once_under_the_table():
    report = Report("make bench", datetime(2026, 12, 6), {})
    report.add(
        Figure("7c. Retort: the job", "1 s"),
        Figure("13a. Cold read, 1,000", "1 s"),
        Figure("13a. Cold read, 2,000", "2 s"),
    )

    text = render(report)

    section = text[text.index("## What each figure times") :]
    assert section.count("- **13a.**") == 1 and "- **7c.** inside: `execution.job_run`" in section
    assert "no scope written" not in section
