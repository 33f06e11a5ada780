"""A project's Alembic configuration, read through Alembic's own `Config` (alembic.ini and
pyproject.toml): where its revision files live, where its own modules are found, and what
Alembic warns about."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import sys
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ScriptConfigError(Exception):
    """The project's Alembic configuration cannot be turned into a script directory."""


@dataclass(frozen=True)
class ScriptConfig:
    """Where a project's revision files live, resolved to absolute paths."""

    script_location: Path
    version_locations: tuple[Path, ...]
    recursive: bool = False
    import_roots: tuple[Path, ...] = ()  # where the project's own modules are found
    warnings: tuple[str, ...] = ()  # what Alembic warns about the configuration
    # a revision file larger than this has only its header read: never compiled, analysed or
    # shown (a 57 MB file once took the web process to 17 GB)
    max_bytes: int = 1_000_000
    # the locations as written and where they were resolved from (`build_config`'s arguments),
    # so that what they resolve to now can be compared (`resolved_again`): a link switched to
    # another release moves the scripts without changing any file
    written: tuple = ()


def config_from_ini(
    ini_path: str | Path,
    *,
    section: str = "alembic",
    working_dir: str | Path | None = None,
    script_location: str | None = None,
    version_locations: Sequence[str] | None = None,
    recursive_version_locations: bool | None = None,
) -> ScriptConfig:
    """Resolve a project's script directory from its alembic.ini, as configuration only.

    The options are read by Alembic's own `Config`, from the ini and from the pyproject.toml
    in the folder alembic runs in (`[tool.alembic]`), so separators, `%(here)s`,
    `prepend_sys_path` and `recursive_version_locations` mean what they mean to alembic.
    Relative paths resolve against `working_dir` (where alembic runs, default: the ini's
    folder), like Alembic resolves them against its working directory. Arguments override the
    file. Alembic's warnings about the configuration come back in `ScriptConfig.warnings`.
    """
    from alembic.config import Config  # here: the models import this module
    from alembic.util import CommandError

    ini = Path(ini_path).resolve()
    if not ini.is_file():
        raise ScriptConfigError(f"The Alembic configuration file {ini} does not exist.")
    base = Path(working_dir).resolve() if working_dir else ini.parent
    config = Config(str(ini), toml_file=str(base / "pyproject.toml"), ini_section=section)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            location = script_location or config.get_alembic_option("script_location")
            if version_locations is None:
                version_locations = config.get_version_locations_list()
            if recursive_version_locations is None:
                recursive_version_locations = config.get_alembic_boolean_option(
                    "recursive_version_locations"
                )
            prepend = config.get_prepend_sys_paths_list() or []
        except (configparser.Error, UnicodeDecodeError, ValueError, CommandError) as exc:
            raise ScriptConfigError(f"{ini.name} could not be read: {exc}") from None
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ScriptConfigError(f"pyproject.toml could not be read: {exc}") from None
    if not location:
        raise ScriptConfigError(
            f"{ini.name} has no script_location in its [{section}] section; "
            "set one there or in Retort's project settings."
        )
    notes = tuple(dict.fromkeys(f"{ini.name}: {warning.message}" for warning in caught))
    found = build_config(
        str(location),
        [str(loc) for loc in version_locations or ()] or None,
        recursive=recursive_version_locations,
        base=base,
        import_roots=[base / path for path in prepend if path] + [ini.parent],
    )
    return dataclasses.replace(found, warnings=notes)


def build_config(
    script_location: str,
    version_locations: Sequence[str] | None = None,
    *,
    recursive: bool = False,
    base: Path,
    import_roots: Sequence[Path] = (),
) -> ScriptConfig:
    root = _resolve(script_location, base)
    if version_locations:
        locations = tuple(_resolve(loc, base) for loc in version_locations)
    else:
        locations = (root / "versions",)
    # where a revision's `import constants` is looked for: prepend_sys_path, the ini's folder,
    # the folder alembic runs in, then the script location, as Python would search sys.path
    roots = tuple(dict.fromkeys([*(Path(r).resolve() for r in import_roots), base, root]))
    written = (
        script_location,
        tuple(version_locations or ()),
        bool(recursive),
        str(base),
        tuple(str(r) for r in import_roots),
    )
    return ScriptConfig(
        script_location=root,
        version_locations=locations,
        recursive=recursive,
        import_roots=roots,
        written=written,
    )


def resolved_again(config: ScriptConfig) -> ScriptConfig:
    """`config` with its locations resolved from what was written again, now (links followed
    as they are now); its warnings and size limit kept."""
    location, versions, recursive, base, roots = config.written
    again = build_config(
        location, list(versions) or None, recursive=recursive, base=Path(base), import_roots=roots
    )
    return dataclasses.replace(again, warnings=config.warnings, max_bytes=config.max_bytes)


def _resolve(location: str, base: Path) -> Path:
    if (
        ":" in location
        and not os.path.isabs(location)
        and not re.match(r"^[A-Za-z]:[\\/]", location)
    ):
        package, _, resource = location.partition(":")
        return _package_resource(package, resource, base)
    path = Path(location)
    return (path if path.is_absolute() else base / path).resolve()


def _package_resource(package: str, resource: str, base: Path) -> Path:
    """Find `package:resource` on disk without importing the package."""
    parts = package.split(".")
    for root in (base, *[Path(p) for p in sys.path if p]):
        candidate = root.joinpath(*parts)
        if (candidate / "__init__.py").is_file() or candidate.is_dir():
            return (candidate / resource).resolve()
    raise ScriptConfigError(
        f"The package {package!r} of script location '{package}:{resource}' was not found "
        f"under {base}; set script_location to a path instead."
    )
