"""Read the shipped catalog TOML files, merge a user file, and validate entries precisely."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lcfin.errors import InvalidCatalog

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["catalog_dir", "load_entries"]

T = TypeVar("T", bound=BaseModel)


def catalog_dir() -> Path:
    """The directory of the shipped catalog data (`lcfin/catalog`)."""
    return Path(str(resources.files("lcfin") / "catalog"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except FileNotFoundError:
        raise InvalidCatalog(
            f"Catalog file {path} does not exist", hint="fix LCFIN_CATALOG or create the file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidCatalog(
            f"Catalog file {path} is not valid TOML: {exc}", hint="fix the file's syntax"
        ) from None


def _validate(cls: type[T], path: Path, table: str, name: str, raw: Any) -> T:
    try:
        return cls.model_validate({"name": name, **raw} if isinstance(raw, dict) else raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(entry)"
        raise InvalidCatalog(
            f"Catalog file {path}, table [{table}.{name}], field '{field}': {err['msg']}",
            hint=f"fix '{field}' in {path}",
        ) from None


def _merged(base: Any, override: Any) -> Any:
    """`override` laid over `base`, table by table (a user entry may set only some fields)."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    return {**base, **{k: _merged(base.get(k), v) for k, v in override.items()}}


def load_entries(
    cls: type[T], table: str, shipped_file: str, user_file: Path | None
) -> dict[str, T]:
    """Entries of `[table.<name>]` from the shipped file; the user file's add or override.

    A user entry with the name of a shipped one is merged into it field by field, so
    `[models.demo]` with only prices keeps the demo's repo, paths and the rest (see #17).
    """
    raw: dict[str, tuple[Path, Any]] = {}
    sources = [catalog_dir() / shipped_file]
    if user_file is not None:
        sources.append(Path(user_file).expanduser())
    for path in sources:
        data = _read_toml(path)
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise InvalidCatalog(f"Catalog file {path}: [{table}] must be a table of tables")
        for name, entry in section.items():
            before = raw[name][1] if name in raw else None
            raw[name] = (path, entry if before is None else _merged(before, entry))
    return {name: _validate(cls, path, table, name, entry) for name, (path, entry) in raw.items()}
