"""Figure 13: what a user waits for as a history grows from 1,000 to 20,000 revisions, 5 % of
them labelled — the cold read in a fresh process (with and without the syntax check), and the
overview, an environment and the graph with an environment picked, served by gunicorn over
HTTP, cold and warm; each against what the user would run instead, in the same run.

Figure 14: the CI gate for one database, `manage.py migration_status --env`, against `alembic
current` of the same database.

Imported only after django.setup().
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from bench import load
from bench.load import login
from bench.report import Figure
from environments import reads, roles
from environments.core import syntax_check
from environments.models import Environment, Project
from examples.synthetic import SyntheticHistory, write_history

REPO = Path(__file__).resolve().parent.parent
SIZES = (1_000, 2_000, 5_000, 10_000, 20_000)
ALEMBIC_UP_TO = 10_000  # alembic's own tools take minutes beyond
SHAPE = {"seed": 2, "branch_every": 40, "depends_on_every": 50, "label_every": 20}
BEHIND = {"dev": 0, "staging": 30, "prod": 200}  # revisions behind the head, by creation order
PAGES = ("overview", "environment", "graph")
WARM = 5
USER, PASSWORD = "bench-growth", "bench-growth-password"

# Peak RSS from /proc/self/status (VmHWM, this process's own memory since exec): ru_maxrss
# would carry the forking parent's peak over into the child.
_READ = """
import json, resource, sys, time
from environments.core import script_config, scripts, syntax_check
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
checked = sys.argv[2] == "checked"
if not checked:  # the headers and the map alone: no file compiled
    syntax_check.SWEEP_FROM = 10**12
config = script_config.config_from_ini(sys.argv[1])
before = peak()
started = time.perf_counter()
index = scripts.load_index(config)
read = time.perf_counter() - started
problems = index.problems if checked else []
total = time.perf_counter() - started
peak = peak()
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the compiling child, if any
print(json.dumps({"read": read, "total": total, "before": before, "peak": peak, "child": child,
                  "revisions": len(index.revisions), "heads": list(index.heads),
                  "problems": len(problems), "fatal": index.fatal}))
