"""BigQuery SQL text, built from names and values (pure functions; identifiers always quoted)."""

from __future__ import annotations

from collections.abc import Sequence

from dagforge.bigquery.types import BigQueryType


def ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def table(project: str, dataset: str, name: str) -> str:
    """``project.dataset.table``, quoted as one path (project ids may hold dashes)."""
    return ident(f"{project}.{dataset}.{name}")


def literal(value: str | int | None) -> str:
    """A string literal (or NULL); used where BigQuery scripts take no query parameters."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def transaction(statements: Sequence[str]) -> str:
    """One multi-statement transaction: every statement applies, or none does."""
    return "BEGIN TRANSACTION;\n" + "".join(f"{s};\n" for s in statements) + "COMMIT TRANSACTION;\n"


def merge_upsert(target: str, staging: str, columns: Sequence[str], primary_key: Sequence[str]) -> str:
    """Insert new keys, update existing ones (the staging rows win)."""
    on = " AND ".join(f"T.{ident(k)} = S.{ident(k)}" for k in primary_key)
    updates = ", ".join(f"{ident(c)} = S.{ident(c)}" for c in columns if c not in primary_key)
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"S.{ident(c)}" for c in columns)
    matched = f"\nWHEN MATCHED THEN UPDATE SET {updates}" if updates else ""
    return (
        f"MERGE {target} T\nUSING {staging} S\nON {on}{matched}\n"
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def replace_all(target: str, staging: str, columns: Sequence[str]) -> list[str]:
    """Every row of the target replaced by staging's (inside a transaction: readers see old or new)."""
    names = ", ".join(ident(c) for c in columns)
    return [f"DELETE FROM {target} WHERE TRUE", f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging}"]


STATE_COLUMNS = (
    ("pipeline", "STRING", "REQUIRED"),
    ("table_name", "STRING", "REQUIRED"),
    ("cursor_column", "STRING", "NULLABLE"),
    ("watermark", "STRING", "NULLABLE"),
    ("mode", "STRING", "NULLABLE"),
    ("rows_loaded", "INT64", "NULLABLE"),
    ("run_id", "STRING", "NULLABLE"),
    ("updated_at", "TIMESTAMP", "NULLABLE"),
)
"""``_dagforge_state``: one row per pipeline and table, the same columns as on Postgres."""


def read_watermark(state: str, pipeline: str, table_name: str) -> str:
    return f"SELECT watermark FROM {state} WHERE pipeline = {literal(pipeline)} AND table_name = {literal(table_name)}"


def write_state(
    state: str,
    *,
    pipeline: str,
    table_name: str,
    cursor: str | None,
    watermark: str | None,
    keep_watermark: bool,
    mode: str,
    rows: int,
    run_id: str,
) -> str:
    """Upsert the table's state row; ``keep_watermark`` keeps the old one when this load had none."""
    new = literal(watermark)
    watermark_sql = f"COALESCE({new}, T.watermark)" if keep_watermark else new
    source = (
        f"SELECT {literal(pipeline)} AS pipeline, {literal(table_name)} AS table_name, "
        f"{literal(cursor)} AS cursor_column, {literal(mode)} AS mode, {rows} AS rows_loaded, "
        f"{literal(run_id)} AS run_id"
    )
    return (
        f"MERGE {state} T\nUSING ({source}) S\nON T.pipeline = S.pipeline AND T.table_name = S.table_name\n"
        f"WHEN MATCHED THEN UPDATE SET cursor_column = S.cursor_column, watermark = {watermark_sql}, "
        "mode = S.mode, rows_loaded = S.rows_loaded, run_id = S.run_id, updated_at = CURRENT_TIMESTAMP()\n"
        "WHEN NOT MATCHED THEN INSERT (pipeline, table_name, cursor_column, watermark, mode, rows_loaded, run_id, "
        f"updated_at) VALUES (S.pipeline, S.table_name, S.cursor_column, {new}, S.mode, S.rows_loaded, S.run_id, "
        "CURRENT_TIMESTAMP())"
    )


def add_columns(table_sql: str, columns: Sequence[tuple[str, BigQueryType]]) -> list[str]:
    """New NULLABLE (or REPEATED) columns, one statement each (re-runnable); old rows read NULL or []."""
    return [f"ALTER TABLE {table_sql} ADD COLUMN IF NOT EXISTS {ident(name)} {kind.sql}" for name, kind in columns]


def count_rows(table_sql: str) -> str:
    return f"SELECT COUNT(*) AS n FROM {table_sql}"
