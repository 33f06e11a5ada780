"""What a full read of a project's scripts found, kept for the CI gate while none of their
files changed.

A full read builds Alembic's map over every revision file (environments/core/scripts.py);
the gate only needs three of its answers: the heads, whether a database holding exactly them
is current (Alembic's own plan from there, worked out on the full read), and the project's
heads verdict. The workers' and the gate's reads store those with the key they hold for: the
project's script settings and where its paths lead now (links followed), the Alembic version
that answered, and the size, mtime, ctime and inode of alembic.ini, pyproject.toml, every
revision file Alembic would load (listed as the full read lists them) and every module of the
project a header's name was looked up in. The gate resolves the locations again, lists and
stats those files again; when everything is as it was, it has the answers without importing
Alembic or SQLAlchemy. Anything that changed, or a digest never written, sends it the full
way. (A file rewritten with the same size and times while a full read is storing its digest
could go unseen until it changes again; ctime cannot be set back by hand.)

Pages never write here: a GET renders what workers stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from environments.core import script_config
from environments.core.heads import HeadsVerdict
from environments.core.revision_files import list_revision_files
from environments.core.script_config import ScriptConfig
from environments.core.status import Status, evaluate
from environments.core.versions import VersionRead
from environments.models import Project, ScriptsDigest

if TYPE_CHECKING:
    from environments.core.scripts import ScriptIndex

# bump when what a digest holds, or what its key covers, changes: older ones are not used
FORMAT = 2


@dataclass(frozen=True)
class Answer:
    """What the gate reuses: the script heads (in the index's order), whether a database at
    exactly those heads is current, and the heads verdict."""

    heads: tuple[str, ...]
    current_at_heads: bool
    verdict: HeadsVerdict


def _stat(path: str | Path) -> list[int] | None:
    """Size, mtime, ctime and inode (None: no such file): a file replaced, or rewritten with
    its size and mtime kept (reproducible builds fix mtimes), still shows."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]


def _jsonable(value: object) -> object:
    """`value` as it reads back from a JSON column (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def _settings_of(project: Project) -> dict[str, object]:
    """The project's settings a read of its scripts depends on, and the files it reads them
    from (their size and mtime: an edited alembic.ini may move the scripts)."""
    run_dir = project.run_dir
    return {
        "alembic": importlib.metadata.version("alembic"),  # whose answers these are
        "alembic_ini": project.alembic_ini,
        "alembic_ini_is": os.path.realpath(project.alembic_ini) if project.alembic_ini else "",
        "run_dir_is": os.path.realpath(run_dir),
        "script_location": project.script_location,
        "version_locations": list(project.version_locations or []),
        "recursive": project.recursive_version_locations,
        "run_dir": str(run_dir),
        "multiple_heads": project.multiple_heads,
        "max_bytes": settings.RETORT_MAX_REVISION_BYTES,
        "ini": _stat(Path(project.alembic_ini)) if project.alembic_ini else None,
        "pyproject": _stat(run_dir / "pyproject.toml"),
    }


def _config_from(data: dict) -> ScriptConfig:
    location, versions, recursive, base, roots = data["written"]
    return ScriptConfig(
        script_location=Path(data["script_location"]),
        version_locations=tuple(Path(p) for p in data["version_locations"]),
        recursive=data["recursive"],
        import_roots=tuple(Path(p) for p in data["import_roots"]),
        warnings=tuple(data["warnings"]),
        max_bytes=data["max_bytes"],
        written=(location, tuple(versions), recursive, base, tuple(roots)),
    )


def _key(
    project: Project,
    config: ScriptConfig,
    files: object,
    refused: object,
    modules: object,
) -> dict[str, object]:
    """What a digest holds for: the settings, the config, and every file's size and mtime."""
    return {
        "format": FORMAT,
        "settings": _settings_of(project),
        "config": dataclasses.asdict(config),
        # as listed (size, mtime), then ctime and inode
        "files": [[*file, *(_stat(file[0]) or [None, None])[2:]] for file in files],
        "refused": refused,
        "modules": [[path, _stat(path)] for path, _ in modules],
    }


def _hash(key: object) -> str:
    """The key's hash, the same before and after a JSON round trip (tuples dump as lists)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def digest_store(project: Project, index: ScriptIndex | None) -> None:
    """Keep what this full read of the project's scripts found, for the gate (a worker's or
    the gate's read; never a page). Nothing is kept for scripts Alembic cannot map."""
    if index is None or index.revision_map is None:
        ScriptsDigest.objects.filter(project=project).delete()
        return
    _, files, refused = index.fingerprint
    key = _key(project, index.config, files, refused, index.modules)
    key_hash = _hash(key)
    if ScriptsDigest.objects.filter(project=project, key_hash=key_hash).exists():
        return  # an unchanged project: a worker's every read lands here
    ScriptsDigest.objects.update_or_create(
        project=project,
        defaults={
            "key_hash": key_hash,
            "key": _jsonable(key),
            "answer": _answer_of(project, index),
        },
    )


def _answer_of(project: Project, index: ScriptIndex) -> dict[str, object]:
    at_heads = evaluate(index, VersionRead(heads=tuple(sorted(index.heads))))
    verdict = project.heads_verdict(index)
    return {
        "heads": list(index.heads),
        "current_at_heads": at_heads.status == Status.CURRENT,
        "verdict": {"expected": verdict.expected, "sentence": verdict.sentence},
    }


def digest_answer(project: Project) -> Answer | None:
    """The stored answers for the project's scripts, if every file they were read from is as
    it was (None: the gate reads the scripts the full way)."""
    stored = ScriptsDigest.objects.filter(project=project).first()
    if stored is None or stored.key.get("format") != FORMAT:
        return None
    try:
        config = _config_from(stored.key["config"])
        if script_config.resolved_again(config) != config:
            return None  # a link now leads elsewhere: the scripts may have moved
        refused: list[tuple[str, str]] = []
        files = list_revision_files(config, refused)  # listed and stat'ed as a full read does
        modules = [(path, None) for path, _ in stored.key["modules"]]
        now = _jsonable(_key(project, config, files, refused, modules))
    except (KeyError, TypeError, ValueError, OSError, script_config.ScriptConfigError):
        return None
    if now != stored.key:
        return None
    heads = tuple(stored.answer["heads"])
    verdict = stored.answer["verdict"]
    return Answer(
        heads=heads,
        current_at_heads=bool(stored.answer["current_at_heads"]),
        verdict=HeadsVerdict(heads, bool(verdict["expected"]), verdict["sentence"]),
    )