"""

_ALEMBIC_READ = """
import json, sys, time
from alembic.config import Config
from alembic.script import ScriptDirectory
started = time.perf_counter()
directory = ScriptDirectory.from_config(Config(sys.argv[1]))
count = sum(1 for _ in directory.walk_revisions())
print(json.dumps({"seconds": time.perf_counter() - started, "revisions": count}))
"""


@dataclass(frozen=True)
class ColdRead:
    read: float  # load_index in a fresh process (imports before the timer), no file compiled
    checked: float  # another fresh process: load_index + index.problems, every file compiled
    before_mib: float  # that process's peak RSS before the read (Python + imports)
    peak_mib: float  # the larger peak of the two processes (the one that compiled, mostly)
    child_mib: float = 0.0  # the compiling child's peak RSS, its pages shared with it included


@dataclass
class Size:
    revisions: int
    labelled: int
    retort: ColdRead | None = None
    alembic_walk: float | None = None  # fresh ScriptDirectory + walk_revisions(), no bytecode
    cold: dict[str, float] = field(default_factory=dict)  # page → first request, fresh server
    warm: dict[str, list[float]] = field(default_factory=dict)  # page → later requests
    worker_mib: float = 0.0  # the gunicorn worker's peak RSS (VmHWM), largest of the pages
    alembic_history: float | None = None  # `python -m alembic history`, whole CLI process
    alembic_current: dict[str, float] = field(default_factory=dict)  # environment → CLI

    @property
    def read_ratio(self) -> float | None:
        if self.alembic_walk is None or self.retort is None:
            return None
        return self.alembic_walk / self.retort.read

    @property
    def read_ratio_with_syntax(self) -> float | None:
        if self.alembic_walk is None or self.retort is None:
            return None
        return self.alembic_walk / self.retort.checked

    def warm_median(self, page: str) -> float:
        return statistics.median(self.warm[page])


@dataclass(frozen=True)
class Gate:
    retort: tuple[float, ...]  # manage.py migration_status --project P --env prod
    alembic: tuple[float, ...]  # python -m alembic -c alembic.ini current, same database
    output: str
    first: float = 0.0  # the first gate after the project was registered: a full read


@dataclass
class GrowthFigures:
    sizes: list[Size]
    gate: Gate | None = None


# --- one history -----------------------------------------------------------------------------


def _python(code: str, *args: str, env: dict | None = None, cwd: Path = REPO) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cold_read(history: SyntheticHistory) -> ColdRead:
    """Two fresh processes: the index alone (no file compiled), then the index with the syntax
    check as shipped (`index.problems`; many files are compiled on both cores while the
    headers are read)."""
    plain = _python(_READ, str(history.alembic_ini), "plain")
    checked = _python(_READ, str(history.alembic_ini), "checked")
    for found in (plain, checked):
        if found["revisions"] != len(history.revisions) or found["fatal"] or found["problems"]:
            raise RuntimeError(f"Retort read the history as {found}")
    return ColdRead(
        plain["read"],
        checked["total"],
        checked["before"] / 1024,
        max(plain["peak"], checked["peak"]) / 1024,
        checked["child"] / 1024,
    )


def _no_bytecode(history: SyntheticHistory) -> dict[str, str]:
    shutil.rmtree(history.directory / "migrations" / "versions" / "__pycache__", True)
    return {"PYTHONDONTWRITEBYTECODE": "1"}


def alembic_walk(history: SyntheticHistory) -> float:
    found = _python(_ALEMBIC_READ, str(history.alembic_ini), env=_no_bytecode(history))
    if found["revisions"] != len(history.revisions):
        raise RuntimeError(f"alembic walked {found['revisions']} revisions")
    return found["seconds"]


def alembic_cli(history: SyntheticHistory, *args: str, url: str | None = None) -> float:
    """`python -m alembic -c alembic.ini <args>` in the history's folder, wall clock."""
    env = {**os.environ, **_no_bytecode(history)}
    if url:
        env["DATABASE_URL"] = url
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", *args],
        cwd=history.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"alembic {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds


def stamped(history: SyntheticHistory, folder: Path) -> dict[str, str]:
    """A SQLite database per environment holding the revision it is behind at, written with
    sqlite3 (alembic's own stamp would take minutes at 20,000 labelled revisions)."""
    urls = {}
    order = history.revisions
    for name, behind in BEHIND.items():
        path = folder / f"{name}.sqlite"
        path.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
            revision = history.heads[0] if behind == 0 else order[len(order) - 1 - behind]
            connection.execute("INSERT INTO alembic_version VALUES (?)", [revision])
            connection.commit()
        urls[name] = f"sqlite:///{path}"
    return urls


def register(history: SyntheticHistory, urls: dict[str, str]) -> Project:
    project = Project.objects.create(
        name=f"growth {len(history.revisions)}",
        slug=f"growth-{len(history.revisions)}",
        alembic_ini=str(history.alembic_ini),
    )
    for position, (name, url) in enumerate(urls.items()):
        environment = Environment(project=project, name=name, slug=name, position=position)
        environment.set_url(url)
        environment.save()
    # what the workers' scheduled read does before anyone opens a page (untimed)
    reads.environments_read(environments=list(project.environments.select_related("project")))
    return project


# --- pages over HTTP ---------------------------------------------------------------------------


def bench_user() -> None:
    user, _ = get_user_model().objects.get_or_create(username=USER)
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(Group.objects.get(name=roles.VIEWER))


@contextlib.contextmanager
def served() -> Iterator[tuple[str, Callable[[], float]]]:
    """gunicorn with one sync worker on the bench's own dashboard database, data folder and
    keys (os.environ); yields the base URL and a function giving the worker's peak RSS, MiB."""
    with load.served(dict(os.environ), workers=1, timeout=600) as (base, master):
        yield base, _worker_peak(master)


