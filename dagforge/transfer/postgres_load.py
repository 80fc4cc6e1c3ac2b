"""The three steps of a Postgres → Postgres table load, on plain psycopg connections.

1. :func:`decide_window` reads the watermark from the destination and asks the source whether
   anything is new.
2. :func:`stage` streams the window into a fresh staging table on the destination.
3. :func:`publish` moves staging into the final table and writes the watermark in one
   transaction, then drops staging.

Each step commits its own work (or none of it). A crash between steps leaves the final table
untouched; repeating a step is safe. Connections must be in autocommit mode: every transaction
here is explicit, so a ``with conn.transaction()`` is never silently demoted to a savepoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.spec.model import LoadMode
from dagforge.sql import postgres as sql
from dagforge.transfer.pg_copy import CopyStats, stream_copy

log = logging.getLogger(__name__)


class MissingTable(TerminalError):
    """A table the load needs does not exist."""


class StagingMismatch(TerminalError):
    """The staging table no longer holds what the stage step wrote."""


@dataclass(frozen=True)
class SourceColumn:
    column: sql.Column
    category: str
    """pg_type.typcategory: D date/time, N numeric, S string, …"""
    builtin: bool


@dataclass(frozen=True)
class Window:
    """What the next load reads: everything, or rows from ``watermark`` (minus lookback) on."""

    load_mode: str
    watermark: str | None
    new_rows: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Staged:
    staging_table: str
    rows: int
    columns: list[str]
    load_mode: str = "incremental"
    """How publish applies it: ``full`` replaces the table, ``incremental`` upserts."""
    watermark: str | None = None
    """The highest cursor value staged, when the stage step knows it (object-storage stages)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_source(conn: psycopg.Connection, load: TableLoad) -> list[SourceColumn]:
    """The source table's columns (all, or those the spec selects), in table order."""
    ref = load.source
    rows = conn.execute(sql.describe_columns(), {"schema": ref.schema, "table": ref.table}).fetchall()
    if not rows:
        raise MissingTable(f"source table {ref.schema}.{ref.table} does not exist (connection {ref.connection!r})")
    found = {r[0]: SourceColumn(sql.Column(r[0], r[1], r[2]), r[3], r[4]) for r in rows}
    wanted = load.columns or tuple(found)
    missing = [c for c in (*wanted, *load.primary_key, *([load.cursor] if load.cursor else [])) if c not in found]
    if missing:
        raise MissingTable(f"source table {ref.schema}.{ref.table} has no column(s) {', '.join(missing)}")
    return [found[c] for c in wanted]


def prepare_destination(conn: psycopg.Connection, load: TableLoad) -> None:
    """Create the destination schema and the watermark table when missing."""
    with conn.transaction():
        for statement in sql.ensure_schema_and_state(load.destination.schema):
            conn.execute(statement)


def read_watermark(conn: psycopg.Connection, load: TableLoad) -> str | None:
    params = {"pipeline": load.pipeline, "table": load.destination.table}
    row = conn.execute(sql.read_watermark(load.destination.schema), params).fetchone()
    return row[0] if row else None


def require_autocommit(*connections: psycopg.Connection) -> None:
    for conn in connections:
        if not conn.autocommit:
            raise ValueError("dagforge load steps need connections in autocommit mode")


def decide_window(
    source: psycopg.Connection, destination: psycopg.Connection, load: TableLoad, *, force_full: bool = False
) -> Window:
    """Full, forced full, first-time incremental, incremental with new rows, or nothing new."""
    require_autocommit(source, destination)
    prepare_destination(destination, load)
    return choose_window(source, load, lambda: read_watermark(destination, load), force_full=force_full)


def choose_window(
    source: psycopg.Connection, load: TableLoad, watermark: Callable[[], str | None], *, force_full: bool = False
) -> Window:
    """The window, given how to read the destination's watermark (any destination kind)."""
    require_autocommit(source)
    if load.mode is LoadMode.FULL:
        return Window("full", None, True, "full mode reloads the whole table")
    if force_full:
        return Window("full", None, True, "a full reload was asked for when the run was triggered")
    last = watermark()
    if last is None:
        return Window("incremental", None, True, "first incremental run: loading every row")
    cursor = _cursor_column(source, load)
    query = sql.has_rows_after(load.source.schema, load.source.table, load.cursor or "", cursor.column.type_sql)
    new_rows = bool(source.execute(query, {"watermark": last}).fetchone()[0])
    reason = f"rows with {load.cursor} > {last}" if new_rows else f"no row with {load.cursor} > {last}"
    return Window("incremental", last, new_rows, reason)


