"""The typed, immutable model of a validated pipeline. Built only from schema-valid data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> int:
    """``"90m"`` → 5400. The schema guarantees the format."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


class SchemaChange(StrEnum):
    """What a load does when the source's columns no longer match the destination's."""

    EVOLVE = "evolve"
    """Add new columns, widen types that widen safely, keep dropped columns (NULL from now on)."""
    FAIL = "fail"
    """Stop before anything is written, naming each column and change."""
    IGNORE = "ignore"
    """Load the columns both sides have."""


class Deletes(StrEnum):
    """What happens to destination rows whose key is gone from the source."""

    NONE = "none"
    HARD = "hard"
    SOFT = "soft"
    """Keep them and set ``_dagforge_deleted_at``."""


DELETED_AT = "_dagforge_deleted_at"
"""The column a soft delete sets (timestamptz / TIMESTAMP), added to the destination table."""


class LoadMode(StrEnum):
    FULL = "full"
    """Replace the whole destination table each run."""
    INCREMENTAL = "incremental"
    """Upsert rows whose cursor is at or past the stored watermark."""
    INTERVAL = "interval"
    """A file source: replace exactly the rows this run's interval loaded before (``_dagforge_interval``)."""
    APPEND = "append"
    """A file source: add this interval's rows (a file already loaded for the interval is nothing new)."""


INTERVAL_COLUMN = "_dagforge_interval"
"""The column (timestamptz / TIMESTAMP) that ``mode: interval`` writes each row's interval start into."""
FILES_TABLE = "_dagforge_files"
"""Per destination: which file each (pipeline, table, interval) loaded."""


@dataclass(frozen=True)
class Endpoint:
    """A source, stage or destination: its kind, its Airflow connection and the kind's own keys."""

    kind: str
    connection: str | None
    options: Mapping[str, Any]
    """The remaining keys of the YAML block, read-only (the schema defines them per kind)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoint:
        rest = {k: v for k, v in data.items() if k not in ("kind", "connection")}
        return cls(kind=data["kind"], connection=data.get("connection"), options=MappingProxyType(rest))


@dataclass(frozen=True)
class Table:
    name: str
    """Source table name; also the task group id."""
    target: str
    """Destination table name (defaults to ``name``)."""
    mode: LoadMode
    primary_key: tuple[str, ...]
    cursor: str | None
    """Column that grows on insert/update; required for incremental mode."""
    lookback: str | int | None
    """How far behind the watermark to re-read: a duration (time cursors) or a number."""
    columns: tuple[str, ...] | None
    """Columns to copy; ``None`` means every column of the source table."""
    spec: Mapping[str, Any]
    """The table's YAML entry as written (read-only); shapes with their own keys read it."""
    on_schema_change: SchemaChange = SchemaChange.EVOLVE
    deletes: Deletes | None = None
    """As written; None: the default for the load (:func:`default_deletes`)."""
    deleted_flag: str | None = None
    checks: tuple[Mapping[str, Any], ...] = ()
    chunks: Mapping[str, Any] | None = None
    """``chunks:`` as written (``by``, ``count`` or ``size``); None: one stream."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], on_schema_change: str = "evolve") -> Table:
        mode = LoadMode(data.get("mode", "full"))
        return cls(
            name=data["name"],
            target=data.get("target", data["name"]),
            mode=mode,
            primary_key=tuple(data.get("primary_key", ())),
            cursor=data.get("cursor"),
            lookback=data.get("lookback"),
            columns=tuple(data["columns"]) if isinstance(data.get("columns"), list) else None,
            spec=MappingProxyType(dict(data)),
            on_schema_change=SchemaChange(data.get("on_schema_change", on_schema_change)),
            deletes=Deletes(data["deletes"]) if "deletes" in data else None,
            deleted_flag=data.get("deleted_flag"),
            checks=tuple(MappingProxyType(dict(c)) for c in data.get("checks", ())),
            chunks=MappingProxyType(dict(data["chunks"])) if isinstance(data.get("chunks"), dict) else None,
        )


def default_deletes(mode: LoadMode, deleted_flag: str | None) -> Deletes:
    """Full loads (and a forced full reload) replace: hard; a source's own delete flag soft-deletes;
    otherwise rows are kept."""
    if mode is LoadMode.FULL:
        return Deletes.HARD
    return Deletes.SOFT if deleted_flag else Deletes.NONE


@dataclass(frozen=True)
class Transform:
    name: str
    sql: str
    """Path of the SQL file, relative to the pipeline file."""
    depends_on: tuple[str, ...]
    sql_text: str
    """The file's content, read when the pipeline is loaded."""


