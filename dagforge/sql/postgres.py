"""PostgreSQL statements for staging, publishing and watermarks.

Pure functions: names in, SQL text out (``list[str]`` where a step has several statements).
Every identifier goes through :func:`ident`; every value is a ``%(name)s`` parameter. Nothing here
opens a connection, so the text is unit-tested exactly and then run against real servers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagforge.spec.model import DELETED_AT, FILES_TABLE, INTERVAL_COLUMN, duration_seconds

STATE_TABLE = "_dagforge_state"
RUNS_TABLE = "_dagforge_runs"
"""One row per applied (or skipped) publish, keyed by the staging's ``stage_id``: retries find theirs."""
DDL_LOCK_KEY = 0x0DA6F0_26E
"""Advisory lock taken around CREATE ... IF NOT EXISTS, which races between parallel tasks."""


def ident(name: str) -> str:
    """Quote one identifier: ``x"y`` → ``"x""y"``."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A string literal (standard_conforming_strings, on since PostgreSQL 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def qualified(schema: str, table: str) -> str:
    return f"{ident(schema)}.{ident(table)}"


def column_list(columns: Sequence[str]) -> str:
    return ", ".join(ident(c) for c in columns)


@dataclass(frozen=True)
class Column:
    """A column as the source catalog describes it."""

    name: str
    type_sql: str
    """``format_type()`` output, e.g. ``numeric(12,2)`` or ``timestamp with time zone``."""
    not_null: bool = False


def describe_columns() -> str:
    """Columns of ``%(schema)s.%(table)s`` in table order: name, type text, NOT NULL, category, built-in,
    and the type's chain (:mod:`dagforge.sql.types`) as JSON ``[[kind, builtin, format_type], …]``:
    the column's type, then a domain's base type (with the domain's typmod) or an array's element."""
    return (
        "WITH RECURSIVE col AS (SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull "
        "FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) "
        "AND a.attnum > 0 AND NOT a.attisdropped), "
        "node AS (SELECT c.attnum, 0 AS depth, c.atttypid AS oid, c.atttypmod AS typmod FROM col c "
        "UNION ALL SELECT n.attnum, n.depth + 1, COALESCE(e.oid, t.typbasetype), "
        "CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE n.typmod END "
        "FROM node n JOIN pg_type t ON t.oid = n.oid LEFT JOIN pg_type e ON e.typarray = t.oid "
        "WHERE t.typtype = 'd' OR e.oid IS NOT NULL) "
        "SELECT c.attname, format_type(c.atttypid, c.atttypmod), c.attnotnull, t.typcategory, "
        "c.atttypid < 16384 AS builtin, "
        "(SELECT json_agg(json_build_array(CASE WHEN EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = n.oid) "
        "THEN 'a' ELSE nt.typtype::text END, n.oid < 16384, format_type(n.oid, n.typmod)) ORDER BY n.depth) "
        "FROM node n JOIN pg_type nt ON nt.oid = n.oid WHERE n.attnum = c.attnum) AS chain "
        "FROM col c JOIN pg_type t ON t.oid = c.atttypid ORDER BY c.attnum"
    )


def table_exists() -> str:
    return "SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) IS NOT NULL"


def ensure_schema(schema: str) -> list[str]:
    """Create the schema when missing; the advisory lock keeps parallel tasks from racing."""
    return [f"SELECT pg_advisory_xact_lock({DDL_LOCK_KEY})", f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}"]


def ensure_schema_and_state(schema: str) -> list[str]:
    """Create the destination schema, the state table and the publish log when missing (race-safe)."""
    return [
        *ensure_schema(schema),
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, STATE_TABLE)} ("
        "pipeline text NOT NULL, table_name text NOT NULL, cursor_column text, watermark text, "
        "mode text NOT NULL, rows_loaded bigint NOT NULL, run_id text, "
        "updated_at timestamptz NOT NULL DEFAULT now(), snapshot_at timestamptz, full_snapshot_at timestamptz, "
        "zone_digest text, schema_changes text, reconciliation text, key_digest text, "
        "PRIMARY KEY (pipeline, table_name))",
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, RUNS_TABLE)} ("
        "pipeline text NOT NULL, table_name text NOT NULL, stage_id text NOT NULL, run_id text NOT NULL, "
        "outcome text NOT NULL, rows_loaded bigint NOT NULL, snapshot_at timestamptz, "
        "published_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, table_name, stage_id))",
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, FILES_TABLE)} ("
        "pipeline text NOT NULL, table_name text NOT NULL, interval_start text NOT NULL, url text, size bigint, "
        "etag text, last_modified text, sha256 text, rows_loaded bigint NOT NULL, bad_rows bigint, "
        "snapshot_at timestamptz, run_id text, stage_id text, loaded_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (pipeline, table_name, interval_start))",
    ]


def read_file(schema: str) -> str:
    """What a file source loaded for one interval (``""``: the table as a whole)."""
    return (
        f"SELECT url, size, etag, last_modified, sha256, rows_loaded, run_id, snapshot_at::text "
        f"FROM {qualified(schema, FILES_TABLE)} "
        "WHERE pipeline = %(pipeline)s AND table_name = %(table)s AND interval_start = %(interval)s"
    )


def newer_file_published(schema: str) -> str:
    """A read of the same interval newer than this one, published already (rule 2, per interval)."""
    return (
        f"SELECT snapshot_at, run_id FROM {qualified(schema, FILES_TABLE)} WHERE pipeline = %(pipeline)s "
        "AND table_name = %(table)s AND interval_start = %(interval)s "
        "AND snapshot_at > CAST(%(snapshot_at)s AS timestamptz)"
    )


def write_file(schema: str) -> str:
    """Record the file an interval loaded, replacing what it loaded before (:meth:`Staged.file_record`)."""
    return (
        f"INSERT INTO {qualified(schema, FILES_TABLE)} (pipeline, table_name, interval_start, url, size, etag, "
        "last_modified, sha256, rows_loaded, bad_rows, snapshot_at, run_id, stage_id) VALUES (%(pipeline)s, "
        "%(table_name)s, %(interval_start)s, %(url)s, %(size)s, %(etag)s, %(last_modified)s, %(sha256)s, "
        "%(rows_loaded)s, %(bad_rows)s, %(snapshot_at)s, %(run_id)s, %(stage_id)s) "
        "ON CONFLICT (pipeline, table_name, interval_start) DO UPDATE SET url = EXCLUDED.url, size = EXCLUDED.size, "
        "etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified, sha256 = EXCLUDED.sha256, "
        "rows_loaded = EXCLUDED.rows_loaded, bad_rows = EXCLUDED.bad_rows, snapshot_at = EXCLUDED.snapshot_at, "
        "run_id = EXCLUDED.run_id, stage_id = EXCLUDED.stage_id, loaded_at = now()"
    )


def delete_interval(schema: str, target: str) -> str:
    """``mode: interval``: the rows an interval loaded before, over ``%(interval)s``."""
    return f"DELETE FROM {qualified(schema, target)} WHERE {ident(INTERVAL_COLUMN)} = CAST(%(interval)s AS timestamptz)"


def insert_all(schema: str, target: str, staging: str, columns: Sequence[str], casts: Mapping[str, str]) -> str:
    return (
        f"INSERT INTO {qualified(schema, target)} ({column_list(columns)}) SELECT {staged_values(columns, casts)} "
        f"FROM {qualified(schema, staging)} s"
    )


STATE_ADDED_COLUMNS = (
    ("snapshot_at", "timestamptz"),
    ("full_snapshot_at", "timestamptz"),
    ("zone_digest", "text"),
    ("schema_changes", "text"),
    ("reconciliation", "text"),
    ("key_digest", "text"),
)
"""Columns the state table gained after its first release: added to older state tables."""


def missing_state_columns() -> str:
    """Which of :data:`STATE_ADDED_COLUMNS` the state table of ``%(schema)s`` lacks."""
    names = ", ".join(literal(name) for name, _ in STATE_ADDED_COLUMNS)
    return (
        "SELECT n FROM unnest(ARRAY[" + names + "]) AS n WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a "
        f"WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, {literal(STATE_TABLE)})) "
        "AND a.attname = n AND NOT a.attisdropped)"
    )


def add_state_columns(schema: str, names: Sequence[str]) -> list[str]:
    types = dict(STATE_ADDED_COLUMNS)
    return [
        f"ALTER TABLE {qualified(schema, STATE_TABLE)} ADD COLUMN IF NOT EXISTS {ident(n)} {types[n]}" for n in names
    ]


def read_state(schema: str) -> str:
    """The table's watermark and lookback digest."""
    return (
        f"SELECT watermark, zone_digest, key_digest FROM {qualified(schema, STATE_TABLE)} "
        "WHERE pipeline = %(pipeline)s AND table_name = %(table)s"
    )


def cursor_bound(cursor_type: str, category: str, lookback: str | int | None) -> str:
    """The inclusive lower bound as SQL over ``%(watermark)s``, minus ``lookback`` if any.

    ``lookback`` must be a duration such as ``"10m"`` for date/time cursors (type category ``D``)
    and a whole number for numeric ones (category ``N``); anything else is a ValueError.
    """
    bound = f"CAST(%(watermark)s AS {cursor_type})"
    if lookback is None:
        return bound
    if category == "D" and isinstance(lookback, str):
        return f"({bound} - make_interval(secs => {duration_seconds(lookback)}))"
    if category == "N" and isinstance(lookback, int):
        return f"({bound} - {lookback})"
    if category in ("D", "N"):
        wanted = "a duration such as 10m" if category == "D" else "a number"
        raise ValueError(f"lookback {lookback!r} does not fit a {cursor_type} cursor: use {wanted}")
    raise ValueError(f"lookback needs a date/time or numeric cursor, not {cursor_type}")


def has_rows_after(schema: str, table: str, cursor: str, cursor_type: str) -> str:
    """True when some row's cursor is strictly past the watermark: something new to load."""
    return (
        f"SELECT EXISTS (SELECT 1 FROM {qualified(schema, table)} "
        f"WHERE {ident(cursor)} > CAST(%(watermark)s AS {cursor_type}))"
    )


def zone_digest(schema: str, table: str, key: Sequence[str], cursor: str, bound: str) -> str:
    """Count and an order-independent hash of (key, cursor) of the rows with ``cursor >= bound``.

    The lookback zone's fingerprint: the stage step computes it over the rows it read (bound from
    the new watermark), the check step over the source now (bound from the stored watermark); a
    difference means rows arrived, changed or went inside the zone. Both use this same text.
    """
    row = ", ".join(ident(c) for c in (*key, cursor))
    return (
        "SELECT count(*)::text || ':' || coalesce(sum(hashtextextended(ROW(" + row + ")::text, 0)), 0)::text "
        f"FROM {qualified(schema, table)} WHERE {ident(cursor)} >= {bound}"
    )


def key_digest(schema: str, table: str, key: Sequence[str]) -> str:
    """Count and an order-independent hash of every key of the table: changes when a row is deleted."""
    row = ", ".join(ident(c) for c in key)
    return (
        "SELECT count(*)::text || ':' || coalesce(sum(hashtextextended(ROW(" + row + ")::text, 0)), 0)::text "
        f"FROM {qualified(schema, table)}"
    )


SNAPSHOT_CLOCK = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
"""The source's clock as ISO 8601 UTC; as a transaction's first statement, the time of its snapshot."""

BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _window_where(cursor: str | None, bound: str | None, where: str = "") -> str:
    conditions = [*([f"{ident(cursor)} >= {bound}"] if cursor and bound else []), *([where] if where else [])]
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def select_window(
    schema: str,
    table: str,
    columns: Sequence[str],
    cursor: str | None,
    bound: str | None,
    *,
    select_list: str | None = None,
    where: str = "",
) -> str:
    """The rows to load: all of them, or those with ``cursor >= bound``; and ``where`` (a chunk's range).

    ``select_list`` replaces the quoted column names, e.g. with export expressions.
    """
    return f"SELECT {select_list or column_list(columns)} FROM {qualified(schema, table)}" + _window_where(
        cursor, bound, where
    )


def cursor_range(schema: str, table: str, cursor: str, bound: str | None, where: str = "") -> str:
    """The cursor's min and max (as text) over the same window."""
    return (
        f"SELECT min({ident(cursor)})::text, max({ident(cursor)})::text FROM {qualified(schema, table)}"
        + _window_where(cursor, bound, where)
    )


def copy_out(select_sql: str, binary: bool) -> str:
    return f"COPY ({select_sql}) TO STDOUT" + (" (FORMAT binary)" if binary else "")


def copy_in(
    schema: str, table: str, columns: Sequence[str], binary: bool, *, csv: bool = False, freeze: bool = False
) -> str:
    """``COPY … FROM STDIN`` in text, binary or CSV format; ``freeze``: into a table created in this
    transaction, the rows written frozen, visible to every snapshot, even one taken before the copy
    (what lets a swapped-in table never look empty, docs/decisions/0013)."""
    options = [*(["FORMAT binary"] if binary else ["FORMAT csv"] if csv else []), *(["FREEZE"] if freeze else [])]
    return f"COPY {qualified(schema, table)} ({column_list(columns)}) FROM STDIN" + (
        f" ({', '.join(options)})" if options else ""
    )


STAGING_PREFIX = "_dagforge_stg_"
KEYS_PREFIX = "_dagforge_key_"
"""Staged key sets (incremental deletes) share their staging table's name after this prefix."""
STAGING_COMMENT = "dagforge staging, created "
STAGING_LIFETIME_HOURS = 24
"""Staging tables of runs that never published are dropped by a later publish after this long."""


def staging_columns(columns: Sequence[Any]) -> list[Column]:
    """Columns as they travel between steps (:class:`dagforge.contracts.Column`: name, type, the
    source's NOT NULL) as a staging table declares them."""
    return [Column(c.name, c.type_sql, c.not_null) for c in columns]


def create_staging(schema: str, staging: str, columns: Sequence[Column], *, logged: bool = False) -> list[str]:
    """A fresh staging table, its creation time as comment: unlogged, or with ``logged`` WAL-logged
    (a full replace the publish swaps in, docs/decisions/0013).

    ``columns`` carry the destination's types (:func:`dagforge.sql.types.portable_type`, which
    :func:`dagforge.sources.postgres.describe_source` applies), never a source-only type name.
    """
    return [
        f"DROP TABLE IF EXISTS {qualified(schema, staging)}",
        _create_staging_table(schema, staging, columns, logged=logged),
        _staging_comment(schema, staging),
    ]


def _create_staging_table(
    schema: str, staging: str, columns: Sequence[Column], *, logged: bool, if_missing: bool = False
) -> str:
    kind = "TABLE" if logged else "UNLOGGED TABLE"
    body = ", ".join(f"{ident(c.name)} {c.type_sql}" + (" NOT NULL" if c.not_null else "") for c in columns)
    return f"CREATE {kind} {'IF NOT EXISTS ' if if_missing else ''}{qualified(schema, staging)} ({body})"


def _staging_comment(schema: str, table: str) -> str:
    """The table's creation time as its comment (what :func:`abandoned_staging` reads)."""
    return (
        "DO $dagforge$ BEGIN EXECUTE format('COMMENT ON TABLE %s IS %L', "
        f"{literal(qualified(schema, table))}, {literal(STAGING_COMMENT)} || now()); END $dagforge$"
    )


def key_table_name(staging_table: str) -> str:
    """The key-set table that goes with a staging table."""
    return KEYS_PREFIX + staging_table.removeprefix(STAGING_PREFIX)


# ---- chunked staging: the chunks COPY into one shared staging table (docs/decisions/0014) ----


def create_shared_staging(schema: str, staging: str, columns: Sequence[Column], *, logged: bool = False) -> list[str]:
    """The chunks' one staging table, when missing (every chunk runs it, under :func:`chunk_lock`):
    logged when the publish may swap it in (its rows frozen by ``VACUUM (FREEZE)`` first)."""
    create = _create_staging_table(schema, staging, columns, logged=logged, if_missing=True)
    return [create, _staging_comment(schema, staging)]


def chunk_lock() -> str:
    """Serializes what writes one staging's ``%(lock_key)s`` (its creation; one chunk's rows), until commit."""
    return "SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 1))"


def delete_where(schema: str, table: str, where: str) -> str:
    """A chunk's rows of an earlier attempt (``where``: its range; empty: every row)."""
    return f"DELETE FROM {qualified(schema, table)}" + (f" WHERE {where}" if where else "")


def current_xact_id() -> str:
    """This transaction's id (``xid8`` as text: 64 bits, never wraps): what wrote a chunk's rows."""
    return "SELECT pg_current_xact_id()::text"


def staging_persistence() -> str:
    """``relpersistence`` of ``%(schema)s.%(table)s`` (``p``: logged), no row when it does not exist."""
    return (
        "SELECT relpersistence FROM pg_class "
        "WHERE oid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text))"
    )


def freeze(schema: str, table: str) -> str:
    """Freeze every row that no open snapshot can still miss (outside a transaction block)."""
    return f"VACUUM (FREEZE) {qualified(schema, table)}"


def drop_staging(schema: str, table: str) -> str:
    """A staging (or key) table (and the chunk tables of a chunked staging of an older version)."""
    return f"DROP TABLE IF EXISTS {qualified(schema, table)} CASCADE"


def key_range(schema: str, table: str, column: str) -> str:
    """The min and max of an integer column (text), one row; NULLs when the table has none."""
    return f"SELECT min({ident(column)})::text, max({ident(column)})::text FROM {qualified(schema, table)}"


def chunk_where(column: str, low: int | None, high: int | None, nulls: bool = True) -> str:
    """A chunk's rows: ``low <= column < high``; the last chunk (no ``high``) also takes NULLs, unless
    told there are none (``OR column IS NULL`` makes the planner scan the whole table)."""
    name, conditions = ident(column), []
    if low is not None:
        conditions.append(f"{name} >= {int(low)}")
    if high is not None:
        conditions.append(f"{name} < {int(high)}")
    elif nulls and conditions:
        return f"({conditions[0]} OR {name} IS NULL)"
    return " AND ".join(conditions)


def abandoned_staging() -> str:
    """Staging (and key-set) tables in ``%(schema)s`` created more than :data:`STAGING_LIFETIME_HOURS` ago."""
    prefixes = [literal(p.replace("_", "\\_") + "%%") for p in (STAGING_PREFIX, KEYS_PREFIX)]  # _: LIKE wildcard
    return (
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = %(schema)s AND c.relkind = 'r' "
        f"AND (c.relname LIKE {prefixes[0]} OR c.relname LIKE {prefixes[1]}) "
        f"AND obj_description(c.oid, 'pg_class') LIKE {literal(STAGING_COMMENT + '%%')} "
        f"AND substr(obj_description(c.oid, 'pg_class'), {len(STAGING_COMMENT) + 1})::timestamptz "
        f"< now() - interval '{STAGING_LIFETIME_HOURS} hours'"
    )


def count_rows(schema: str, table: str) -> str:
    return f"SELECT count(*) FROM {qualified(schema, table)}"


def create_target_like(schema: str, target: str, staging: str, primary_key: Sequence[str]) -> list[str]:
    """The destination table, shaped like staging, with its primary key; only run when missing."""
    statements = [f"CREATE TABLE {qualified(schema, target)} (LIKE {qualified(schema, staging)} INCLUDING DEFAULTS)"]
    if primary_key:
        statements.append(f"ALTER TABLE {qualified(schema, target)} ADD PRIMARY KEY ({column_list(primary_key)})")
    return statements


def staged_values(columns: Sequence[str], casts: Mapping[str, str] | None = None) -> str:
    """The staged columns (alias ``s``), each cast to the destination's type where ``casts`` says."""
    casts = casts or {}
    return ", ".join(f"CAST(s.{ident(c)} AS {casts[c]})" if c in casts else f"s.{ident(c)}" for c in columns)


def publish_replace(
    schema: str,
    target: str,
    staging: str,
    columns: Sequence[str],
    where: str | None = None,
    casts: Mapping[str, str] | None = None,
) -> list[str]:
    """Full load: swap the contents inside the caller's transaction.

    DELETE rather than TRUNCATE: readers keep seeing the old rows (MVCC) until commit, even
    those in snapshots older than this transaction; see docs/decisions/0002.
    """
    cols = column_list(columns)
    return [
        f"DELETE FROM {qualified(schema, target)}",
        f"INSERT INTO {qualified(schema, target)} ({cols}) SELECT {staged_values(columns, casts)} "
        f"FROM {qualified(schema, staging)} s" + (f" WHERE {where}" if where else ""),
    ]


def publish_upsert(
    schema: str,
    target: str,
    staging: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    cursor: str | None = None,
    *,
    null_fill: Sequence[str] = (),
    deleted_at: str | None = None,
    where: str | None = None,
    casts: Mapping[str, str] | None = None,
) -> list[str]:
    """Incremental load: insert new keys, update existing ones, inside the caller's transaction.

    With a ``cursor``, a row is only updated by a version whose cursor is not older than the one
    in the table: a late publish of an older window never brings older versions back.
    ``null_fill`` columns (the source dropped them) are set to NULL on update; ``deleted_at`` is
    the SQL (over staging alias ``s``) of the soft-delete time to write, NULL for a live row; a
    deletion time already set is kept. ``where`` filters the staged rows (alias ``s``).
    """
    cols = column_list(columns)
    values = staged_values(columns, casts)
    if deleted_at is not None:
        cols += f", {ident(DELETED_AT)}"
        values += f", {deleted_at}"
    updates = [f"{ident(c)} = EXCLUDED.{ident(c)}" for c in columns if c not in primary_key]
    updates += [f"{ident(c)} = NULL" for c in null_fill]
    if deleted_at is not None:
        d = ident(DELETED_AT)
        updates.append(f"{d} = CASE WHEN EXCLUDED.{d} IS NULL THEN NULL ELSE COALESCE(t.{d}, EXCLUDED.{d}) END")
    action = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
    if updates and cursor:
        action += f" WHERE t.{ident(cursor)} IS NULL OR EXCLUDED.{ident(cursor)} >= t.{ident(cursor)}"
    return [
        f"INSERT INTO {qualified(schema, target)} AS t ({cols}) SELECT {values} FROM {qualified(schema, staging)} s"
        + (f" WHERE {where}" if where else "")
        + f" ON CONFLICT ({column_list(primary_key)}) {action}"
    ]


def _same_key(primary_key: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{ident(c)} = {right}.{ident(c)}" for c in primary_key)


def delete_missing(schema: str, target: str, keys: str, primary_key: Sequence[str]) -> str:
    """Hard deletes: rows whose key is not in the staged key set (or staged full table) ``keys``."""
    return (
        f"DELETE FROM {qualified(schema, target)} t WHERE NOT EXISTS "
        f"(SELECT 1 FROM {qualified(schema, keys)} k WHERE {_same_key(primary_key, 'k', 't')})"
    )


def mark_missing(schema: str, target: str, keys: str, primary_key: Sequence[str]) -> str:
    """Soft deletes: rows whose key is not in ``keys`` get ``_dagforge_deleted_at`` (once)."""
    d = ident(DELETED_AT)
    return (
        f"UPDATE {qualified(schema, target)} t SET {d} = CAST(%(snapshot_at)s AS timestamptz) WHERE t.{d} IS NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {qualified(schema, keys)} k WHERE {_same_key(primary_key, 'k', 't')})"
    )


def flag_set(alias: str, flag: str, flag_type: str) -> str:
    """SQL true when a source's own delete flag marks the row: a true boolean, or any other non-NULL value."""
    column = f"{alias}.{ident(flag)}"
    return f"{column} IS TRUE" if flag_type == "boolean" else f"{column} IS NOT NULL"


def delete_flagged(
    schema: str, target: str, staging: str, primary_key: Sequence[str], flagged: str, cursor: str | None
) -> str:
    """Hard deletes by the source's flag: target rows whose staged version is flagged (and not older)."""
    guard = f" AND (t.{ident(cursor)} IS NULL OR s.{ident(cursor)} >= t.{ident(cursor)})" if cursor else ""
    return (
        f"DELETE FROM {qualified(schema, target)} t USING {qualified(schema, staging)} s "
        f"WHERE {_same_key(primary_key, 's', 't')} AND {flagged}{guard}"
    )


def table_columns() -> str:
    """Name, ``format_type`` and NOT NULL of every column of ``%(schema)s.%(table)s``, in order."""
    return (
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )


def add_column(schema: str, table: str, column: str, type_sql: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ADD COLUMN IF NOT EXISTS {ident(column)} {type_sql}"


def widen_column(schema: str, table: str, column: str, type_sql: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {ident(column)} TYPE {type_sql}"


def inexact_value(schema: str, staging: str, column: str, target_type: str, staged_type: str) -> str:
    """A staged value of ``column`` that does not survive a round trip through ``target_type``, if any
    (an explicit cast rounds numerics and cuts strings; out of range raises)."""
    c = ident(column)
    return (
        f"SELECT {c}::text FROM {qualified(schema, staging)} "
        f"WHERE CAST(CAST({c} AS {target_type}) AS {staged_type}) IS DISTINCT FROM {c} LIMIT 1"
    )


def drop_not_null(schema: str, table: str, column: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {ident(column)} DROP NOT NULL"


PIN_EXPORT_STYLES = (
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)
"""Set in every read of the source (and the check's digests): a source role or database may set other
output styles, which text COPY would carry (``04/03/2024`` read back as April 3rd, floats cut to 15
digits). TimeZone needs no pin: timestamptz text carries its offset."""

PIN_TEXT_FORMS = ("SET LOCAL TimeZone = 'UTC'", *PIN_EXPORT_STYLES)
"""Run before :func:`column_checksums` on both servers: every value prints the same text on both."""


def column_checksums(
    relation: str, columns: Sequence[tuple[str, str | None]], key: Sequence[tuple[str, str | None]], where: str = ""
) -> str:
    """One row: per column, ``sum`` of a 64-bit hash of the text of (key…, value) over every row, as text.

    Order-independent, so the source and the destination compute it alike; a NULL hashes as
    ``ROW(NULL)``, not as nothing. Each ``(name, cast)`` casts the column first when ``cast`` is
    given (a destination column wider than the staged type prints like the staged type).
    ``relation`` is quoted already; ``where`` a condition or empty.
    """

    def value(name: str, cast: str | None) -> str:
        return f"CAST({ident(name)} AS {cast})" if cast else ident(name)

    keys = [value(n, c) for n, c in key]
    sums = [
        f"coalesce(sum(hashtextextended(ROW({', '.join([*keys, value(n, c)])})::text, 0)), 0)::text" for n, c in columns
    ]
    return f"SELECT {', '.join(sums) or 'NULL'} FROM {relation}" + (f" WHERE {where}" if where else "")


ROW_HASHES: dict[str, str] = {
    "int8": "hashint8extended(CAST({v} AS bigint), {seed})",
    "text": 'hashtextextended(CAST({v} AS text) COLLATE "C", {seed})',
    "bpchar": 'hashbpcharextended(CAST({v} AS bpchar) COLLATE "C", {seed})',
    "uuid": "uuid_hash_extended(CAST({v} AS uuid), {seed})",
    "timestamp": "timestamp_hash_extended(CAST({v} AS timestamp), {seed})",
    "timestamptz": "timestamp_hash_extended(CAST({v} AS timestamptz) AT TIME ZONE 'UTC', {seed})",
    "time": "time_hash_extended(CAST({v} AS time), {seed})",
}
"""The hash kinds :func:`row_checksum` may hash a column by, instead of its text: each is the type's own
64-bit hash (PostgreSQL 11 on), and two values hash alike exactly when their text forms are equal (what
the text method compares). Not here on purpose: numeric (its hash ignores the scale, ``1.0`` = ``1.00``),
floats (``-0`` hashes as ``0``), interval (``'1 day'`` = ``'24 hours'``), jsonb (compares numbers by
value), enums (hash their OID, which differs per server), date (no hash function of its own; a cast to
timestamp fails past year 294276), and anything whose collation could fold case (text is hashed in "C")."""

VARYING_TEXT = re.compile(r"text|character varying(\(\d+\))?")
PADDED_TEXT = re.compile(r"character\(\d+\)")
"""``format_type()`` texts of the string types: a string's bytes as they are, and ``character(n)`` (padded)."""

_HASH_KIND_OF_TYPE = {
    "int8": re.compile(r"smallint|integer|bigint"),
    "text": VARYING_TEXT,
    "bpchar": PADDED_TEXT,
    "uuid": re.compile(r"uuid"),
    "timestamp": re.compile(r"timestamp(\(\d\))? without time zone"),
    "timestamptz": re.compile(r"timestamp(\(\d\))? with time zone"),
    "time": re.compile(r"time(\(\d\))? without time zone"),
}


def row_hash_kind(type_sql: str) -> str | None:
    """The :data:`ROW_HASHES` kind of a ``format_type()`` text, None for a type hashed by its text
    (``character(n)`` only with its length: a bare ``bpchar`` keeps trailing spaces its hash ignores)."""
    return next((kind for kind, form in _HASH_KIND_OF_TYPE.items() if form.fullmatch(type_sql.strip())), None)


def row_checksum(
    relation: str, columns: Sequence[tuple[str, str | None]], where: str = "", hashed: Mapping[str, str] | None = None
) -> str:
    """One row: ``count(*)`` and the ``sum`` of a 64-bit hash of each row (``columns`` in this order; a
    ``(name, cast)`` casts first, as :func:`column_checksums`), as text.

    Order-independent, so the source and the destination compute it alike, and one hash per row, not
    one per column: about half the time of :func:`column_checksums` (which names a column that differs,
    so a publish runs it only to explain a difference). ``ROW(NULL)`` and ``ROW('')`` print apart.

    Without ``hashed``, the hash of the row's text (what versions before recorded). With it (column
    name → :data:`ROW_HASHES` kind), those columns are hashed by their type's own hash, seeded by their
    position, and the others by the text of their ``ROW``; the row's hash mixes them all (XOR, then one
    more hash, so a sum over rows cannot cancel values swapped between rows). Printing a timestamp or a
    ``character(n)`` costs more than hashing it: about half the time on tables of such columns.
    """

    def value(name: str, cast: str | None) -> str:
        return f"CAST({ident(name)} AS {cast})" if cast else ident(name)

    if not hashed:
        row = f"hashtextextended(ROW({', '.join(value(n, c) for n, c in columns)})::text, 0)"
    else:
        own = [
            f"coalesce({ROW_HASHES[hashed[n]].format(v=value(n, c), seed=i)}, 0)"
            for i, (n, c) in enumerate(columns, 1)
            if n in hashed
        ]
        rest = [value(n, c) for n, c in columns if n not in hashed]
        texts = [f"hashtextextended(ROW({', '.join(rest)})::text, 0)"] if rest else []
        row = f"hashint8extended({' # '.join(own + texts)}, 0)"
    return f"SELECT count(*), coalesce(sum({row}), 0)::text FROM {relation}" + (f" WHERE {where}" if where else "")


def count_where(relation: str, where: str = "") -> str:
    return f"SELECT count(*) FROM {relation}" + (f" WHERE {where}" if where else "")


def live(alias: str | None = None) -> str:
    """Rows not soft-deleted."""
    return (f"{alias}." if alias else "") + f"{ident(DELETED_AT)} IS NULL"


def null_rows(relation: str, columns: Sequence[str], where: str = "") -> str:
    """Rows with a NULL in any of ``columns``."""
    nulls = " OR ".join(f"{ident(c)} IS NULL" for c in columns)
    return f"SELECT count(*) FROM {relation} WHERE ({nulls})" + (f" AND {where}" if where else "")


def duplicate_rows(relation: str, columns: Sequence[str], where: str = "") -> str:
    """Rows beyond the first of each combination of ``columns`` that occurs more than once (NULLs equal)."""
    return (
        f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {relation}"
        + (f" WHERE {where}" if where else "")
        + f" GROUP BY {column_list(columns)} HAVING count(*) > 1) d"
    )


def staged_max_cursor(schema: str, staging: str, cursor: str) -> str:
    return f"SELECT max({ident(cursor)})::text FROM {qualified(schema, staging)}"


def column_not_null() -> str:
    """Whether column ``%(column)s`` of ``%(schema)s.%(table)s`` is NOT NULL (as the caller's snapshot sees
    the catalog: inside a read, what held for the rows that read sees)."""
    return (
        "SELECT coalesce(bool_or(a.attnotnull), false) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) "
        "AND a.attname = %(column)s AND NOT a.attisdropped"
    )


def column_type() -> str:
    """``format_type`` of column ``%(column)s`` of ``%(schema)s.%(table)s``."""
    return (
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) "
        "AND a.attname = %(column)s AND NOT a.attisdropped"
    )


def publish_lock() -> str:
    """Serializes the publishes of one destination table (any pipeline), until commit."""
    return "SELECT pg_advisory_xact_lock(hashtextextended('dagforge.publish:' || %(lock_key)s, 0))"


def transform_lock() -> str:
    """Serializes the runs of one transform, until commit."""
    return "SELECT pg_advisory_xact_lock(hashtextextended('dagforge.transform:' || %(lock_key)s, 0))"


def find_published(schema: str) -> str:
    return (
        f"SELECT outcome, rows_loaded, run_id FROM {qualified(schema, RUNS_TABLE)} "
        "WHERE pipeline = %(pipeline)s AND table_name = %(table)s AND stage_id = %(stage_id)s"
    )


def record_published(schema: str) -> str:
    return (
        f"INSERT INTO {qualified(schema, RUNS_TABLE)} "
        "(pipeline, table_name, stage_id, run_id, outcome, rows_loaded, snapshot_at) "
        "VALUES (%(pipeline)s, %(table)s, %(stage_id)s, %(run_id)s, %(outcome)s, %(rows)s, %(snapshot_at)s)"
    )


PUBLISH_LOG_DAYS = 30
"""How long the publish log remembers a staging (a retry later than that stages again)."""


def prune_published(schema: str) -> str:
    return (
        f"DELETE FROM {qualified(schema, RUNS_TABLE)} WHERE pipeline = %(pipeline)s AND table_name = %(table)s "
        f"AND published_at < now() - interval '{PUBLISH_LOG_DAYS} days'"
    )


def newer_snapshot_published(schema: str, load_mode: str) -> str:
    """The snapshot that makes this one too old, if any (rule 2 of docs/decisions/0008).

    A full replace must not be older than any snapshot published before; an incremental publish
    must not be older than the last full replace. NULL when this one may apply.
    """
    column = "snapshot_at" if load_mode == "full" else "full_snapshot_at"
    return (
        f"SELECT {column}, run_id FROM {qualified(schema, STATE_TABLE)} WHERE pipeline = %(pipeline)s "
        f"AND table_name = %(table)s AND {column} > CAST(%(snapshot_at)s AS timestamptz)"
    )


def write_state(schema: str, cursor_type: str | None, full: bool, knows_deletes: bool = False) -> str:
    """Upsert the table's state row after an applied publish (rules 2 and 3 of docs/decisions/0008).

    A full replace sets the watermark to its own (the new snapshot's maximum) and becomes the last
    full snapshot. An incremental publish moves the watermark (and the lookback digest with it)
    only forwards, comparing as ``cursor_type``; at an equal watermark the newer snapshot's digest wins.
    An incremental publish that applied deletes (``knows_deletes``) becomes the last full snapshot
    too: an older incremental one could bring a row it deleted back (docs/decisions/0010).
    """
    resets = full or knows_deletes
    state = qualified(schema, STATE_TABLE)
    new_snapshot = "COALESCE(EXCLUDED.snapshot_at, '-infinity')"
    old_snapshot = "COALESCE(s.snapshot_at, '-infinity')"
    if full or cursor_type is None:
        advance = "TRUE"
    else:
        new, old = f"CAST(EXCLUDED.watermark AS {cursor_type})", f"CAST(s.watermark AS {cursor_type})"
        advance = (
            f"(s.watermark IS NULL OR (EXCLUDED.watermark IS NOT NULL AND ({new} > {old} "
            f"OR ({new} = {old} AND {new_snapshot} >= {old_snapshot}))))"
        )
    full_snapshot = (
        f"GREATEST(COALESCE(s.full_snapshot_at, '-infinity'), {new_snapshot})" if resets else "s.full_snapshot_at"
    )
    return (
        f"INSERT INTO {state} AS s (pipeline, table_name, cursor_column, watermark, mode, rows_loaded, run_id, "
        "snapshot_at, full_snapshot_at, zone_digest, schema_changes, reconciliation, key_digest) "
        "VALUES (%(pipeline)s, %(table)s, %(cursor)s, %(watermark)s, %(mode)s, %(rows)s, %(run_id)s, "
        f"%(snapshot_at)s, {'%(snapshot_at)s' if resets else 'NULL'}, %(zone_digest)s, %(schema_changes)s, "
        "%(reconciliation)s, %(key_digest)s) "
        "ON CONFLICT (pipeline, table_name) DO UPDATE SET cursor_column = EXCLUDED.cursor_column, "
        f"watermark = CASE WHEN {advance} THEN EXCLUDED.watermark ELSE s.watermark END, "
        f"zone_digest = CASE WHEN {advance} THEN EXCLUDED.zone_digest ELSE s.zone_digest END, "
        "mode = EXCLUDED.mode, rows_loaded = EXCLUDED.rows_loaded, run_id = EXCLUDED.run_id, updated_at = now(), "
        f"snapshot_at = NULLIF(GREATEST({old_snapshot}, {new_snapshot}), '-infinity'), "
        f"full_snapshot_at = NULLIF({full_snapshot}, '-infinity'), "
        "schema_changes = COALESCE(EXCLUDED.schema_changes, s.schema_changes), "
        "reconciliation = COALESCE(EXCLUDED.reconciliation, s.reconciliation), "
        "key_digest = COALESCE(EXCLUDED.key_digest, s.key_digest)"
    )


def drop_table(schema: str, table: str) -> str:
    return f"DROP TABLE IF EXISTS {qualified(schema, table)}"


def create_generated_table(
    schema: str,
    table: str,
    columns: Sequence[tuple[str, str]],
    primary_key: Sequence[str],
    unique: Sequence[str],
    foreign_keys: Sequence[tuple[str, str, str]],
) -> str:
    """A generated table with its keys; ``types`` come from the schema-checked spec or from us."""
    parts = [f"{ident(name)} {type_sql}" for name, type_sql in columns]
    if primary_key:
        parts.append(f"PRIMARY KEY ({column_list(primary_key)})")
    if unique:
        parts.append(f"UNIQUE ({column_list(unique)})")
    parts += [
        f"FOREIGN KEY ({ident(column)}) REFERENCES {qualified(schema, parent)} ({ident(parent_column)})"
        for column, parent, parent_column in foreign_keys
    ]
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)} ({', '.join(parts)})"


def lock_table(schema: str, table: str) -> str:
    """Blocks other writers (a concurrent generate run) until commit; readers keep reading."""
    return f"LOCK TABLE {qualified(schema, table)} IN SHARE ROW EXCLUSIVE MODE"


def max_value(schema: str, table: str, column: str) -> str:
    return f"SELECT max({ident(column)}) FROM {qualified(schema, table)}"


def select_column(schema: str, table: str, column: str) -> str:
    return f"SELECT {ident(column)} FROM {qualified(schema, table)} WHERE {ident(column)} IS NOT NULL ORDER BY 1"


def select_columns(schema: str, table: str, columns: Sequence[str]) -> str:
    return f"SELECT {column_list(columns)} FROM {qualified(schema, table)}"


def fingerprint(relation: str) -> str:
    """Row count and an md5 over every column of every row, independent of physical order.

    ``relation`` is already quoted and qualified (e.g. from :func:`qualified`).
    """
    return f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {relation} t"


def require_autocommit(*connections: Any) -> None:
    """Every transaction of a load step is explicit: a ``with conn.transaction()`` on a connection
    outside autocommit would silently be a savepoint of an implicit transaction."""
    for conn in connections:
        if not conn.autocommit:
            raise ValueError("dagforge load steps need connections in autocommit mode")


# ---- full-load swap ----
# A full replace that swaps the staged table in instead of copying its rows (docs/decisions/0013).
# Catalog queries take ``%(schema)s``, ``%(table)s`` (the destination table) and ``%(staging)s``
# (NULL: only the destination's side is asked about).

SWAP_PREFIX = "_dagforge_swap_"
"""Indexes built on the staging table before the swap; renamed to the table's own names after it."""

_SWAP_RELATIONS = (
    "WITH t AS (SELECT c.* FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %(schema)s AND c.relname = %(table)s), "
    "s AS (SELECT c.* FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %(schema)s AND c.relname = %(staging)s) "
)
_INDEX_PREFIX = (
    "format('CREATE %%sINDEX %%I ON %%I.%%I USING ', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END, "
    "ic.relname, %(schema)s::text, t.relname)"
)
"""How ``pg_get_indexdef`` begins for index ``ic`` of ``t``; the rest is rebuilt on the staging table."""
_SWAP_KEEPS = (
    "(d.classid = 'pg_type'::regclass AND d.objid = t.reltype) "
    "OR (d.classid = 'pg_class'::regclass AND (d.objid = t.reltoastrelid "
    "OR d.objid IN (SELECT indexrelid FROM pg_index WHERE indrelid = t.oid))) "
    "OR (d.classid = 'pg_constraint'::regclass AND d.objid IN "
    "(SELECT oid FROM pg_constraint WHERE conrelid = t.oid AND contype IN ('p', 'u', 'c', 'n')))"
)
"""What may depend on the table: its row type, TOAST table, indexes, and keys, CHECK and NOT NULL constraints."""


def _swap_columns_of(alias: str) -> str:
    return (
        "(SELECT array_agg(ROW(a.attname, a.atttypid, a.atttypmod, a.attcollation)::text ORDER BY a.attnum) "
        f"FROM pg_attribute a WHERE a.attrelid = {alias}.oid AND a.attnum > 0 AND NOT a.attisdropped)"
    )


def swap_refusals() -> str:
    """Why the table cannot be swapped for the staging table, one reason a row (none: it can)."""
    reasons = [
        "SELECT 'it does not exist' WHERE NOT EXISTS (SELECT FROM t)",
        "SELECT format('it is not a plain table (relkind %%s)', relkind) FROM t WHERE relkind <> 'r'",
        "SELECT 'it is a partition' FROM t WHERE relispartition",
        "SELECT format('it is owned by %%s, not by %%s', pg_get_userbyid(relowner), current_user) FROM t "
        "WHERE relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        "SELECT 'it is unlogged' FROM t WHERE relpersistence <> 'p'",
        "SELECT 'it has row-level security' FROM t WHERE relrowsecurity OR relforcerowsecurity",
        "SELECT 'its replica identity is not the default' FROM t WHERE relreplident <> 'd'",
        "SELECT 'its tablespace or access method is not the staging table''s' FROM t LEFT JOIN s ON true "
        "WHERE t.reltablespace <> coalesce(s.reltablespace, 0) OR t.relam <> coalesce(s.relam, t.relam)",
        "SELECT format('it inherits from %%s', i.inhparent::regclass) FROM t JOIN pg_inherits i ON i.inhrelid = t.oid",
        "SELECT format('%%s inherits from it', i.inhrelid::regclass) FROM t JOIN pg_inherits i ON i.inhparent = t.oid",
        "SELECT format('it is in publication %%s', p.pubname) FROM pg_publication_tables p "
        "WHERE p.schemaname = %(schema)s AND p.tablename = %(table)s",
        "(SELECT DISTINCT format('%%s depends on it', pg_describe_object(d.classid, d.objid, d.objsubid)) "
        "FROM t JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid "
        f"WHERE NOT ({_SWAP_KEEPS}))",
        "(SELECT DISTINCT format('%%s uses its row type', pg_describe_object(d.classid, d.objid, d.objsubid)) "
        "FROM t JOIN pg_depend d ON d.refclassid = 'pg_type'::regclass AND d.refobjid = t.reltype "
        "WHERE NOT (d.classid = 'pg_type'::regclass AND d.deptype = 'i'))",
        "SELECT format('index %%s cannot be rebuilt from its definition', ic.relname) "
        "FROM t JOIN pg_index i ON i.indrelid = t.oid JOIN pg_class ic ON ic.oid = i.indexrelid "
        f"WHERE left(pg_get_indexdef(i.indexrelid), length({_INDEX_PREFIX})) <> {_INDEX_PREFIX}",
        "SELECT 'the staging table is unlogged (its rows are not frozen)' FROM s WHERE relpersistence <> 'p'",
        "SELECT 'the staging table has inheritance children' FROM s "
        "WHERE EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = s.oid)",
        # relfrozenxid: every xid before it is frozen in the table; a snapshot older than the chunks holds it back
        "SELECT 'the chunks'' rows are not frozen (a snapshot older than them is still open)' FROM s "
        "WHERE %(written_xid)s::text IS NOT NULL AND age(s.relfrozenxid) >= age(%(written_xid)s::xid8::xid)",
        "SELECT 'its columns differ from the staged ones (names, order, types or collations)' FROM t, s "
        f"WHERE {_swap_columns_of('t')} IS DISTINCT FROM {_swap_columns_of('s')}",
    ]
    return _SWAP_RELATIONS + " UNION ALL ".join(reasons)


def swap_indexes() -> str:
    """The table's indexes: name, unique, the definition after ``USING`` (the same on any table), and
    the primary key or unique constraint on it, if any: name, kind, deferrable, initially deferred."""
    return (
        _SWAP_RELATIONS + "SELECT ic.relname, i.indisunique, "
        f"substr(pg_get_indexdef(i.indexrelid), length({_INDEX_PREFIX}) + 1), k.conname, k.contype, "
        "coalesce(k.condeferrable, false), coalesce(k.condeferred, false) "
        "FROM t JOIN pg_index i ON i.indrelid = t.oid JOIN pg_class ic ON ic.oid = i.indexrelid "
        "LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = t.oid AND k.contype IN ('p', 'u') "
        "ORDER BY ic.relname"
    )


def swap_checks() -> str:
    """The table's CHECK constraints: name, definition."""
    return (
        _SWAP_RELATIONS + "SELECT k.conname, pg_get_constraintdef(k.oid) FROM t "
        "JOIN pg_constraint k ON k.conrelid = t.oid WHERE k.contype = 'c' ORDER BY k.conname"
    )


def swap_columns() -> str:
    """Per column of the table, in order: name, NOT NULL there, NOT NULL in staging, statistics target
    (NULL: the default), options (``name=value`` items or NULL), comment."""
    return (
        _SWAP_RELATIONS + "SELECT a.attname, a.attnotnull, b.attnotnull, NULLIF(a.attstattarget, -1), a.attoptions, "
        "col_description(t.oid, a.attnum) FROM t JOIN pg_attribute a ON a.attrelid = t.oid "
        "JOIN s ON true JOIN pg_attribute b ON b.attrelid = s.oid AND b.attname = a.attname "
        "WHERE a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )


def swap_table() -> str:
    """The table's comment and storage options (``name=value`` items or NULL), one row."""
    return _SWAP_RELATIONS + "SELECT obj_description(t.oid, 'pg_class'), t.reloptions FROM t"


def _grantee(alias: str) -> str:
    return f"CASE WHEN {alias}.grantee <> 0 THEN pg_get_userbyid({alias}.grantee) END"


def swap_revokes() -> str:
    """Who holds privileges on the staging table (NULL: PUBLIC), when the table's differ from them."""
    return (
        _SWAP_RELATIONS + f"SELECT DISTINCT {_grantee('g')} FROM t JOIN s ON t.relacl IS DISTINCT FROM s.relacl, "
        "aclexplode(coalesce(s.relacl, acldefault('r', s.relowner))) g"
    )


def swap_grants() -> str:
    """The table's privileges (when they differ from the staging table's) and its columns' privileges:
    privilege, grantee (NULL: PUBLIC), grantable, column (NULL: the table)."""
    return (
        _SWAP_RELATIONS + f"SELECT g.privilege_type, {_grantee('g')}, g.is_grantable, NULL::name "
        "FROM t JOIN s ON t.relacl IS DISTINCT FROM s.relacl, "
        "aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) g "
        f"UNION ALL SELECT g.privilege_type, {_grantee('g')}, g.is_grantable, a.attname FROM t "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL, "
        "aclexplode(a.attacl) g"
    )


CURRENT_LOCK_TIMEOUT = "SELECT current_setting('lock_timeout')"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(lock_timeout)s, true)"


def swap_lock(schema: str, table: str, mode: str) -> str:
    return f"LOCK TABLE {qualified(schema, table)} IN {mode} MODE"


def swap_index_name(staging: str, number: int) -> str:
    """Index ``number`` built on ``staging`` before the swap (unique per staging table)."""
    return f"{SWAP_PREFIX}{hashlib.sha1(staging.encode()).hexdigest()[:16]}_{number}"


def set_not_null(schema: str, table: str, column: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {ident(column)} SET NOT NULL"


def set_statistics(schema: str, table: str, column: str, target: int) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {ident(column)} SET STATISTICS {int(target)}"


def _options(items: Sequence[str]) -> str:
    """``name=value`` items (``reloptions``, ``attoptions``) as a SET list."""
    return ", ".join(f"{ident(name)} = {literal(value)}" for name, value in (item.split("=", 1) for item in items))


def set_column_options(schema: str, table: str, column: str, items: Sequence[str]) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ALTER COLUMN {ident(column)} SET ({_options(items)})"


def set_storage_options(schema: str, table: str, items: Sequence[str]) -> str:
    return f"ALTER TABLE {qualified(schema, table)} SET ({_options(items)})"


def comment_on_table(schema: str, table: str, comment: str | None) -> str:
    return f"COMMENT ON TABLE {qualified(schema, table)} IS {'NULL' if comment is None else literal(comment)}"


def comment_on_column(schema: str, table: str, column: str, comment: str) -> str:
    return f"COMMENT ON COLUMN {qualified(schema, table)}.{ident(column)} IS {literal(comment)}"


def create_index_as(schema: str, table: str, name: str, unique: bool, definition: str) -> str:
    """An index on ``table`` defined as another table's (``definition``: from :func:`swap_indexes`)."""
    return f"CREATE {'UNIQUE ' if unique else ''}INDEX {ident(name)} ON {qualified(schema, table)} USING {definition}"


_KEY_KINDS = {"p": "PRIMARY KEY", "u": "UNIQUE"}


def add_key_using_index(schema: str, table: str, index: str, kind: str, deferrable: bool, deferred: bool) -> str:
    """A primary key (``kind`` ``p``) or unique constraint (``u``) on an index built for it, named like it."""
    timing = (" DEFERRABLE" if deferrable else "") + (" INITIALLY DEFERRED" if deferred else "")
    return (
        f"ALTER TABLE {qualified(schema, table)} ADD CONSTRAINT {ident(index)} {_KEY_KINDS[kind]} "
        f"USING INDEX {ident(index)}{timing}"
    )


def add_constraint(schema: str, table: str, name: str, definition: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} ADD CONSTRAINT {ident(name)} {definition}"


def analyze(schema: str, table: str) -> str:
    return f"ANALYZE {qualified(schema, table)}"


def drop_replaced(schema: str, table: str) -> str:
    """The table the staging table replaces; never CASCADE: something that depends on it stops the swap."""
    return f"DROP TABLE {qualified(schema, table)}"


def rename_table(schema: str, table: str, new_name: str) -> str:
    return f"ALTER TABLE {qualified(schema, table)} RENAME TO {ident(new_name)}"


def rename_constraint(schema: str, table: str, constraint: str, new_name: str) -> str:
    """(A key's index is renamed with it.)"""
    return f"ALTER TABLE {qualified(schema, table)} RENAME CONSTRAINT {ident(constraint)} TO {ident(new_name)}"


def rename_index(schema: str, index: str, new_name: str) -> str:
    return f"ALTER INDEX {qualified(schema, index)} RENAME TO {ident(new_name)}"


def _privilege(privilege: str) -> str:
    if not privilege.replace(" ", "").isalpha():
        raise ValueError(f"not a privilege: {privilege!r}")
    return privilege


def grant(
    schema: str, table: str, privilege: str, grantee: str | None, grantable: bool, column: str | None = None
) -> str:
    """One privilege of :func:`swap_grants` (``grantee`` None: PUBLIC; ``column``: a column privilege)."""
    on = f" ({ident(column)})" if column is not None else ""
    to = "PUBLIC" if grantee is None else ident(grantee)
    option = " WITH GRANT OPTION" if grantable else ""
    return f"GRANT {_privilege(privilege)}{on} ON TABLE {qualified(schema, table)} TO {to}{option}"


def revoke_all(schema: str, table: str, grantee: str | None) -> str:
    return f"REVOKE ALL ON TABLE {qualified(schema, table)} FROM {'PUBLIC' if grantee is None else ident(grantee)}"
