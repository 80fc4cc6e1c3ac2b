"""A pipelines folder as the Airflow loader reads it: only what one parse needs, plans from the cache.

The dag-processor parses the loader file for every DAG; a worker parses it before each task with
the parsing context naming one DAG. Both need every file's DAG id (ids are unique across the
folder, and a file whose id is unreadable or taken is named after the file), but only the files
they build need validating and compiling. So:

* every file is read and hashed (cheap: a few KB each);
* the files to build are validated and compiled, or their plans read from the
  :class:`~dagforge.plancache.PlanCache`;
* every other file's pipeline id comes from its ``pipeline:`` line (:func:`quick_pipeline_id`);
  where that line is not plain enough to be sure, the file is loaded in full.

A file chosen by a quick id is loaded in full and its id checked; if the line misled, the whole
folder is loaded in full (never a wrong DAG). Decision record: docs/decisions/0011-plan-cache.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dagforge.catalog import Entry, compile_entry, dag_id_for
from dagforge.plancache import Plan, PlanCache, code_fingerprint, digest, text_digest, tree_digest
from dagforge.spec.files import discover, file_label, find_defaults
from dagforge.spec.yaml_source import MAX_FILE_BYTES, scalar_resolver

if TYPE_CHECKING:
    from dagforge.spec.load import SpecLoader

log = logging.getLogger(__name__)

_PIPELINE_LINE = re.compile(r"^pipeline:[ \t]*([^\s#]*)[ \t]*(?:#.*)?$", re.M)
_ID = re.compile(r"[\w.-]{1,200}")
_DOCUMENT_MARKERS = re.compile(r"^(?:---|\.\.\.)(?:\s|$)", re.M)
_RESOLVER = scalar_resolver()()
_STR = "tag:yaml.org,2002:str"
UNKNOWN = object()
""":func:`quick_pipeline_id` could not be sure: load the file in full."""


def quick_pipeline_id(text: str | None) -> str | object | None:
    """The file's pipeline id from its one top-level ``pipeline: <name>`` line, or :data:`UNKNOWN`."""
    if text is None:
        return UNKNOWN
    found = _PIPELINE_LINE.findall(text)
    if len(found) != 1 or not _ID.fullmatch(found[0]) or _DOCUMENT_MARKERS.search(text):
        return UNKNOWN
    # a plain scalar as our YAML loader reads it: a string unless it looks like a number, bool or null
    return found[0] if _RESOLVER.resolve(yaml.ScalarNode, found[0], (True, False)) == _STR else UNKNOWN


