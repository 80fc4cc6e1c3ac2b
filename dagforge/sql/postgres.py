"""PostgreSQL statements for staging, publishing and watermarks.

Pure functions: names in, SQL text out (``list[str]`` where a step has several statements).
Every identifier goes through :func:`ident`; every value is a ``%(name)s`` parameter. Nothing here
opens a connection, so the text is unit-tested exactly and then run against real servers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dagforge.spec.model import duration_seconds

STATE_TABLE = "_dagforge_state"
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
    """Columns of ``%(schema)s.%(table)s`` in table order, with type text and category."""
    return (
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, t.typcategory, "
        "a.atttypid < 16384 AS builtin "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )


def table_exists() -> str:
    return "SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) IS NOT NULL"


def ensure_schema(schema: str) -> list[str]:
    """Create the schema when missing; the advisory lock keeps parallel tasks from racing."""
    return [f"SELECT pg_advisory_xact_lock({DDL_LOCK_KEY})", f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}"]


def ensure_schema_and_state(schema: str) -> list[str]:
    """Create the destination schema and the watermark table when missing (race-safe)."""
    return [
        *ensure_schema(schema),
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, STATE_TABLE)} ("
        "pipeline text NOT NULL, table_name text NOT NULL, cursor_column text, watermark text, "
        "mode text NOT NULL, rows_loaded bigint NOT NULL, run_id text, "
        "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, table_name))",
    ]


def read_watermark(schema: str) -> str:
    return (
        f"SELECT watermark FROM {qualified(schema, STATE_TABLE)} "
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


def _window_where(cursor: str | None, bound: str | None) -> str:
    return f" WHERE {ident(cursor)} >= {bound}" if cursor and bound else ""


def select_window(
    schema: str,
    table: str,
    columns: Sequence[str],
    cursor: str | None,
    bound: str | None,
    *,
    select_list: str | None = None,
) -> str:
    """The rows to load: all of them, or those with ``cursor >= bound``.

    ``select_list`` replaces the quoted column names, e.g. with export expressions.
    """
    return f"SELECT {select_list or column_list(columns)} FROM {qualified(schema, table)}" + _window_where(
        cursor, bound
    )


def cursor_range(schema: str, table: str, cursor: str, bound: str | None) -> str:
    """The cursor's min and max (as text) over the same window."""
    return (
        f"SELECT min({ident(cursor)})::text, max({ident(cursor)})::text FROM {qualified(schema, table)}"
        + _window_where(cursor, bound)
    )


def copy_out(select_sql: str, binary: bool) -> str:
    return f"COPY ({select_sql}) TO STDOUT" + (" (FORMAT binary)" if binary else "")


def copy_in(schema: str, table: str, columns: Sequence[str], binary: bool) -> str:
    return f"COPY {qualified(schema, table)} ({column_list(columns)}) FROM STDIN" + (
        " (FORMAT binary)" if binary else ""
    )


def create_staging(schema: str, staging: str, columns: Sequence[Column]) -> list[str]:
    """A fresh, unlogged staging table with the source's column types."""
    body = ", ".join(f"{ident(c.name)} {c.type_sql}" + (" NOT NULL" if c.not_null else "") for c in columns)
    return [
        f"DROP TABLE IF EXISTS {qualified(schema, staging)}",
        f"CREATE UNLOGGED TABLE {qualified(schema, staging)} ({body})",
    ]


def count_rows(schema: str, table: str) -> str:
    return f"SELECT count(*) FROM {qualified(schema, table)}"


def create_target_like(schema: str, target: str, staging: str, primary_key: Sequence[str]) -> list[str]:
    """The destination table, shaped like staging, with its primary key; only run when missing."""
    statements = [f"CREATE TABLE {qualified(schema, target)} (LIKE {qualified(schema, staging)} INCLUDING DEFAULTS)"]
    if primary_key:
        statements.append(f"ALTER TABLE {qualified(schema, target)} ADD PRIMARY KEY ({column_list(primary_key)})")
    return statements


def publish_replace(schema: str, target: str, staging: str, columns: Sequence[str]) -> list[str]:
    """Full load: swap the contents inside the caller's transaction.

    DELETE rather than TRUNCATE: readers keep seeing the old rows (MVCC) until commit, even
    those in snapshots older than this transaction; see docs/decisions/0002.
    """
    cols = column_list(columns)
    return [
        f"DELETE FROM {qualified(schema, target)}",
        f"INSERT INTO {qualified(schema, target)} ({cols}) SELECT {cols} FROM {qualified(schema, staging)}",
    ]


def publish_upsert(
    schema: str, target: str, staging: str, columns: Sequence[str], primary_key: Sequence[str]
) -> list[str]:
    """Incremental load: insert new keys, update existing ones, inside the caller's transaction."""
    cols = column_list(columns)
    updates = [c for c in columns if c not in primary_key]
    action = (
        "DO UPDATE SET " + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updates) if updates else "DO NOTHING"
    )
    return [
        f"INSERT INTO {qualified(schema, target)} ({cols}) SELECT {cols} FROM {qualified(schema, staging)} "
        f"ON CONFLICT ({column_list(primary_key)}) {action}"
    ]


def staged_max_cursor(schema: str, staging: str, cursor: str) -> str:
    return f"SELECT max({ident(cursor)})::text FROM {qualified(schema, staging)}"


def write_watermark(schema: str) -> str:
    """Upsert the table's state row; a NULL new watermark keeps the previous one."""
    state = qualified(schema, STATE_TABLE)
    return (
        f"INSERT INTO {state} AS s (pipeline, table_name, cursor_column, watermark, mode, rows_loaded, run_id) "
        "VALUES (%(pipeline)s, %(table)s, %(cursor)s, %(watermark)s, %(mode)s, %(rows)s, %(run_id)s) "
        "ON CONFLICT (pipeline, table_name) DO UPDATE SET cursor_column = EXCLUDED.cursor_column, "
        "watermark = COALESCE(EXCLUDED.watermark, s.watermark), mode = EXCLUDED.mode, "
        "rows_loaded = EXCLUDED.rows_loaded, run_id = EXCLUDED.run_id, updated_at = now()"
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
