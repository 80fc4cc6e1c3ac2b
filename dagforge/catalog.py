"""Every pipeline under some paths, validated and compiled: what `validate`, `render` and the loader share."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagforge.errors import SpecError

if TYPE_CHECKING:  # the validator and compiler load on first use: a parse served by the plan cache needs neither
    from dagforge.spec.load import LoadedSpec
    from dagforge.spec.model import Pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR_ENV = "DAGFORGE_PIPELINES_DIR"


def default_pipelines_dir() -> Path:
    return Path(os.environ.get(PIPELINES_DIR_ENV) or REPO_ROOT / "pipelines")


@dataclass
class Entry:
    """One pipeline file: its DAG id, and either a dag-factory config or errors."""

    file: Path
    display: str
    dag_id: str
    config: dict[str, Any] | None = None
    errors: list[SpecError] = field(default_factory=list)
    is_defaults: bool = False
    """A defaults file named explicitly: validated, but it is no DAG."""
    pipeline: Pipeline | None = None
    """The validated model (None when invalid)."""
    pipeline_id: str | None = None
    """The ``pipeline:`` value when readable, even if the file is invalid."""

    @property
    def valid(self) -> bool:
        return not self.errors and (self.config is not None or self.is_defaults)


def build_catalog(paths: Iterable[Path], schema_path: Path | None = None) -> list[Entry]:
    """Load, validate and compile every pipeline; never raises for a bad file."""
    from dagforge.spec.load import load_specs

    specs = load_specs(paths, schema_path)
    taken: set[str] = set()
    entries = []
    for spec in specs:
        dag_id = dag_id_for(spec.pipeline_id, spec.path, taken)
        entry = Entry(spec.path, spec.display, dag_id, errors=sorted(spec.errors))
        entry.is_defaults = spec.is_defaults
        entry.pipeline = spec.pipeline
        entry.pipeline_id = spec.pipeline_id
        if spec.is_defaults:
            entries.append(entry)
            continue
        taken.add(entry.dag_id)
        entries.append(compile_entry(spec, entry))
    return entries


def compile_entry(spec: LoadedSpec, entry: Entry) -> Entry:
    """Fill ``entry.config`` from a valid spec, or add the reason it cannot be built."""
    from dagforge.plan import PlanError, compile_pipeline

    if spec.pipeline is not None and not entry.errors:
        try:
            entry.config = compile_pipeline(spec.pipeline)[spec.pipeline.id]
        except PlanError as exc:
            entry.errors.append(spec.error_at(exc.path, exc.message))
    return entry


def dag_id_for(pipeline_id: str | None, path: Path, taken: set[str]) -> str:
    """The pipeline id when it is readable and free, else a name made from the file."""
    candidate = pipeline_id if pipeline_id and re.fullmatch(r"[\w.-]{1,200}", pipeline_id) else None
    stem = re.sub(r"[^\w.-]", "_", path.stem)[:200] or "pipeline"
    for name in (candidate, stem, f"{stem}__{candidate}" if candidate else None):
        if name and name not in taken:
            return name
    suffix = 2
    while f"{stem}_{suffix}" in taken:
        suffix += 1
    return f"{stem}_{suffix}"