@dataclass(frozen=True)
class DbtTransform:
    """``transform: {dbt: …}``: a dbt project whose models run as tasks after the loads."""

    project: str
    """As written: the project folder, relative to the pipeline file."""
    folder: Path | None
    """The project folder, resolved when the pipeline was loaded from a file."""
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    schema: str | None = None
    """Where the models are built (a Postgres schema, a BigQuery dataset); None: the default."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], folder: Path | None) -> DbtTransform:
        return cls(
            project=data["project"],
            folder=(folder / data["project"]).resolve() if folder else None,
            select=tuple(data.get("select") or ()),
            exclude=tuple(data.get("exclude") or ()),
            vars=MappingProxyType(dict(data.get("vars") or {})),
            schema=data.get("schema"),
        )


def sql_transforms(data: Mapping[str, Any]) -> list[Any]:
    """The SQL transforms of a pipeline's ``transform:`` (a list, or the ``sql`` of its mapping form)."""
    transform = data.get("transform")
    if isinstance(transform, dict):
        return list(transform.get("sql") or [])
    return list(transform or [])


@dataclass(frozen=True)
class Pipeline:
    id: str
    file: str
    """Path of the YAML file, as found (shown in the DAG's docs)."""
    source_url: str | None
    description: str
    owner: str
    schedule: str | None
    start_date: str | None
    catchup: bool
    retries: int
    retry_delay_seconds: int
    max_active_runs: int
    tags: tuple[str, ...]
    notify: Mapping[str, Any]
    source: Endpoint
    stage: Endpoint | None
    destination: Endpoint
    tables: tuple[Table, ...]
    transforms: tuple[Transform, ...]
    dbt: DbtTransform | None = None

    @property
    def connections(self) -> set[str]:
        """Every Airflow connection id this pipeline uses."""
        used = {e.connection for e in (self.source, self.stage, self.destination) if e and e.connection}
        slack = self.notify.get("slack")
        return used | ({slack["connection"]} if slack else set())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: str, folder: Path | None = None) -> Pipeline:
        """``folder`` holds the pipeline file; transform SQL paths are relative to it."""
        return cls(
            id=data["pipeline"],
            file=file,
            source_url=data.get("source_url"),
            description=data.get("description", ""),
            owner=data.get("owner", "dagforge"),
            schedule=data.get("schedule"),
            start_date=data.get("start_date"),
            catchup=data.get("catchup", False),
            retries=data.get("retries", 2),
            retry_delay_seconds=duration_seconds(data.get("retry_delay", "5m")),
            max_active_runs=data.get("max_active_runs", 1),
            tags=tuple(data.get("tags", ())),
            notify=MappingProxyType(dict(data.get("notify", {}))),
            source=Endpoint.from_dict(data["source"]),
            stage=Endpoint.from_dict(data["stage"]) if "stage" in data else None,
            destination=Endpoint.from_dict(data["destination"]),
            tables=tuple(Table.from_dict(t, data.get("on_schema_change", "evolve")) for t in data["tables"]),
            transforms=tuple(
                Transform(t["name"], t["sql"], tuple(t.get("depends_on", ())), _read_sql(folder, t["sql"]))
                for t in sql_transforms(data)
            ),
            dbt=DbtTransform.from_dict(data["transform"]["dbt"], folder) if _has_dbt(data) else None,
        )


def _has_dbt(data: Mapping[str, Any]) -> bool:
    transform = data.get("transform")
    return isinstance(transform, dict) and isinstance(transform.get("dbt"), dict)


def _read_sql(folder: Path | None, relative: str) -> str:
    return (folder / relative).read_text(encoding="utf-8") if folder else ""
