"""The steps of a Postgres → Postgres table load, and the publish every Postgres destination shares.

1. :func:`decide_window` reads the table's state from the destination and asks the source whether
   anything is new (:func:`dagforge.sources.postgres.choose_window`).
2. :func:`stage` streams the window into a fresh staging table on the destination, reading the
   source in one snapshot whose time, cursor range and lookback digest travel with it.
3. :func:`publish` moves staging into the final table and writes the state in one transaction,
   under the table's publish lock, by the ordering rules of docs/decisions/0008; then drops staging.

Each step commits its own work (or none of it) and can run again: a publish whose staging was
published already is a no-op, and a staging table that is gone or incomplete is staged again from
the window (``restage``). Connections must be in autocommit mode: every transaction here is
explicit, so a ``with conn.transaction()`` is never silently demoted to a savepoint.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from dagforge.contracts import Staged, Window
from dagforge.loadspec import TableLoad
from dagforge.sources.postgres import (
    MissingTable,
    SourceColumn,
    choose_window,
    consistent_read,
    describe_source,
    figures_alongside,
    require_autocommit,
    window_bound,
    window_facts,
)
from dagforge.sql import postgres as sql
from dagforge.sql.types import export_expression
from dagforge.transfer.pg_copy import CopyStats, stream_copy
from dagforge.transfer.postgres_publish import drop_abandoned_staging, prepare_destination, publish, read_state

log = logging.getLogger(__name__)

__all__ = [
    "MissingTable",
    "SourceColumn",
    "decide_window",
    "drop_abandoned_staging",
    "prepare_destination",
    "publish",
    "read_state",
    "stage",
]


def decide_window(
    source: psycopg.Connection, destination: psycopg.Connection, load: TableLoad, *, force_full: bool = False
) -> Window:
    require_autocommit(source, destination)
    prepare_destination(destination, load)
    return choose_window(source, load, lambda: read_state(destination, load), force_full=force_full)


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
    bound, params = window_bound(columns, load, window)
    key_table, key_rows = None, None
    with (
        destination.transaction(),
        consistent_read(source) as snapshot_at,
        figures_alongside(source, load, columns, window) as figures,
    ):
        stats = _copy_into(source, destination, load, columns, staging_table, bound, params, progress)
        if load.stages_keys(window.load_mode):  # every key of the same snapshot, for incremental deletes
            keys = [next(c for c in columns if c.column.name == k) for k in load.primary_key]
            key_table = sql.key_table_name(staging_table)
            key_rows = _copy_into(source, destination, load, keys, key_table).rows
        facts = window_facts(source, load, columns, window, snapshot_at, figures())
    names = [c.column.name for c in columns]
    staged = Staged.of(staging_table, stats.rows, names, window, facts, key_table=key_table, key_rows=key_rows)
    return staged, stats


def _copy_into(
    source: psycopg.Connection,
    destination: psycopg.Connection,
    load: TableLoad,
    columns: list[SourceColumn],
    table: str,
    bound: str | None = None,
    params: dict | None = None,
    progress: Any = None,
) -> CopyStats:
    """``columns`` of the source's rows (those with ``cursor >= bound``, or all) into a fresh staging ``table``."""
    schema, names = load.destination.schema, [c.column.name for c in columns]
    for statement in sql.create_staging(schema, table, [c.column for c in columns]):
        destination.execute(statement)
    binary = all(c.binary_exact for c in columns)  # else text: exact for every type (dagforge.sql.types)
    exports = ", ".join(export_expression(c.column.name, c.column.type_sql) for c in columns)
    select = sql.select_window(load.source.schema, load.source.table, names, load.cursor, bound, select_list=exports)
    copy_in = sql.copy_in(schema, table, names, binary)
    return stream_copy(source, destination, sql.copy_out(select, binary), copy_in, params=params, progress=progress)


def restage_direct(
    source: psycopg.Connection, destination: psycopg.Connection, load: TableLoad, staged: Staged
) -> Staged:
    """Stage again from the source, with the window the check step decided."""
    fresh, _ = stage(source, destination, load, staged.source_window, staged.staging_table)
    return fresh
