"""The steps of a Postgres → Postgres table load, and the publish every Postgres destination shares.

1. :func:`decide_window` reads the table's state from the destination and asks the source whether
   anything is new (the source kind's ``decide``).
2. :func:`stage` streams the window into a fresh staging table on the destination, as COPY chunks
   of one consistent read of the source (:class:`~dagforge.contracts.CopyRead`), whose snapshot
   (time, cursor range, lookback digest) travels with it. A chunk's window (``chunks:``) stages
   into the staging table all chunks share, replacing what an earlier attempt of it wrote, in one
   commit; :meth:`~dagforge.contracts.Staged.combine` makes the chunks one staging to publish.
3. :func:`publish` moves staging into the final table and writes the state in one transaction,
   under the table's publish lock, by the ordering rules of docs/decisions/0008; then drops staging.

Each step commits its own work (or none of it) and can run again: a publish whose staging was
published already is a no-op, and a staging table that is gone or incomplete is staged again from
the window (``restage``). Connections must be in autocommit mode: every transaction here is
explicit, so a ``with conn.transaction()`` is never silently demoted to a savepoint.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import psycopg

from dagforge.contracts import Chunk, Column, CopyRead, RunInfo, Source, Staged, TableState, Window
from dagforge.loadspec import TableLoad
from dagforge.sql import postgres as sql
from dagforge.transfer import postgres_swap
from dagforge.transfer.pg_copy import CopyStats, pipe_copy
from dagforge.transfer.postgres_publish import drop_abandoned_staging, prepare_destination, publish, read_state

log = logging.getLogger(__name__)

__all__ = ["decide_window", "drop_abandoned_staging", "prepare_destination", "publish", "read_state", "stage"]


def decide_window(
    source: Source,
    destination: psycopg.Connection,
    load: TableLoad,
    *,
    force_full: bool = False,
    run: RunInfo | None = None,
) -> Window:
    sql.require_autocommit(destination)
    prepare_destination(destination, load)

    def state(interval: str | None = None) -> TableState:
        return read_state(destination, load, interval)

    return source.decide(load, state, run or RunInfo(), force_full=force_full)


def stage(
    source: Source,
    destination: psycopg.Connection,
    load: TableLoad,
    window: Window,
    staging_table: str,
    progress: Any = None,
) -> tuple[Staged, CopyStats]:
    """Copy the window's rows into a new staging table; committed when complete."""
    sql.require_autocommit(destination)
    key_table, key_rows, chunk = None, None, Chunk.of(window)
    schema = load.destination.schema
    swappable = postgres_swap.freezes_staging(destination, load, window.load_mode)
    with source.read(load, window) as read:
        staging = sql.staging_columns(read.columns)
        if chunk is None:  # logged and frozen when the publish may swap it in (docs/decisions/0013)
            create = sql.create_staging(schema, staging_table, staging, logged=swappable)
        else:  # a chunk: its rows, in the staging table all chunks share (docs/decisions/0014)
            _ensure_shared(destination, schema, staging_table, staging, logged=swappable)
            create = []
        written_xid = None
        with destination.transaction():
            if chunk is not None:  # one attempt of this chunk at a time; an earlier attempt's rows go
                destination.execute(sql.chunk_lock(), {"lock_key": f"{schema}.{staging_table}#{chunk.index}"})
                earlier = sql.chunk_where(chunk.by, chunk.low, chunk.high)
                destination.execute(sql.delete_where(schema, staging_table, earlier))
                written_xid = destination.execute(sql.current_xact_id()).fetchone()[0]
            frozen = swappable and chunk is None
            stats = _copy_into(read, destination, load, read.columns, staging_table, create, progress=progress,
                               frozen=frozen)  # fmt: skip
            keys = read.key_columns()
            if keys is not None:  # every key of the same snapshot, for incremental deletes
                key_table = sql.key_table_name(staging_table)
                key_create = sql.create_staging(schema, key_table, sql.staging_columns(keys))
                key_rows = _copy_into(read, destination, load, keys, key_table, key_create, keys=True).rows
            facts = read.snapshot()
    names = [c.name for c in read.columns]
    staged = Staged.of(staging_table, stats.rows, names, window, facts, key_table=key_table, key_rows=key_rows)
    return dataclasses.replace(staged, written_xid=written_xid), stats


def _ensure_shared(
    destination: psycopg.Connection, schema: str, staging_table: str, columns: list[sql.Column], *, logged: bool
) -> None:
    """The chunks' shared staging table, created by whichever chunk comes first (committed at once,
    so the others see it)."""
    with destination.transaction():
        destination.execute(sql.chunk_lock(), {"lock_key": f"{schema}.{staging_table}"})
        for statement in sql.create_shared_staging(schema, staging_table, columns, logged=logged):
            destination.execute(statement)


def _copy_into(
    read: CopyRead,
    destination: psycopg.Connection,
    load: TableLoad,
    columns: list[Column],
    table: str,
    create: list[str],
    *,
    keys: bool = False,
    progress: Any = None,
    frozen: bool = False,
) -> CopyStats:
    """The read's rows (or, with ``keys``, every key) into ``table``, made fresh by ``create``
    (``frozen``: written frozen, ``COPY … FREEZE``)."""
    schema, names = load.destination.schema, [c.name for c in columns]
    for statement in create:
        destination.execute(statement)
    with read.copy_stream(keys) as (chunks, binary):
        copy_in = sql.copy_in(schema, table, names, binary, freeze=frozen)
        return pipe_copy(chunks, destination, copy_in, progress=progress)


def restage_direct(source: Source, destination: psycopg.Connection, load: TableLoad, staged: Staged) -> Staged:
    """Stage again from the source, with the window the check step decided (every chunk of a
    chunked staging, one after the other, into a staging table made anew)."""
    chunks = staged.chunk_windows()
    if not chunks:
        fresh, _ = stage(source, destination, load, staged.source_window, staged.staging_table)
        return fresh
    destination.execute(sql.drop_staging(load.destination.schema, staged.staging_table))
    return Staged.combine([stage(source, destination, load, w, staged.staging_table)[0] for w in chunks])
