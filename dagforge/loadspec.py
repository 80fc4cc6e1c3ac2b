"""The contract between the plan and the operators: what one table load needs to know.

The plan writes :meth:`TableLoad.to_dict` into the dag-factory config (plain, YAML-printable);
operators rebuild it with :meth:`TableLoad.from_dict`. Keeping it one object means a new
argument reaches every operator of every shape without touching their signatures.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from dagforge.spec.model import Deletes, LoadMode, SchemaChange, default_deletes


@dataclass(frozen=True)
class TableRef:
    connection: str
    """Airflow connection id."""
    schema: str
    table: str

    @property
    def label(self) -> str:
        """``schema.table``, or the table alone where the kind has no schema (a file source)."""
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True)
class TableLoad:
    pipeline: str
    source: TableRef
    destination: TableRef
    mode: LoadMode
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    lookback: str | int | None = None
    """As written in the YAML: a duration (``"10m"``) for date/time cursors, a number for numeric ones."""
    columns: tuple[str, ...] | None = None
    on_schema_change: SchemaChange = SchemaChange.EVOLVE
    deletes: Deletes | None = None
    """``None``: the mode's default (hard for full, none for incremental)."""
    deleted_flag: str | None = None
    checks: tuple[dict[str, Any], ...] = ()
    source_kind: str = "postgres"
    """The source's kind (:data:`dagforge.sources.SOURCES`)."""
    source_options: dict[str, Any] | None = None
    """What the source kind needs beyond :attr:`source` (a file source: URL, format, typed columns…)."""
    chunks: dict[str, Any] | None = None
    """``chunks:`` as the plan resolved it (``by``, and ``count`` or ``size``): a load split into
    mapped tasks (:mod:`dagforge.transfer.chunks`); None: one stream."""

    @property
    def delete_mode(self) -> Deletes:
        return self.deletes_for(self.mode)

    def deletes_for(self, load_mode: LoadMode | str) -> Deletes:
        """What happens to rows gone from the source, for a window of ``load_mode`` (a forced full
        reload of an incremental table replaces it unless ``deletes`` says otherwise)."""
        return self.deletes if self.deletes is not None else default_deletes(LoadMode(load_mode), self.deleted_flag)

    def stages_keys(self, load_mode: LoadMode | str) -> bool:
        """Whether a stage of this window also stages every source key: incremental deletes without a flag."""
        incremental = LoadMode(load_mode) is LoadMode.INCREMENTAL
        return incremental and self.deletes_for(load_mode) is not Deletes.NONE and not self.deleted_flag

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = self.mode.value
        data["primary_key"] = list(self.primary_key)
        data["columns"] = list(self.columns) if self.columns is not None else None
        data["on_schema_change"] = self.on_schema_change.value
        data["deletes"] = self.deletes.value if self.deletes is not None else None
        data["checks"] = [dict(c) for c in self.checks]
        for optional in ("source_options", "chunks"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableLoad:
        return cls(
            pipeline=data["pipeline"],
            source=TableRef(**data["source"]),
            destination=TableRef(**data["destination"]),
            mode=LoadMode(data["mode"]),
            primary_key=tuple(data.get("primary_key") or ()),
            cursor=data.get("cursor"),
            lookback=data.get("lookback"),
            columns=tuple(data["columns"]) if data.get("columns") is not None else None,
            on_schema_change=SchemaChange(data.get("on_schema_change") or "evolve"),
            deletes=Deletes(data["deletes"]) if data.get("deletes") else None,
            deleted_flag=data.get("deleted_flag"),
            checks=tuple(dict(c) for c in data.get("checks") or ()),
            source_kind=data.get("source_kind") or "postgres",
            source_options=data.get("source_options"),
            chunks=data.get("chunks"),
        )

    def staging_table(self, run_id: str) -> str:
        """A staging table name unique to this pipeline, table and run, within 63 bytes."""
        digest = hashlib.sha1(f"{self.pipeline}|{self.destination.table}|{run_id}".encode()).hexdigest()[:12]
        return f"_dagforge_stg_{self.destination.table[:36]}_{digest}"


def table_loads(config: dict[str, Any] | None) -> list[TableLoad]:
    """The table loads of a compiled pipeline (its check tasks' ``load`` argument), in plan order."""
    tasks = (config or {}).get("tasks", {})
    return [TableLoad.from_dict(t["load"]) for name, t in tasks.items() if name.startswith("check_") and "load" in t]
