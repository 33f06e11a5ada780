"""Generate synthetic Alembic projects with large, realistic revision histories.

Used by tests and benchmarks that need thousands of revisions with branches, merges and
``depends_on`` edges. The result is a complete Alembic project: ``alembic.ini``,
``migrations/env.py``, ``migrations/script.py.mako`` and ``migrations/versions/*.py``. The
``env.py`` and ``script.py.mako`` are copied from the inventory example, so the database
URL comes from ``DATABASE_URL``. Every revision other than a merge creates (and its
downgrade drops) a one-column table, so ``alembic upgrade heads`` really runs, on SQLite
too.

The shape of the history:

* one main line;
* every ``branch_every`` revisions, a side branch of ``branch_length`` revisions forks off
  the main line. The main line keeps growing alongside it, and a merge revision joins the
  two again. Merge revisions count towards ``n_revisions``;
* with ``depends_on_every=k``, every k-th revision (or, if it has no other branch to point
  at, the next revision that does) gets a ``depends_on`` on the tip of another open branch;
* with ``heads=k > 1``, the last revisions fork into k lines that are never merged, which
  leaves k heads;
* with ``label_every=k``, every k-th revision that is not a merge gets a branch label
  (``line_<position>``), as large projects label the lines they branch: ``label_every=20``
  labels about 5 % of the history.

The same arguments and seed always give the same ids, messages, dates and files.

Command line::

    python -m examples.synthetic DIR --revisions 2000 [--seed N] [--heads K]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SyntheticHistory", "write_history", "main"]

_TEMPLATE_DIR = Path(__file__).resolve().parent / "inventory" / "migrations"
_START_DATE = dt.datetime(2024, 1, 2, 9, 0, 0)
_SLUG_LENGTH = 40  # alembic's default truncate_slug_length

_VERBS = (
    "add",
    "drop",
    "rename",
    "index",
    "backfill",
    "split",
    "widen",
    "create",
    "archive",
    "tighten",
    "denormalize",
    "partition",
)
_WORDS = (
    "customer",
    "invoice",
    "ledger",
    "warehouse",
    "shipment",
    "price",
    "discount",
    "supplier",
    "account",
    "session",
    "audit",
    "payment",
    "refund",
    "tenant",
    "catalog",
    "region",
    "status",
    "timestamp",
    "column",
    "constraint",
    "lookup",
    "history",
    "snapshot",
    "quota",
)

_ALEMBIC_INI = """\
# Synthetic Alembic project written by examples/synthetic.py ({n} revisions, seed {seed}).
# migrations/env.py reads the database URL from the DATABASE_URL environment variable.