def _cursor_column(source: psycopg.Connection, load: TableLoad) -> SourceColumn:
    columns = {c.column.name: c for c in describe_source(source, load)}
    return columns[load.cursor or ""]


def stage(
    source: psycopg.Connection,
    destination: psycopg.Connection,
    load: TableLoad,
    window: Window,
    staging_table: str,
    progress: Any = None,
) -> tuple[Staged, CopyStats]:
    """Copy the window's rows into a new staging table; committed when complete."""
    require_autocommit(source, destination)
    columns = describe_source(source, load)
    names = [c.column.name for c in columns]
    bound = lower_bound(columns, load) if window.watermark is not None else None
    select = sql.select_window(load.source.schema, load.source.table, names, load.cursor, bound)
    binary = all(c.builtin for c in columns)
    schema = load.destination.schema
    with destination.transaction():
        for statement in sql.create_staging(schema, staging_table, [c.column for c in columns]):
            destination.execute(statement)
        stats = stream_copy(
            source,
            destination,
            sql.copy_out(select, binary),
            sql.copy_in(schema, staging_table, names, binary),
            params={"watermark": window.watermark} if bound else None,
            progress=progress,
        )
    return Staged(staging_table, stats.rows, names, window.load_mode), stats


def lower_bound(columns: list[SourceColumn], load: TableLoad) -> str:
    cursor = next(c for c in columns if c.column.name == load.cursor)
    try:
        return sql.cursor_bound(cursor.column.type_sql, cursor.category, load.lookback)
    except ValueError as exc:
        raise TerminalError(f"table {load.source.table}: {exc}") from exc


def publish(destination: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str) -> int:
    """Staging → final table and watermark, in one transaction; returns rows published."""
    require_autocommit(destination)
    dest = load.destination
    with destination.transaction():
        _check_staging(destination, dest.schema, staged)
        exists = destination.execute(sql.table_exists(), {"schema": dest.schema, "table": dest.table}).fetchone()[0]
        if not exists:
            log.info("creating %s.%s from the source's column types", dest.schema, dest.table)
            for statement in sql.create_target_like(dest.schema, dest.table, staged.staging_table, load.primary_key):
                destination.execute(statement)
        for statement in _publish_statements(load, staged):
            destination.execute(statement)
        watermark = None
        if load.cursor:
            query = sql.staged_max_cursor(dest.schema, staged.staging_table, load.cursor)
            watermark = destination.execute(query).fetchone()[0]
        destination.execute(sql.write_watermark(dest.schema), _state_params(load, watermark, staged.rows, run_id))
        destination.execute(sql.drop_table(dest.schema, staged.staging_table))
    return staged.rows


def _check_staging(conn: psycopg.Connection, schema: str, staged: Staged) -> None:
    table = {"schema": schema, "table": staged.staging_table}
    if not conn.execute(sql.table_exists(), table).fetchone()[0]:
        raise StagingMismatch(
            f"staging table {schema}.{staged.staging_table} is gone (published already, or dropped); "
            "clear the stage task to stage again"
        )
    found = conn.execute(sql.count_rows(schema, staged.staging_table)).fetchone()[0]
    if found != staged.rows:
        raise StagingMismatch(
            f"staging table {schema}.{staged.staging_table} holds {found} rows, the stage step wrote "
            f"{staged.rows}; clear the stage task to stage again"
        )


def _publish_statements(load: TableLoad, staged: Staged) -> list[str]:
    dest = load.destination
    if staged.load_mode == LoadMode.INCREMENTAL.value:
        return sql.publish_upsert(dest.schema, dest.table, staged.staging_table, staged.columns, load.primary_key)
    return sql.publish_replace(dest.schema, dest.table, staged.staging_table, staged.columns)


def _state_params(load: TableLoad, watermark: str | None, rows: int, run_id: str) -> dict[str, Any]:
    return {
        "pipeline": load.pipeline,
        "table": load.destination.table,
        "cursor": load.cursor,
        "watermark": watermark,
        "mode": load.mode.value,
        "rows": rows,
        "run_id": run_id,
    }
