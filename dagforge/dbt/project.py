"""A dbt project read without dbt: its models, their ``ref()`` and ``source()`` calls (with lines),
the sources and tests its YAML files declare. Enough to render one task per model, place each after
the loads its sources name, and report a broken project with its file and line; dbt itself parses
the project again when a task runs (docs/decisions/0016).

What is read: ``dbt_project.yml`` (``name``, ``model-paths``), every ``*.sql`` under the model paths
(a model per file, named by the file), ``ref('m')``/``ref('pkg', 'm')`` and ``source('s', 't')``
calls with literal arguments, and the ``sources:`` and ``models:`` blocks of the YAML files there
(tests: ``tests``/``data_tests`` on a model or its columns). A ``ref`` or ``source`` built by a macro
at compile time is not seen; dbt would still run it, in the model's own task.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_REF = re.compile(r"""\bref\(\s*(['"])([^'"]+)\1\s*(?:,\s*(['"])([^'"]+)\3\s*)?(?:,[^)]*)?\)""")
_SOURCE = re.compile(r"""\bsource\(\s*(['"])([^'"]+)\1\s*,\s*(['"])([^'"]+)\3\s*\)""")
_COMMENT = re.compile(r"\{#.*?#\}|--[^\n]*", re.S)


class DbtProjectError(Exception):
    """The project cannot be read; ``where`` is ``file:line`` (relative to the project's parent)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


@dataclass(frozen=True)
class Call:
    """A ``ref()`` or ``source()`` in a model's SQL: what it names and where."""

    names: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    """Relative to the project folder."""
    refs: tuple[Call, ...]
    sources: tuple[Call, ...]
    """``(source name, table name)`` each."""
    tests: int = 0
    """Tests the YAML files declare on the model and its columns."""


@dataclass(frozen=True)
class SourceTable:
    source: str
    table: str
    schema: str | None
    identifier: str
    """The relation's name (``identifier``, else the table's name)."""
    external: bool
    """``meta: {dagforge: external}`` on the source or table: loaded by something else, not by this pipeline."""
    where: str


@dataclass
class DbtProject:
    folder: Path
    name: str
    models: dict[str, Model] = field(default_factory=dict)
    sources: dict[tuple[str, str], SourceTable] = field(default_factory=dict)

    def label(self, relative: Path, line: int | None = None) -> str:
        where = f"{self.folder.name}/{relative.as_posix()}"
        return f"{where}:{line}" if line else where

    def upstream(self, model: str) -> list[str]:
        """The project's models ``model`` refs (other packages' models left out)."""
        return sorted({c.names[-1] for c in self.models[model].refs if c.names[-1] in self.models})

    def select(self, select: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
        """Model names picked by dbt-style ``select``/``exclude`` terms (``name``, ``+name``, ``name+``),
        in dependency order; every model when ``select`` is empty. :class:`KeyError` names an unknown one."""
        chosen = set(self._expand(select)) if select else set(self.models)
        chosen -= set(self._expand(exclude))
        return [m for m in self.order() if m in chosen]

    def _expand(self, terms: Iterable[str]) -> Iterator[str]:
        downstream: dict[str, set[str]] = {m: set() for m in self.models}
        for model in self.models:
            for up in self.upstream(model):
                downstream[up].add(model)
        for term in terms:
            name = term.strip("+")
            if name not in self.models:
                raise KeyError(name)
            yield name
            if term.startswith("+"):
                yield from _closure(name, self.upstream)
            if term.endswith("+"):
                yield from _closure(name, lambda m: sorted(downstream[m]))

    def order(self) -> list[str]:
        """Every model, each after the models it refs (by name within a level, so stable)."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(model: str, path: tuple[str, ...]) -> None:
            if model in seen:
                return
            if model in path:
                cycle = " -> ".join((*path[path.index(model) :], model))
                raise DbtProjectError(self.label(self.models[model].path), f"models ref each other in a cycle: {cycle}")
            for up in self.upstream(model):
                visit(up, (*path, model))
            seen.add(model)
            done.append(model)

        for model in sorted(self.models):
            visit(model, ())
        return done


def _closure(start: str, step: Any) -> Iterator[str]:
    todo, seen = [start], {start}
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
                yield nxt


def load_project(folder: Path) -> DbtProject:
    """Read the project in ``folder``; :class:`DbtProjectError` with the file and line when it is broken."""
    config_file = folder / "dbt_project.yml"
    if not folder.is_dir():
        raise DbtProjectError(folder.name, "no such folder")
    if not config_file.is_file():
        raise DbtProjectError(f"{folder.name}/dbt_project.yml", "missing: not a dbt project")
    config = _yaml(config_file, f"{folder.name}/dbt_project.yml")
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise DbtProjectError(f"{folder.name}/dbt_project.yml:1", "needs a 'name'")
    project = DbtProject(folder, config["name"])
    paths = config.get("model-paths") or config.get("source-paths") or ["models"]
    for base in (folder / p for p in paths):
        for sql_file in sorted(base.rglob("*.sql")) if base.is_dir() else []:
            _read_model(project, sql_file)
        for yml in sorted([*base.rglob("*.yml"), *base.rglob("*.yaml")]) if base.is_dir() else []:
            _read_properties(project, yml)
    return project


def _yaml(path: Path, label: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DbtProjectError(f"{label}{line}", f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc


def _read_model(project: DbtProject, sql_file: Path) -> None:
    relative = sql_file.relative_to(project.folder)
    name = sql_file.stem
    if name in project.models:
        first = project.label(project.models[name].path)
        raise DbtProjectError(project.label(relative), f"a second model named {name!r} (the first: {first})")
    text = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), sql_file.read_text(encoding="utf-8"))

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    refs = tuple(Call(tuple(g for g in (m.group(2), m.group(4)) if g), line_of(m.start())) for m in _REF.finditer(text))
    sources = tuple(Call((m.group(2), m.group(4)), line_of(m.start())) for m in _SOURCE.finditer(text))
    project.models[name] = Model(name, relative, refs, sources)


def _read_properties(project: DbtProject, yml: Path) -> None:
    relative = yml.relative_to(project.folder)
    data = _yaml(yml, project.label(relative)) or {}
    if not isinstance(data, dict):
        return
    for source in data.get("sources") or []:
        if not isinstance(source, dict) or "name" not in source:
            continue
        external = _external(source)
        for table in source.get("tables") or []:
            if isinstance(table, dict) and "name" in table:
                key = (str(source["name"]), str(table["name"]))
                project.sources[key] = SourceTable(
                    *key, source.get("schema"), str(table.get("identifier") or table["name"]),
                    external or _external(table), project.label(relative),
                )  # fmt: skip
    for entry in data.get("models") or []:
        if isinstance(entry, dict) and entry.get("name") in project.models:
            model = project.models[entry["name"]]
            count = _tests(entry) + sum(_tests(c) for c in entry.get("columns") or [] if isinstance(c, dict))
            project.models[model.name] = dataclasses.replace(model, tests=model.tests + count)


def _external(node: dict[str, Any]) -> bool:
    meta = node.get("meta") or (node.get("config") or {}).get("meta") or {}
    return isinstance(meta, dict) and meta.get("dagforge") == "external"


def _tests(node: dict[str, Any]) -> int:
    return len(node.get("data_tests") or node.get("tests") or [])
