"""A full replace that swaps the staged table in instead of copying its rows (docs/decisions/0013).

The stage writes the staging table of a full replace logged, its rows frozen by ``COPY … FREEZE``
(:func:`freezes_staging`): visible to every snapshot, so a reader whose snapshot is older than the
swap reads the new rows, never an empty table. The publish (:func:`swap_in`), inside its
transaction, under the publish lock, in a savepoint of its own:

1. takes SHARE UPDATE EXCLUSIVE on the table (no DDL on it meanwhile; readers and writers go on) and
   asks the catalog whether anything stops the swap (:func:`dagforge.sql.postgres.swap_refusals`):
   what depends on the table (views, rules, foreign keys, triggers, policies, defaults, sequences,
   publications, inheritance), another owner, a staging table that is not a frozen copy of its shape
   (chunks write one shared staging table unfrozen; the publish freezes it first, :func:`freeze_chunks`);
2. takes SHARE on the staging table (its rows stay as they are until the commit), builds every
   index the table has (from ``pg_get_indexdef``) while the staged rows are measured (reconciliation,
   checks) on a second connection, for a large staging table; then NOT NULLs, the primary key and
   unique constraints on those indexes, CHECK constraints, storage options, statistics targets,
   comments; then ``ANALYZE``. Readers still read the old table;
3. takes ACCESS EXCLUSIVE (waiting at most :data:`SWAP_LOCK_TIMEOUT`), asks the catalog again, drops
   the table (never CASCADE), renames the staging table into its place, renames the indexes and
   constraints to the table's names and gives it the table's privileges.

A refusal, a lock not granted in time, a deadlock, a dependency the catalog check missed (the DROP
refuses), or new rows that break one of the table's unique indexes or CHECK constraints roll back
to the savepoint, locks included, and the publish copies the rows as before (``DELETE`` +
``INSERT``; which then fails on those rows, naming the table's own constraint), with a log line
saying why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors

from dagforge.contracts import Staged
from dagforge.drift import Resolution
from dagforge.loadspec import TableLoad
from dagforge.spec.model import Deletes, LoadMode
from dagforge.sql import postgres as sql
from dagforge.sql import twin

log = logging.getLogger(__name__)

TWIN_MIN_ROWS = 500_000
"""From how many staged rows the measurement runs on a second connection beside the index builds
(below, a connection costs more than the overlap gains)."""

SWAP_LOCK_TIMEOUT = "2s"
"""How long the swap waits for its locks on the table; readers that come meanwhile wait behind it.
A reader holding the table longer than this makes the publish copy the rows instead."""

_NOT_SWAPPED = "%s: copying the staged rows (DELETE + INSERT), not swapping the staging table in: %s"
_GAVE_WAY = (
    errors.LockNotAvailable,  # a reader holds the table longer than SWAP_LOCK_TIMEOUT
    errors.DeadlockDetected,
    errors.DependentObjectsStillExist,  # the DROP found what the catalog check missed
    errors.IntegrityError,  # the new rows break a unique index or CHECK: the copy says so about the table itself
)


class _Refused(Exception):
    """The swap cannot be used here; the message says why."""


def replaces(load: TableLoad, load_mode: str) -> bool:
    """A full load that replaces the table (``deletes: hard``, the default of a full window)."""
    return LoadMode(load_mode) is LoadMode.FULL and load.deletes_for(load_mode) is Deletes.HARD


def freezes_staging(conn: psycopg.Connection, load: TableLoad, load_mode: str) -> bool:
    """Whether the stage writes a logged staging table with frozen rows: a full replace whose table
    takes the swap as it stands now (the publish asks again). Otherwise staging stays unlogged."""
    if not replaces(load, load_mode) or load.deleted_flag or _catalog_refusals(conn, _names(load, None)):
        return False
    dest = load.destination
    log.info("%s.%s: staging logged, its rows frozen (the publish can swap it in)", dest.schema, dest.table)
    return True


def freeze_chunks(conn: psycopg.Connection, load: TableLoad, staged: Staged) -> None:
    """Chunks staged into one logged staging table (not frozen: many transactions wrote it): freeze
    its rows before the publish's transaction (``VACUUM`` runs outside one), so that the swap may
    take it. A snapshot older than the chunks keeps some rows unfrozen: the swap then refuses."""
    if staged.written_xid is None or not replaces(load, staged.load_mode):
        return  # not chunks (or not a replace): nothing to ask the catalog
    schema = load.destination.schema
    found = conn.execute(sql.staging_persistence(), {"schema": schema, "table": staged.staging_table}).fetchone()
    if found is None or found[0] != "p":
        return
    try:
        conn.execute(sql.freeze(schema, staged.staging_table))
    except errors.UndefinedTable:  # published and dropped meanwhile by another attempt: the publish says so
        return
    log.info("%s.%s: froze the chunks' %d staged rows", schema, staged.staging_table, staged.rows)


def swap_in(
    conn: psycopg.Connection,
    load: TableLoad,
    staged: Staged,
    resolution: Resolution,
    measure: Callable[[psycopg.Connection], object] = lambda _: True,
) -> bool:
    """Swap the staging table in for the table, inside the caller's transaction. False when the
    swap cannot be used (the log says why): the caller copies the rows. ``measure`` measures the
    staged rows (reconciliation, checks; given a connection that reads them) before the lock that
    makes readers wait: on a second connection while the indexes build, for a staging table of
    :data:`TWIN_MIN_ROWS` or more, else on ``conn`` once they are built."""
    if not replaces(load, staged.load_mode):
        return False
    where = f"{load.destination.schema}.{load.destination.table}"
    try:
        _refuse(_spec_refusals(load, resolution))
        with conn.transaction():  # a savepoint: whatever stops the swap rolls back to here, its locks too
            _swap(conn, _names(load, staged.staging_table, staged.written_xid), measure, staged.rows)
    except _Refused as refused:
        log.info(_NOT_SWAPPED, where, refused)
        return False
    except _GAVE_WAY as exc:
        log.info(_NOT_SWAPPED, where, f"the swap gave way ({exc.diag.message_primary})")
        return False
    log.info("%s: swapped the staging table in (%d rows, not copied)", where, staged.rows)
    return True


def _names(load: TableLoad, staging: str | None, written_xid: str | None = None) -> dict[str, Any]:
    return {
        "schema": load.destination.schema,
        "table": load.destination.table,
        "staging": staging,
        "written_xid": written_xid,
    }


def _spec_refusals(load: TableLoad, resolution: Resolution) -> list[str]:
    reasons = {
        f"deleted_flag {load.deleted_flag!r} filters the staged rows": bool(load.deleted_flag),
        "the staged columns differ from the table's (schema drift)": bool(resolution.changes),
    }
    return [reason for reason, applies in reasons.items() if applies]


def _catalog_refusals(conn: psycopg.Connection, names: dict[str, Any]) -> list[str]:
    return [reason for (reason,) in conn.execute(sql.swap_refusals(), names)]


def _refuse(reasons: list[str]) -> None:
    if reasons:
        raise _Refused("; ".join(reasons))


def _swap(
    conn: psycopg.Connection, names: dict[str, Any], measure: Callable[[psycopg.Connection], object], rows: int
) -> None:
    schema, table, staging = names["schema"], names["table"], names["staging"]
    _lock(conn, schema, table, "SHARE UPDATE EXCLUSIVE")
    _refuse(_catalog_refusals(conn, names))
    indexes, alters, finish = _rebuild(conn, names)
    _lock(conn, schema, staging, "SHARE")  # from here the staged rows stay as they are (a zombie chunk waits)
    with _beside(conn, measure, rows) as measured:
        for statement in indexes:
            conn.execute(statement)
        done = measured()
    if done is None:
        measure(conn)
    for statement in [*alters, sql.analyze(schema, staging)]:
        conn.execute(statement)
    _lock(conn, schema, table, "ACCESS EXCLUSIVE")
    _refuse(_catalog_refusals(conn, names))  # a view or a foreign key made while the indexes were built
    finish += _privileges(conn, names)
    for statement in [sql.drop_replaced(schema, table), sql.rename_table(schema, staging, table), *finish]:
        conn.execute(statement)


def _beside(
    conn: psycopg.Connection, measure: Callable[[psycopg.Connection], object], rows: int
) -> contextlib.AbstractContextManager[Callable[[], object]]:
    """``measure`` on a second connection (its own snapshot: ``conn`` holds SHARE on the staging
    table, so it reads the rows ``conn`` does), or nothing (None) for a small staging table."""
    if rows < TWIN_MIN_ROWS:
        return contextlib.nullcontext(lambda: None)
    return twin.alongside(conn, measure, (), "measuring the staged rows after the index builds", share=False)


def _lock(conn: psycopg.Connection, schema: str, table: str, mode: str) -> None:
    previous = conn.execute(sql.CURRENT_LOCK_TIMEOUT).fetchone()[0]
    conn.execute(sql.SET_LOCK_TIMEOUT, {"lock_timeout": SWAP_LOCK_TIMEOUT})
    conn.execute(sql.swap_lock(schema, table, mode))
    conn.execute(sql.SET_LOCK_TIMEOUT, {"lock_timeout": previous})


def _rebuild(conn: psycopg.Connection, names: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """What the table has, as statements on the staging table: ``indexes`` (CREATE INDEX, which
    lets readers of the staging table go on), ``alters`` (NOT NULLs, keys on those indexes, CHECKs,
    comments, options: they lock it exclusively) and, for the names its indexes and keys must take
    once the table is gone, ``finish`` (on the swapped-in table)."""
    schema, table, staging = names["schema"], names["table"], names["staging"]
    indexes, alters, finish = [], _column_statements(conn, names), []
    for number, row in enumerate(conn.execute(sql.swap_indexes(), names).fetchall()):
        name, unique, definition, key, kind, deferrable, deferred = row
        temporary = sql.swap_index_name(staging, number)
        indexes.append(sql.create_index_as(schema, staging, temporary, unique, definition))
        if key is None:
            finish.append(sql.rename_index(schema, temporary, name))
        else:
            alters.append(sql.add_key_using_index(schema, staging, temporary, kind, deferrable, deferred))
            finish.append(sql.rename_constraint(schema, table, temporary, key))
    alters += [sql.add_constraint(schema, staging, n, d) for n, d in conn.execute(sql.swap_checks(), names)]
    comment, options = conn.execute(sql.swap_table(), names).fetchone()
    alters.append(sql.comment_on_table(schema, staging, comment))  # replaces staging's own comment
    alters += [sql.set_storage_options(schema, staging, options)] if options else []
    return indexes, alters, finish


def _column_statements(conn: psycopg.Connection, names: dict[str, Any]) -> list[str]:
    schema, staging = names["schema"], names["staging"]
    statements: list[str] = []
    for column, not_null, staged_not_null, statistics, options, comment in conn.execute(sql.swap_columns(), names):
        if not_null != staged_not_null:
            statements.append((sql.set_not_null if not_null else sql.drop_not_null)(schema, staging, column))
        if statistics is not None:
            statements.append(sql.set_statistics(schema, staging, column, statistics))
        if options:
            statements.append(sql.set_column_options(schema, staging, column, options))
        if comment is not None:
            statements.append(sql.comment_on_column(schema, staging, column, comment))
    return statements


def _privileges(conn: psycopg.Connection, names: dict[str, Any]) -> list[str]:
    """The table's privileges for the swapped-in table (read under the exclusive lock, before the drop)."""
    schema, table = names["schema"], names["table"]
    revokes = [sql.revoke_all(schema, table, grantee) for (grantee,) in conn.execute(sql.swap_revokes(), names)]
    return revokes + [sql.grant(schema, table, *row) for row in conn.execute(sql.swap_grants(), names)]
