"""Timeouts on a run against PostgreSQL: how long a statement may wait for a lock
(`lock_timeout`) and how long it may run (`statement_timeout`).

An `ALTER TABLE` that waits for its lock behind one long transaction makes every query of the
application queue behind *it*; a lock timeout turns that stall into a failed (and rolled back)
run. Each environment has a policy (default: wait at most 5 s for a lock, no statement limit),
handed to alembic's connection through libpq's PGOPTIONS, so no env.py is edited.

A revision that needs more says so, read statically (never imported), as a module constant or
a comment:

    retort_statement_timeout = "off"        # CREATE INDEX CONCURRENTLY takes its time
    # retort: lock_timeout=30s statement_timeout=2h

Durations are a number with a unit (`500ms`, `30s`, `2min`, `1h`; a bare number is seconds)
or `off` (no limit). A revision can only ask for more than the policy gives: the run gets,
for each setting, the most any of its revisions asks for (`off` being the most).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

SETTINGS = ("lock_timeout", "statement_timeout")
UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
OFF_WORDS = {"off", "none", "no", "0"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
_COMMENT = re.compile(r"^\s*#\s*retort\s*:(.*)$", re.IGNORECASE)
_CONSTANT = {f"retort_{name}": name for name in SETTINGS}


class LimitError(ValueError):
    """A declaration Retort cannot read as a duration: the sentence says where and why."""


def parse_duration(value: object) -> float:
    """Seconds (0: no limit) from `30s`, `500ms`, `2min`, `1h`, `off`, a number of seconds or
    None. Raises LimitError."""
    if value is None or value is False:
        return 0.0
    if isinstance(value, bool):
        raise LimitError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in OFF_WORDS:
            return 0.0
        match = _DURATION.match(text)
        if not match or match.group(2) not in {"", *UNITS}:
            raise LimitError(f"{value!r} is not a duration (e.g. 500ms, 30s, 2min, 1h, off)")
        seconds = float(match.group(1)) * UNITS.get(match.group(2) or "s", 1.0)
    else:
        raise LimitError(f"{value!r} is not a duration (e.g. 500ms, 30s, 2min, 1h, off)")
    if not math.isfinite(seconds) or seconds < 0 or seconds > 7 * 86400:
        raise LimitError(f"{value!r} is not a duration between 0 and 7 days")
    return seconds


def describe(seconds: float) -> str:
    """A duration as people write it: `5 s`, `500 ms`, `2 min`, `off`."""
    if seconds <= 0:
        return "off"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Ask:
    """One revision's request for a setting."""

    revision: str
    setting: str
    seconds: float
    line: int


def declared(source: str, revision: str) -> list[Ask]:
    """What a revision file asks for, read statically: `retort_<setting> = <value>` at module
    level and `# retort: <setting>=<value> …` comments. Raises LimitError (with the line)."""
    asks: list[Ask] = []
    for number, line in enumerate(source.splitlines(), start=1):
        match = _COMMENT.match(line)
        if not match:
            continue
        for part in re.split(r"[\s,]+", match.group(1).strip()):
            if not part:
                continue
            name, _, value = part.partition("=")
            if name not in SETTINGS or not value:
                raise LimitError(
                    f"line {number}: {part!r} is not one of "
                    f"{', '.join(f'{s}=<duration>' for s in SETTINGS)}"
                )
            asks.append(_ask(revision, name, value, number))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return asks  # the index reports the syntax error itself
    for statement in tree.body:
        if not isinstance(statement, ast.Assign | ast.AnnAssign):
            continue
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id in _CONSTANT:
                try:
                    value = ast.literal_eval(statement.value) if statement.value else None
                except ValueError:
                    raise LimitError(
                        f"line {statement.lineno}: {target.id} must be a literal duration "
                        '(e.g. "30s" or "off")'
                    ) from None
                asks.append(_ask(revision, _CONSTANT[target.id], value, statement.lineno))
    return asks


def _ask(revision: str, setting: str, value: object, line: int) -> Ask:
    try:
        return Ask(revision, setting, parse_duration(value), line)
    except LimitError as exc:
        raise LimitError(f"line {line}: {setting}: {exc}") from None


@dataclass(frozen=True)
class RunLimits:
    """The timeouts of one run, in seconds (0: no limit), and the revisions that raised them."""

    lock_timeout: float
    statement_timeout: float
    raised_by: tuple[Ask, ...] = field(default=())
    attempts: int = 1  # tries on a lock timeout (see `lock_retries.py`); 1: no retry
    backoff: float = 0.0  # seconds before the first retry, doubled before each next one

    def pgoptions(self) -> str:
        """libpq's PGOPTIONS for them (whole milliseconds; 0 is PostgreSQL's "no limit")."""
        return " ".join(f"-c {name}={round(getattr(self, name) * 1000)}" for name in SETTINGS)

    def sentence(self) -> str:
        text = ", ".join(f"{name} {describe(getattr(self, name))}" for name in SETTINGS)
        asks = "; ".join(
            f"{ask.revision} asks for {ask.setting} {describe(ask.seconds)} (line {ask.line})"
            for ask in self.raised_by
        )
        return f"{text} ({asks})" if asks else text

    def retries(self) -> str:
        if self.attempts <= 1:
            return "a run that times out waiting for a lock is not tried again"
        return (
            f"a run that times out waiting for a lock is tried up to {self.attempts} times, "
            f"{describe(self.backoff)} after the first attempt, each wait twice the one before"
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (from 1)."""
        return self.backoff * 2 ** (attempt - 1)

    def as_json(self) -> dict:
        return {
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "raised_by": [ask.__dict__ for ask in self.raised_by],
            "attempts": self.attempts,
            "backoff": self.backoff,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunLimits:
        return cls(
            float(data["lock_timeout"]),
            float(data["statement_timeout"]),
            tuple(Ask(**ask) for ask in data.get("raised_by", [])),
            int(data.get("attempts", 1)),  # a plan made before retries: none
            float(data.get("backoff", 0.0)),
        )


def _more(a: float, b: float) -> bool:
    """`a` allows more than `b` (0 is no limit, the most)."""
    return (a == 0 and b != 0) or (b != 0 and a > b)


def run_limits(
    lock_timeout: float,
    statement_timeout: float,
    asks: Iterable[Ask],
    *,
    attempts: int = 1,
    backoff: float = 0.0,
) -> RunLimits:
    """The policy's limits, raised where a revision asks for more."""
    values = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}
    raised: list[Ask] = []
    for ask in asks:
        if _more(ask.seconds, values[ask.setting]):
            values[ask.setting] = ask.seconds
            raised = [other for other in raised if other.setting != ask.setting] + [ask]
    return RunLimits(
        values["lock_timeout"], values["statement_timeout"], tuple(raised), attempts, backoff
    )
