"""bench/RESULTS.md: the command, the machine, and each figure against its aim."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.scopes import SCOPES, figure_id

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass(frozen=True)
class Figure:
    """One measured figure; `met` is None when the figure has no aim (information only)."""

    name: str
    measured: str
    aim: str = "—"
    met: bool | None = None
    remark: str = ""

    @property
    def verdict(self) -> str:
        word = {True: "yes", False: "**no**", None: "info"}[self.met]
        return f"{word} ({self.remark})" if self.remark else word


@dataclass
class Report:
    command: str
    started_at: datetime
    machine: dict[str, str]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)


def command_line() -> str:
    """`make bench` when make started us (it sets MAKELEVEL), and the command line it ran."""
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    direct = f"{python} -m bench"
    url = os.environ.get("DATABASE_URL")
    if url:
        shown = make_url(url).render_as_string(hide_password=True)
        direct = f"DATABASE_URL={shown} {direct}"
    if os.environ.get("MAKELEVEL"):
        return f"`make bench`, which ran `{direct}`"
    return f"`{direct}`"


def machine_facts(postgres_version: str) -> dict[str, str]:
    return {
        "nproc (usable CPUs)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "OS": platform.platform(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "PostgreSQL server": postgres_version,
        "packages": ", ".join(
            f"{name} {metadata.version(name)}" for name in ("Django", "alembic", "SQLAlchemy")
        )
        + f", psycopg2 {metadata.version('psycopg2-binary')}",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def render(report: Report) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by the benchmark itself; every run overwrites this file.",
        "",
        f"- **Command:** {report.command} (DATABASE_URL names only the server: the bench "
        "creates, uses and drops its own databases `retort_bench_<pid>*` there)",
        f"- **Date:** {report.started_at:%Y-%m-%d %H:%M:%S %Z}",
        f"- **Whole run took:** {report.duration:.1f} s",
    ]
    lines += [f"- **{name}:** {value}" for name, value in report.machine.items()]
    lines += ["", "| Figure | Measured | Aim | Met |", "|---|---|---|---|"]
    lines += [
        "| " + " | ".join(_cell(text) for text in (f.name, f.measured, f.aim, f.verdict)) + " |"
        for f in report.figures
    ]
    lines += ["", "## What each figure times", ""]
    seen: list[str] = []
    for figure in report.figures:
        key = figure_id(figure.name)
        if key not in seen:
            seen.append(key)
            lines.append(f"- **{key}.** {SCOPES.get(key, '**no scope written for it**')}")
    if report.notes:
        lines += ["", "## How it was measured", ""]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A table cell: a `|` in the text would end it."""
    return text.replace("|", "\\|")


def write(report: Report, path: Path = RESULTS) -> Path:
    path.write_text(render(report), encoding="utf-8")
    return path
