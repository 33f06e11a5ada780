"""How people write a rollout's waves and its failure policy, read into what the planner
takes: `canary: count=2 parallel=1` (a wave), `stop`, `continue`, `3`, `10%` (a policy)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from environments.models import Rollout
from environments.transitions import Refused

_NUMBER = re.compile(r"^\d{1,6}$")


@dataclass(frozen=True)
class WaveSpec:
    name: str
    labels: dict[str, str]
    count: int | None = None
    parallel: int = 4


def wave_parse(text: str) -> WaveSpec:
    """One wave as people write it: `canary: count=2 parallel=1`, `eu: region=eu parallel=8`,
    `rest: parallel=8` (a name, then labels the targets must have, how many at most, and how
    many run at once). Raises Refused with the reason."""
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not colon or not name:
        raise Refused(f"A wave is written 'name: label=value count=N parallel=N', not {text!r}.")
    labels: dict[str, str] = {}
    count, parallel = None, 4
    for word in rest.split():
        key, equals, value = word.partition("=")
        if not equals or not key or not value:
            raise Refused(f"In wave {name!r}, {word!r} is not key=value.")
        if key in ("count", "parallel"):
            if not _NUMBER.match(value) or int(value) < 1:
                raise Refused(f"In wave {name!r}, {key} must be a whole number of at least 1.")
            count, parallel = (int(value), parallel) if key == "count" else (count, int(value))
        else:
            labels[key] = value
    return WaveSpec(name=name[:100], labels=labels, count=count, parallel=min(parallel, 1000))


def failure_parse(text: str) -> tuple[str, int]:
    """`stop`, `continue`, `3` (allow 3 failures) or `10%` (allow 10 % of the targets)."""
    value = (text or "stop").strip().lower()
    if value in ("stop", "continue"):
        return value, 0
    if value.endswith("%") and _NUMBER.match(value[:-1]) and int(value[:-1]) <= 100:
        return Rollout.OnFailure.PERCENT, int(value[:-1])
    if _NUMBER.match(value):
        return Rollout.OnFailure.COUNT, int(value)
    raise Refused(
        f"{text!r} is not a failure policy: stop, continue, a number of failures (3) or a "
        "percentage of the targets (10%)."
    )