def _worker_peak(master: int) -> Callable[[], float]:
    def peak() -> float:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    return peak


def page_urls(project: Project) -> dict[str, str]:
    return {
        "overview": "/",
        "environment": f"/projects/{project.slug}/environments/prod/",
        "graph": f"/projects/{project.slug}/graph?env=prod",
    }


_SHOWS = {  # what each page must show, or the figure is of an error page
    "overview": b"behind",
    "environment": b"behind",
    "graph": b"<svg",
}


def over_http(
    path: str, shows: bytes, *, username: str = USER, password: str = PASSWORD
) -> tuple[list[float], float]:
    """GET `path` from a freshly started server, once cold and WARM times warm: the client's
    wall clock of each request (it must answer 200 and show `shows`), and the worker's peak
    RSS in MiB."""
    with served() as (base, peak):
        opener = login(base, username, password)  # the login page reads no scripts
        times = []
        for _ in range(1 + WARM):
            started = time.perf_counter()
            with opener.open(base + path, timeout=600) as response:
                body = response.read()
                status = response.status
            times.append(time.perf_counter() - started)
            if status != 200 or shows not in body:
                raise RuntimeError(f"GET {path}: {status}, without {shows!r}")
        return times, peak()


def time_pages(size: Size, project: Project) -> None:
    """Each page cold (the first request to a freshly started server) and warm."""
    for page, path in page_urls(project).items():
        times, mib = over_http(path, _SHOWS[page])
        size.cold[page], size.warm[page] = times[0], times[1:]
        size.worker_mib = max(size.worker_mib, mib)


# --- the run -----------------------------------------------------------------------------------


def measure(tmp: Path, *, sizes=SIZES, log: Callable[[str], None] = print) -> GrowthFigures:
    bench_user()
    figures = GrowthFigures([])
    for revisions in sizes:
        history = write_history(tmp / f"growth-{revisions}", revisions, **SHAPE)
        size = Size(revisions, len(history.labelled))
        figures.sizes.append(size)
        size.retort = cold_read(history)
        log(
            f"growth: {revisions} revisions ({size.labelled} labelled): cold read "
            f"{size.retort.read:.2f} s, with the syntax check {size.retort.checked:.2f} s, peak "
            f"{size.retort.peak_mib:.0f} MiB"
        )
        urls = stamped(history, tmp / f"growth-{revisions}")
        project = register(history, urls)
        try:
            time_pages(size, project)
        finally:
            project.delete()
        log(
            "growth: pages cold/warm "
            + ", ".join(
                f"{page} {size.cold[page]:.2f}/{size.warm_median(page):.2f} s" for page in PAGES
            )
        )
        if revisions <= ALEMBIC_UP_TO:
            size.alembic_walk = alembic_walk(history)
            size.alembic_history = alembic_cli(history, "history")
            for name, url in urls.items():
                size.alembic_current[name] = alembic_cli(history, "current", url=url)
            log(
                f"growth: alembic walk {size.alembic_walk:.2f} s, history "
                f"{size.alembic_history:.2f} s, current ×3 "
                f"{sum(size.alembic_current.values()):.2f} s"
            )
        shutil.rmtree(history.directory, ignore_errors=True)
    return figures


# --- the CI gate ---------------------------------------------------------------------------


