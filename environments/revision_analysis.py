"""What a revision file does, read statically (parsed, never run) and kept while the file is
unchanged: its risks (`core/findings`) and the tables it touches. The plan's risks
(`risks.py`), the graph's flagged nodes and the revision panel all read it here."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings

from environments.core import findings as core_findings
from environments.core import lock_waits, run_limits
from environments.core.findings import locks as lock_review
from environments.core.revision_files import FileCache, too_large
from environments.core.revision_headers import RevisionFile
from environments.core.scripts import ScriptIndex

_findings_cache = FileCache()
_touches_cache = FileCache()
_limits_cache = FileCache()
_outside_cache = FileCache()
_locks_cache = FileCache()


def revision_findings(revision: RevisionFile) -> list[core_findings.Finding] | str:
    """Static findings of one revision file, cached by size and mtime; a sentence on failure."""
    return _static_read(revision, _findings_cache, core_findings.analyze)


def revision_touches(revision: RevisionFile) -> list[core_findings.Touch] | str:
    """The tables and columns a revision file creates, alters or drops; a sentence on failure."""
    return _static_read(revision, _touches_cache, core_findings.touches)


def revision_limits(revision: RevisionFile) -> list[run_limits.Ask] | str:
    """The timeouts a revision file asks for (`core/run_limits.py`); a sentence when a
    declaration cannot be read."""

    def read(source: bytes) -> list[run_limits.Ask]:
        return run_limits.declared(source.decode("utf-8", "replace"), revision.revision)

    return _static_read(revision, _limits_cache, read)


def revision_lock_findings(revision: RevisionFile) -> list[lock_review.LockFinding] | str:
    """The lock-aware review of a revision file (`core/findings/locks.py`); a sentence when
    the file cannot be read."""
    return _static_read(revision, _locks_cache, lock_review.lock_findings)


def revision_outside_transaction(revision: RevisionFile) -> bool | str:
    """Whether a revision file runs work outside a transaction (`autocommit_block`,
    CONCURRENTLY), which makes a failed run of it unsafe to try again; a sentence when the
    file cannot be read."""

    def read(source: bytes) -> bool:
        return lock_waits.outside_transaction(source.decode("utf-8", "replace"))

    return _static_read(revision, _outside_cache, read)


def _static_read(revision: RevisionFile, cache: FileCache, read):
    """`read(source)` of a revision file (parsed, never run), kept while the file is unchanged;
    a sentence when the file cannot be read, is too large, or cannot be parsed."""
    path = revision.path
    try:
        stat = path.stat()
    except OSError as exc:
        return f"{path.name} cannot be read: {exc.strerror}"
    oversized = too_large(stat.st_size, settings.RETORT_MAX_REVISION_BYTES)
    if oversized:
        return f"{path.name} {oversized}."

    def compute():
        try:
            return read(path.read_bytes())
        except (OSError, ValueError) as exc:
            return f"{path.name} could not be analysed: {exc}"

    return cache.get_or_compute(path, stat.st_size, stat.st_mtime_ns, compute)


def finding_dict(finding: core_findings.Finding) -> dict[str, object]:
    return asdict(finding) | {"severity": finding.severity}


def destructive_revisions(index: ScriptIndex) -> frozenset[str]:
    flagged = set()
    for revision in index.revisions.values():
        found = revision_findings(revision)
        if isinstance(found, list) and any(
            f.function == "upgrade" and f.severity == "danger" for f in found
        ):
            flagged.add(revision.revision)
    return frozenset(flagged)