def shard_of(label: str, count: int) -> int:
    """A stable shard for a file (by its label, the same on every machine)."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big") % count


@dataclass
class PipelineFile:
    path: Path
    root: Path
    label: str
    """``pipelines/orders.yml``: the same from any working directory."""
    text: str | None
    """The content that was hashed (None when unreadable or too big: a full load reports why)."""
    key: str | None
    """Plan cache key (None when unreadable)."""
    quick_id: str | object | None = UNKNOWN
    exact: Entry | None = None
    from_cache: bool = False


@dataclass
class FolderParse:
    """What one parse of the folder produced, and what it cost."""

    entries: list[Entry] = field(default_factory=list)
    files: int = 0
    from_cache: int = 0
    compiled: int = 0
    quick_ids: int = 0


@dataclass(frozen=True)
class Selection:
    """Which DAGs one parse builds: a shard of the files (``(index, count)``), one DAG id, or both."""

    shard: tuple[int, int] | None = None
    dag_id: str | None = None

    def holds(self, f: PipelineFile) -> bool:
        return self.shard is None or shard_of(f.label, self.shard[1]) == self.shard[0]


def read_folder(folder: Path, cache: PlanCache, selection: Selection = Selection()) -> FolderParse:
    """Entries (with DAG ids) for the files ``selection`` builds; never raises for a bad file."""
    files = _scan(folder)
    reader = _Reader(cache, files)
    if selection.dag_id is None:
        for f in files:
            if selection.holds(f):
                reader.exact(f)
    dag_ids = reader.assign_ids(files)

    def chosen() -> list[PipelineFile]:
        wanted = selection.dag_id
        return [f for f in files if selection.holds(f) and (wanted is None or dag_ids[f.path] == wanted)]

    picked = chosen()
    misled = any(f.quick_id is not UNKNOWN and reader.exact(f).pipeline_id != f.quick_id for f in picked)
    if misled or (selection.dag_id is not None and not picked and reader.quick_ids_used(files)):
        # a pipeline: line that YAML reads otherwise, or a DAG id no quick read found: be exact
        log.warning("dagforge: the quick read of %s did not settle %s; loading every file", folder, selection)
        for f in files:
            reader.exact(f)
        dag_ids = reader.assign_ids(files)
    built = chosen()
    result = FolderParse(files=len(files))
    result.entries = [reader.entry(f, dag_ids[f.path]) for f in built]
    result.from_cache = sum(1 for f in built if f.from_cache)
    result.compiled = sum(1 for f in files if f.exact is not None and not f.from_cache)
    result.quick_ids = sum(1 for f in files if f.exact is None)
    return result


def _scan(folder: Path) -> list[PipelineFile]:
    """Every pipeline file with its label, content and cache key: reads, no parsing."""
    files, defaults_of, defaults_read = [], {}, {}
    fingerprint = code_fingerprint()
    root = folder.resolve()
    for path, _root in discover([root]):
        if path.parent not in defaults_of:  # one lookup per folder, not per file
            found = find_defaults(path, root)
            defaults_of[path.parent] = found
            if found is not None and found not in defaults_read:
                defaults_read[found] = (_label(found, root), _read_text(found))
        defaults = defaults_of[path.parent]
        defaults_label, defaults_text = defaults_read[defaults] if defaults is not None else (None, None)
        text, label = _read_text(path), _label(path, root)
        key = None
        if text is not None and (defaults is None or defaults_text is not None):
            key = digest(fingerprint, label, text, defaults_label, defaults_text)
        files.append(PipelineFile(path, root, label, text, key))
    return files


def _label(path: Path, root: Path) -> str:
    """:func:`file_label` for a path found below the resolved ``root``, without resolving each file."""
    full, base = str(path), str(root)
    if full.startswith(base + os.sep) and not os.path.islink(full):
        return f"{root.name}/{full[len(base) + 1 :]}"
    return file_label(path, root)


def _read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


class _Reader:
    """Loads files in full on demand (through the plan cache), each at most once."""

    def __init__(self, cache: PlanCache, files: list[PipelineFile]):
        self.cache = cache
        self.files = files
        self._loader = None
        self._plans: dict[Path, Plan | None] = {}
        self.by_id: dict[str, list[PipelineFile]] = defaultdict(list)

    @property
    def loader(self) -> SpecLoader:
        """The validator, imported and made on the first file that is not served by the cache."""
        if self._loader is None:
            from dagforge.spec.load import SpecLoader

            labels = {f.path: f.label for f in self.files}
            self._loader = SpecLoader(
                display=lambda path, root: labels.get(path) or file_label(path, root),
                texts={f.path: f.text for f in self.files if f.text is not None},
            )
        return self._loader

    def _plan(self, f: PipelineFile) -> Plan | None:
        """The file's cached plan, looked up at most once per parse."""
        if f.path not in self._plans:
            self._plans[f.path] = self.cache.get(f.key) if f.key else None
        return self._plans[f.path]

    def exact(self, f: PipelineFile) -> Entry:
        """The file's entry (without its DAG id yet), from the cache or validated and compiled now."""
        if f.exact is None:
            plan = self._plan(f)
            if plan is not None and plan.config is not None:
                f.exact = Entry(f.path, f.label, "", config=plan.config, pipeline_id=plan.pipeline_id)
                f.from_cache = True
            else:
                f.exact = self._load(f, cached=plan is not None)
        return f.exact

    def _load(self, f: PipelineFile, cached: bool) -> Entry:
        """Validate and compile; cache the plan unless the cache holds it already (an invalid file's)."""
        spec = self.loader.load(f.path, f.root)
        entry = compile_entry(spec, Entry(f.path, spec.display, "", errors=sorted(spec.errors)))
        entry.pipeline_id = spec.pipeline_id
        if f.key and not cached:
            transforms = spec.pipeline.transforms if spec.pipeline is not None else ()
            deps = {str(f.path.parent / t.sql): text_digest(t.sql_text) for t in transforms}
            dbt = spec.pipeline.dbt if spec.pipeline is not None else None
            if dbt is not None and dbt.folder is not None and dbt.folder.is_dir():
                deps[str(dbt.folder)] = tree_digest(dbt.folder)
            self.cache.put(f.key, Plan(spec.pipeline_id, entry.config if entry.valid else None, deps))
        return entry

    @staticmethod
    def quick_ids_used(files: Iterable[PipelineFile]) -> bool:
        return any(f.exact is None for f in files)

    def pipeline_id(self, f: PipelineFile) -> str | None:
        if f.exact is not None:
            return f.exact.pipeline_id
        if f.quick_id is UNKNOWN:
            f.quick_id = quick_pipeline_id(f.text)
        if f.quick_id is UNKNOWN:
            plan = self._plan(f)  # an invalid file's plan still knows its id
            if plan is None:
                return self.exact(f).pipeline_id
            f.quick_id = plan.pipeline_id
        return f.quick_id  # type: ignore[return-value]

    def assign_ids(self, files: Iterable[PipelineFile]) -> dict[Path, str]:
        taken: set[str] = set()
        ids = {}
        self.by_id = defaultdict(list)
        for f in files:
            pipeline_id = self.pipeline_id(f)
            ids[f.path] = dag_id_for(pipeline_id, f.path, taken)
            taken.add(ids[f.path])
            if pipeline_id:
                self.by_id[pipeline_id].append(f)
        return ids

    def entry(self, f: PipelineFile, dag_id: str) -> Entry:
        entry = self.exact(f)
        same = self.by_id.get(entry.pipeline_id or "", [])  # .get: no empty lists added
        if len(same) > 1:  # a duplicate id: a stand-in naming the other files
            from dagforge.spec.load import mark_duplicate

            spec = self.loader.load(f.path, f.root)
            mark_duplicate(spec, [o.label for o in same if o is not f])
            entry = Entry(f.path, spec.display, dag_id, errors=sorted(spec.errors), pipeline_id=spec.pipeline_id)
            f.from_cache = False
        entry.dag_id = dag_id
        return entry