def measure_gate(tmp: Path, *, rounds: int = 6) -> Gate:
    """`manage.py migration_status --project P --env prod` against `alembic current` of the
    same database (the sample project's, at head, SQLite), alternating, each a new process.
    The gate's first run after the project is registered reads the scripts in full (with
    Alembic) and stores their digest; it is timed on its own, before the rounds."""
    inventory = REPO / "examples" / "inventory"
    path = tmp / "gate-prod.sqlite"
    url = f"sqlite:///{path}"
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"],
        cwd=inventory, env={**os.environ, "DATABASE_URL": url}, check=True, capture_output=True,
    )  # fmt: skip
    project = Project.objects.create(
        name="gate", slug="gate", alembic_ini=str(inventory / "alembic.ini")
    )
    prod = Environment(project=project, name="prod", slug="prod", position=0)
    prod.set_url(url)
    prod.save()
    gate = [sys.executable, "manage.py", "migration_status", "--project", "gate", "--env", "prod"]
    current = [sys.executable, "-m", "alembic", "-c", "alembic.ini", "current"]
    # both sides as installed: bytecode where pip (or an earlier run) wrote it
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: dict[str, list[float]] = {"retort": [], "alembic": []}
    said = ""

    def run(side: str) -> float:
        nonlocal said
        argv, cwd = (gate, REPO) if side == "retort" else (current, inventory)
        env = {**base, **({"DATABASE_URL": url} if side == "alembic" else {})}
        started = time.perf_counter()
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{side} failed:\n{result.stdout}{result.stderr[-2000:]}")
        if side == "retort":
            said = result.stdout.strip()
        return elapsed

    try:
        first = run("retort")
        for round_ in range(rounds):
            for side in ("retort", "alembic") if round_ % 2 == 0 else ("alembic", "retort"):
                times[side].append(run(side))
    finally:
        project.delete()
    return Gate(tuple(times["retort"]), tuple(times["alembic"]), said, first)


# --- figures -------------------------------------------------------------------------------

READ_AIM = 20.0  # × alembic's walk_revisions() at 10,000 labelled revisions
SYNTAX_AIM = 5.0  # × alembic, the read with the syntax check, at 2,000
BIG_SECONDS, BIG_MIB = 5.0, 250.0  # the cold read at 20,000 labelled revisions
GRAPH_AIM = 1.0  # seconds: the graph page with an environment picked, at 10,000


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def figures(f: GrowthFigures) -> list[Figure]:
    by_size = {size.revisions: size for size in f.sizes}
    lines: list[Figure] = []
    for size in f.sizes:
        read = size.retort
        assert read is not None
        alembic = (
            f"; alembic {_s(size.alembic_walk)}: {size.read_ratio:.1f}× without the syntax "
            f"check, {size.read_ratio_with_syntax:.1f}× with it"
            if size.alembic_walk is not None
            else "; alembic not run at this size"
        )
        lines.append(
            Figure(
                f"13a. Cold read, fresh process, {size.revisions:,} revisions "
                f"({size.labelled:,} labelled)",
                f"Retort `load_index` {_s(read.read)} without compiling; with the syntax check "
                f"(every file compiled, what the overview asks for) {_s(read.checked)}; peak RSS "
                f"{read.peak_mib:.0f} MiB ({read.before_mib:.0f} MiB before the read; the "
                f"compiling child's {read.child_mib:.0f} MiB, shared pages included){alembic}",
            )
        )
    for size in f.sizes:
        pages = "; ".join(
            f"{page} {_s(size.cold[page])} cold, {_s(size.warm_median(page))} warm"
            for page in PAGES
        )
        alternative = ""
        if size.alembic_history is not None:
            every = sum(size.alembic_current.values())
            alternative = (
                f"; `alembic history` {_s(size.alembic_history)}, `alembic current` of prod "
                f"{_s(size.alembic_current['prod'])}, of all three {_s(every)}"
            )
        lines.append(
            Figure(
                f"13b. Pages over HTTP (gunicorn, 1 worker), {size.revisions:,} revisions, 3 "
                "environments",
                f"{pages}; worker peak RSS {size.worker_mib:.0f} MiB{alternative}",
            )
        )
    ten, two, twenty = by_size.get(10_000), by_size.get(2_000), by_size.get(20_000)
    if ten is not None and ten.read_ratio is not None:
        lines.append(
            Figure(
                "13c. Cold read of 10,000 revisions, 5 % labelled: alembic `walk_revisions()` ÷ "
                "Retort `load_index` (no file compiled, as the workers and the gate read)",
                f"{ten.read_ratio:.1f}× (with the syntax check: {ten.read_ratio_with_syntax:.1f}×)",
                f"≥ {READ_AIM:g}×",
                ten.read_ratio >= READ_AIM,
            )
        )
    if two is not None and two.read_ratio_with_syntax is not None:
        lines.append(
            Figure(
                "13d. Cold read of 2,000 revisions with the syntax check: alembic ÷ Retort",
                f"{two.read_ratio_with_syntax:.1f}×",
                f"≥ {SYNTAX_AIM:g}×",
                two.read_ratio_with_syntax >= SYNTAX_AIM,
            )
        )
    if twenty is not None and twenty.retort is not None:
        read = twenty.retort
        lines.append(
            Figure(
                "13e. Cold read of 20,000 revisions, 5 % labelled: time and peak RSS",
                f"{_s(read.read)} (with the syntax check: {_s(read.checked)}), "
                f"{read.peak_mib:.0f} MiB (the larger of the two processes)",
                f"≤ {BIG_SECONDS:g} s and ≤ {BIG_MIB:g} MiB",
                read.read <= BIG_SECONDS and read.peak_mib <= BIG_MIB,
            )
        )
    if ten is not None:
        warm = ten.warm_median("graph")
        lines.append(
            Figure(
                "13f. The graph page with an environment picked, 10,000 revisions (warm; cold "
                "in 13b)",
                f"{_s(warm)} (cold {_s(ten.cold['graph'])})",
                f"≤ {GRAPH_AIM:g} s",
                warm <= GRAPH_AIM,
            )
        )
    if f.gate is not None:
        retort, alembic = statistics.median(f.gate.retort), statistics.median(f.gate.alembic)
        lines.append(
            Figure(
                "14. The CI gate for one database: `manage.py migration_status --env prod` ÷ "
                "`alembic current` (each a new process)",
                f"{retort / alembic:.2f}× (medians {_s(retort)} ÷ {_s(alembic)}, "
                f"n={len(f.gate.retort)}); it said “{f.gate.output}”. Its first run after "
                f"the project was registered read the scripts in full: {_s(f.gate.first)}",
                "≤ 1×",
                retort <= alembic,
            )
        )
    return lines