[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
path_separator = os


[post_write_hooks]


[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

_REVISION_FILE = '''\
"""{message}

Revision ID: {revision}
Revises:{revises}
Create Date: {create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "{revision}"
down_revision: str | Sequence[str] | None = {down_revision}
branch_labels: str | Sequence[str] | None = {branch_labels}
depends_on: str | Sequence[str] | None = {depends_on}


def upgrade() -> None:
    """Upgrade schema."""
    {upgrade}


def downgrade() -> None:
    """Downgrade schema."""
    {downgrade}
'''


@dataclass(frozen=True)
class SyntheticHistory:
    """What :func:`write_history` wrote. All revision lists are in creation order."""

    directory: Path
    alembic_ini: Path
    revisions: list[str]
    heads: list[str]
    merges: list[str]
    branch_points: list[str]
    labelled: list[str] = field(default_factory=list)  # revisions with a branch label


@dataclass
class _Revision:
    id: str
    down: tuple[str, ...]
    message: str
    created: dt.datetime
    depends_on: str | None = None
    label: str | None = None

    @property
    def is_merge(self) -> bool:
        return len(self.down) > 1


class _Planner:
    """Builds the revision graph in memory, in creation order (parents before children)."""

    def __init__(self, rng: random.Random, depends_on_every: int, message_words: int) -> None:
        self.rng = rng
        self.depends_on_every = depends_on_every
        self.message_words = message_words
        self.revisions: list[_Revision] = []
        self._ids: set[str] = set()
        self._clock = _START_DATE
        self._depends_on_due = False
        self._next_depends_on = depends_on_every

    def _new_id(self) -> str:
        while True:
            rev = f"{self.rng.getrandbits(48):012x}"
            # Skip all-digit ids so that no id can be mistaken for a number.
            if rev not in self._ids and not rev.isdigit():
                self._ids.add(rev)
                return rev

    def _tick(self) -> dt.datetime:
        self._clock += dt.timedelta(
            minutes=self.rng.randint(5, 3 * 24 * 60), microseconds=self.rng.randint(0, 999_999)
        )
        return self._clock

    def _message(self) -> str:
        count = self.message_words - 1
        if count <= len(_WORDS):
            words = self.rng.sample(_WORDS, count)
        else:
            words = self.rng.choices(_WORDS, k=count)
        return " ".join([self.rng.choice(_VERBS), *words])

    def add(self, parent: str | None, other_tips: Sequence[str] = ()) -> str:
        """Add an ordinary revision on top of ``parent``.

        ``other_tips`` are the tips of the other open branches that this revision may
        depend on (they must not be ancestors of ``parent``).
        """
        index = len(self.revisions)
        if self.depends_on_every and index >= self._next_depends_on:
            # Due at every multiple of depends_on_every, even if a merge landed on it.
            self._depends_on_due = True
            self._next_depends_on = (index // self.depends_on_every + 1) * self.depends_on_every
        depends_on = None
        if self._depends_on_due and other_tips:
            depends_on = self.rng.choice(list(other_tips))
            self._depends_on_due = False
        revision = _Revision(
            id=self._new_id(),
            down=(parent,) if parent is not None else (),
            message=self._message(),
            created=self._tick(),
            depends_on=depends_on,
        )
        self.revisions.append(revision)
        return revision.id

    def merge(self, parents: Sequence[str]) -> str:
        revision = _Revision(
            id=self._new_id(), down=tuple(parents), message="merge heads", created=self._tick()
        )
        self.revisions.append(revision)
        return revision.id


def _plan(
    n_revisions: int,
    *,
    seed: int,
    branch_every: int,
    branch_length: int,
    heads: int,
    depends_on_every: int,
    message_words: int,
) -> list[_Revision]:
    planner = _Planner(random.Random(seed), depends_on_every, message_words)

    # The last `tail` revisions fork into `heads` lines that are never merged.
    if heads > 1:
        per_head = 2 if n_revisions - 1 >= 2 * heads else 1
        tail = per_head * heads
    else:
        tail = 0
    body = n_revisions - tail

    main_tip: str | None = None
    fork: str | None = None  # the branch point, while a side branch is open
    side_tip: str | None = None
    side_left = 0
    main_moved = False  # has the main line grown since the fork?

    while len(planner.revisions) < body:
        index = len(planner.revisions)
        left = body - index
        if fork is None:
            if (
                branch_every
                and index > 0
                and index % branch_every == 0
                and left >= branch_length + 2  # the side branch, one main revision, the merge
            ):
                fork = side_tip = main_tip
                side_left = branch_length
                main_moved = False
            else:
                main_tip = planner.add(main_tip)
                continue

        assert main_tip is not None and side_tip is not None
        if side_left == 0 and main_moved:
            main_tip = planner.merge([main_tip, side_tip])
            fork = None
            continue
        # Revisions still required before the merge, plus the merge itself.
        needed = side_left + (0 if main_moved else 1) + 1
        choices = []
        if side_left:
            choices.append("side")
        if not main_moved or left > needed:
            choices.append("main")
        if planner.rng.choice(choices) == "side":
            others = [main_tip] if main_moved else []
            side_tip = planner.add(side_tip, others)
            side_left -= 1
        else:
            others = [side_tip] if side_tip != fork else []
            main_tip = planner.add(main_tip, others)
            main_moved = True

    if tail:
        assert main_tip is not None  # the body has at least one revision
        tips = [main_tip] * heads
        for step in range(tail):
            line = step % heads
            others = [tip for i, tip in enumerate(tips) if i != line and tip != main_tip]
            tips[line] = planner.add(tips[line], others)

    return planner.revisions


def _slug(message: str) -> str:
    slug = re.sub(r"\W", "_", message).lower()
    if len(slug) > _SLUG_LENGTH:
        slug = slug[:_SLUG_LENGTH].rsplit("_", 1)[0]
    return slug.strip("_")


def _render(revision: _Revision) -> str:
    if revision.is_merge:
        upgrade = downgrade = "pass"
    else:
        upgrade = (
            f'op.create_table(\n        "t_{revision.id}",\n'
            f'        sa.Column("id", sa.Integer(), primary_key=True),\n    )'
        )
        downgrade = f'op.drop_table("t_{revision.id}")'
    if not revision.down:
        down_revision = "None"
    elif len(revision.down) == 1:
        down_revision = f'"{revision.down[0]}"'
    else:
        down_revision = "(" + ", ".join(f'"{rev}"' for rev in revision.down) + ")"
    return _REVISION_FILE.format(
        message=revision.message,
        revision=revision.id,
        revises=" " + ", ".join(revision.down) if revision.down else "",
        create_date=revision.created,
        down_revision=down_revision,
        depends_on=f'"{revision.depends_on}"' if revision.depends_on else "None",
        branch_labels=f'("{revision.label}",)' if revision.label else "None",
        upgrade=upgrade,
        downgrade=downgrade,
    )


def write_history(
    directory: Path,
    n_revisions: int,
    *,
    seed: int = 0,
    branch_every: int = 40,
    branch_length: int = 5,
    heads: int = 1,
    depends_on_every: int = 0,
    message_words: int = 4,
    label_every: int = 0,
) -> SyntheticHistory:
    """Write an Alembic project with ``n_revisions`` revisions into ``directory``.

    ``directory`` is created if needed and must be empty. ``branch_every=0`` writes a
    straight line (apart from the ``heads`` fork at the end); ``depends_on_every=0`` writes
    no ``depends_on``. Raises ``ValueError`` for impossible arguments and
    ``FileExistsError`` if ``directory`` is not empty.
    """
    if n_revisions < 1:
        raise ValueError("n_revisions must be at least 1")
    if heads < 1:
        raise ValueError("heads must be at least 1")
    if heads > 1 and n_revisions < heads + 1:
        raise ValueError(f"{heads} heads need at least {heads + 1} revisions")
    if branch_every < 0 or depends_on_every < 0 or label_every < 0:
        raise ValueError("branch_every, depends_on_every and label_every must not be negative")
    if branch_every and branch_length < 1:
        raise ValueError("branch_length must be at least 1 when branch_every is set")
    if message_words < 1:
        raise ValueError("message_words must be at least 1")

    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty")

    revisions = _plan(
        n_revisions,
        seed=seed,
        branch_every=branch_every,
        branch_length=branch_length,
        heads=heads,
        depends_on_every=depends_on_every,
        message_words=message_words,
    )
    if label_every:
        for position, revision in enumerate(revisions):
            if not revision.is_merge and position % label_every == label_every - 1:
                revision.label = f"line_{position}"

    versions = directory / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copyfile(_TEMPLATE_DIR / name, directory / "migrations" / name)
    alembic_ini = directory / "alembic.ini"
    alembic_ini.write_text(_ALEMBIC_INI.format(n=n_revisions, seed=seed), encoding="utf-8")
    for revision in revisions:
        path = versions / f"{revision.id}_{_slug(revision.message)}.py"
        path.write_text(_render(revision), encoding="utf-8")

    children: dict[str, int] = {}
    for revision in revisions:
        for parent in revision.down:
            children[parent] = children.get(parent, 0) + 1
    return SyntheticHistory(
        directory=directory,
        alembic_ini=alembic_ini,
        revisions=[r.id for r in revisions],
        heads=[r.id for r in revisions if r.id not in children],
        merges=[r.id for r in revisions if r.is_merge],
        branch_points=[r.id for r in revisions if children.get(r.id, 0) > 1],
        labelled=[r.id for r in revisions if r.label],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.synthetic",
        description="Write a synthetic Alembic project with a large revision history.",
    )
    parser.add_argument("directory", type=Path, help="where to write it (must be empty)")
    parser.add_argument("--revisions", type=int, required=True, help="number of revisions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", type=int, default=1, help="number of unmerged heads")
    parser.add_argument("--branch-every", type=int, default=40)
    parser.add_argument("--branch-length", type=int, default=5)
    parser.add_argument("--depends-on-every", type=int, default=0)
    parser.add_argument("--message-words", type=int, default=4)
    parser.add_argument("--label-every", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        history = write_history(
            args.directory,
            args.revisions,
            seed=args.seed,
            branch_every=args.branch_every,
            branch_length=args.branch_length,
            heads=args.heads,
            depends_on_every=args.depends_on_every,
            message_words=args.message_words,
            label_every=args.label_every,
        )
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    print(
        f"wrote {len(history.revisions)} revisions to {history.directory}: "
        f"{len(history.heads)} head(s) {', '.join(history.heads)}; "
        f"{len(history.merges)} merges; {len(history.branch_points)} branch points"
    )
    print(
        "run: DATABASE_URL=sqlite:////tmp/synthetic.db "
        f"python -m alembic -c {history.alembic_ini} upgrade heads"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
