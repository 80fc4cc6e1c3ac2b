"""Where pipeline files are and what they are called: paths only, no parsing (cheap to import).

The Airflow loader imports this on every parse, also when every plan comes from the cache, so it
must not pull in the validator (jsonschema) or the compiler.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

DEFAULTS_NAMES = ("defaults.yml", "defaults.yaml")
PIPELINE_SUFFIXES = (".yml", ".yaml")


def _schema_path() -> Path:
    """The repository's schemas/ in a checkout; the copy shipped as dagforge/schemas when installed."""
    in_checkout = Path(__file__).resolve().parents[2] / "schemas" / "pipeline.schema.json"
    if in_checkout.is_file():
        return in_checkout
    return Path(str(resources.files("dagforge") / "schemas" / "pipeline.schema.json"))


SCHEMA_PATH = _schema_path()


def discover(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """``(file, root)`` for every pipeline file; ``root`` bounds the search for defaults.

    A folder is walked with ``os.walk`` (one ``scandir`` per folder; the loader does this on every
    parse), skipping hidden folders and files, in the order of sorted paths.
    """
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            found.extend((f, path) for f in _walk(path))
        else:
            found.append((path, _repository_root(path)))
    return found


DBT_PROJECT_FILE = "dbt_project.yml"
"""A folder holding it (and everything under it) is a dbt project (``transform: {dbt: …}``)."""


def _walk(root: Path) -> list[Path]:
    files: list[tuple[tuple[str, ...], str]] = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        if DBT_PROJECT_FILE in names:  # a dbt project's YAML files are dbt's, not pipelines
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = os.path.relpath(folder, root)
        parts = () if relative == "." else tuple(relative.split(os.sep))
        for name in names:
            if name.startswith(".") or name in DEFAULTS_NAMES or os.path.splitext(name)[1] not in PIPELINE_SUFFIXES:
                continue
            full = os.path.join(folder, name)
            if os.path.isfile(full):
                files.append(((*parts, name), full))
    files.sort()  # the order of Path comparison: part by part
    return [Path(full) for _, full in files]


def _repository_root(file: Path) -> Path:
    """For a file named on the command line: its git checkout (so parent defaults.yml count), else its folder."""
    for folder in file.resolve().parents:
        if (folder / ".git").exists():
            return folder
    return file.resolve().parent


def find_defaults(file: Path, root: Path) -> Path | None:
    """The nearest defaults.yml in the file's folder or a parent, not above ``root``."""
    folder, root = file.parent.resolve(), root.resolve()
    while True:
        for name in DEFAULTS_NAMES:
            if (folder / name).is_file():
                return folder / name
        if folder == root or folder.parent == folder or root not in folder.parents:
            return None
        folder = folder.parent


def file_label(file: Path, root: Path) -> str:
    """``pipelines/orders.yml``: the file below its pipelines folder, the same from any cwd."""
    try:
        return str(Path(root.resolve().name) / file.resolve().relative_to(root.resolve()))
    except ValueError:
        return file.name