def note(f: GrowthFigures) -> str:
    shape = ", ".join(f"{key}={value}" for key, value in SHAPE.items())
    sizes = ", ".join(f"{size.revisions:,}" for size in f.sizes)
    return (
        f"Growth (13): `examples.synthetic.write_history(dir, N, {shape})` for N in {sizes} "
        "(every 20th revision that is not a "
        "merge carries a branch label). 13a: each read in a new Python process (`python -c`), "
        "its imports before the timer; Retort's `load_index` with no file compiled, and in "
        "another process `load_index` + `index.problems` as shipped (every file compiled; from "
        f"{syntax_check.SWEEP_FROM} files on, on both cores while the headers are read); "
        "alembic's `ScriptDirectory.from_config` + `walk_revisions()` with "
        "`__pycache__` removed and PYTHONDONTWRITEBYTECODE=1, as a first run after a checkout; "
        "peak RSS is the process's VmHWM (`/proc/self/status`). 13b: a project of 3 SQLite "
        "environments (the head, 30 and 200 revisions behind, written with sqlite3) read once "
        "by `reads.environments_read` as the workers do (untimed); gunicorn with one sync "
        "worker started afresh for each page; a logged-in client (urllib, over loopback) times "
        f"the first request (cold: scripts read, templates compiled) and {WARM} more (warm, "
        "median); the worker's peak RSS from /proc (VmHWM). The user's alternatives, each a "
        "whole `python -m alembic` process without bytecode: `history` for the graph, `current` "
        "per database for the overview and the environment page (alembic not run beyond "
        f"{ALEMBIC_UP_TO:,}). 14: `python manage.py migration_status --project gate --env prod` "
        "(Django start-up, the dashboard database, the read) and `python -m alembic -c "
        "alembic.ini current` of the same SQLite database at head, alternating, both with "
        "bytecode as installed; the gate's first run after the project was registered (a full "
        "read of the scripts, which stores their digest) is timed apart, before the rounds."
    )
