"""BigQuery SQL text, built from names and values (pure functions; identifiers always quoted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagforge.bigquery.types import BigQueryType


@dataclass(frozen=True)
class Dataset:
    """Where a BigQuery destination's tables live (no client library needed to name them)."""

    project: str
    dataset: str
    location: str | None = None

    def table_id(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{name}"

    def table_sql(self, name: str) -> str:
        return table(self.project, self.dataset, name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        return cls(data["project"], data["dataset"], data.get("location"))


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


def newer_snapshot(state: str, pipeline: str, table_name: str, load_mode: str, snapshot_at: str | None) -> str:
    """True when a snapshot newer than this one was published (rule 2 of docs/decisions/0008).

    A full replace yields to any newer snapshot; an incremental publish to a newer full replace.
    """
    column = "snapshot_at" if load_mode == "full" else "full_snapshot_at"
    return (
        f"EXISTS (SELECT 1 FROM {state} WHERE pipeline = {literal(pipeline)} AND table_name = {literal(table_name)} "
        f"AND {column} > CAST({literal(snapshot_at)} AS TIMESTAMP))"
    )


def merge_upsert(
    target: str,
    staging: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    cursor: str | None = None,
    skip_if: str = "FALSE",
) -> str:
    """Insert new keys, update existing ones with staged versions that are not older (by ``cursor``).

    Nothing applies when ``skip_if`` holds (a newer full snapshot is published already).
    """
    on = " AND ".join(f"T.{ident(k)} = S.{ident(k)}" for k in primary_key)
    updates = ", ".join(f"{ident(c)} = S.{ident(c)}" for c in columns if c not in primary_key)
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"S.{ident(c)}" for c in columns)
    newer = f" AND (T.{ident(cursor)} IS NULL OR S.{ident(cursor)} >= T.{ident(cursor)})" if cursor else ""
    matched = f"\nWHEN MATCHED{newer} THEN UPDATE SET {updates}" if updates else ""
    return (
        f"MERGE {target} T\nUSING (SELECT * FROM {staging} WHERE NOT {skip_if}) S\nON {on}{matched}\n"
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def replace_all(target: str, staging: str, columns: Sequence[str], skip_if: str = "FALSE") -> list[str]:
    """Every row of the target replaced by staging's (inside a transaction: readers see old or new),
    unless ``skip_if`` holds (a newer snapshot is published already)."""
    names = ", ".join(ident(c) for c in columns)
    return [
        f"DELETE FROM {target} WHERE NOT {skip_if}",
        f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} WHERE NOT {skip_if}",
    ]


STATE_COLUMNS = (
    ("pipeline", "STRING", "REQUIRED"),
    ("table_name", "STRING", "REQUIRED"),
    ("cursor_column", "STRING", "NULLABLE"),
    ("watermark", "STRING", "NULLABLE"),
    ("mode", "STRING", "NULLABLE"),
    ("rows_loaded", "INT64", "NULLABLE"),
    ("run_id", "STRING", "NULLABLE"),
    ("updated_at", "TIMESTAMP", "NULLABLE"),
    ("snapshot_at", "TIMESTAMP", "NULLABLE"),
    ("full_snapshot_at", "TIMESTAMP", "NULLABLE"),
    ("zone_digest", "STRING", "NULLABLE"),
)
"""``_dagforge_state``: one row per pipeline and table, the same columns as on Postgres."""


def read_state(state: str, pipeline: str, table_name: str) -> str:
    return (
        f"SELECT watermark, zone_digest FROM {state} "
        f"WHERE pipeline = {literal(pipeline)} AND table_name = {literal(table_name)}"
    )


def write_state(
    state: str,
    *,
    pipeline: str,
    table_name: str,
    cursor: str | None,
    cursor_type: str | None,
    watermark: str | None,
    full: bool,
    mode: str,
    rows: int,
    run_id: str,
    snapshot_at: str | None,
    zone_digest: str | None,
    skip_if: str = "FALSE",
) -> str:
    """Upsert the table's state row by rules 2 and 3 of docs/decisions/0008 (unless ``skip_if``).

    A full replace sets its own watermark and becomes the last full snapshot; an incremental
    publish moves the watermark (and the lookback digest with it) only forwards, as ``cursor_type``.
    """
    new_snapshot = f"CAST({literal(snapshot_at)} AS TIMESTAMP)"
    if full or cursor_type is None:
        advance = "TRUE"
    else:
        new, old = f"CAST(S.watermark AS {cursor_type})", f"CAST(T.watermark AS {cursor_type})"
        oldest = "TIMESTAMP '0001-01-01 00:00:00+00'"
        advance = (
            f"(T.watermark IS NULL OR (S.watermark IS NOT NULL AND ({new} > {old} OR ({new} = {old} "
            f"AND COALESCE(S.snapshot_at, {oldest}) >= COALESCE(T.snapshot_at, {oldest})))))"
        )
    source = (
        f"SELECT {literal(pipeline)} AS pipeline, {literal(table_name)} AS table_name, "
        f"{literal(cursor)} AS cursor_column, {literal(watermark)} AS watermark, {literal(mode)} AS mode, "
        f"{rows} AS rows_loaded, {literal(run_id)} AS run_id, {new_snapshot} AS snapshot_at, "
        f"{literal(zone_digest)} AS zone_digest FROM UNNEST([1]) WHERE NOT {skip_if}"
    )
    full_snapshot = "S.snapshot_at" if full else "T.full_snapshot_at"
    return (
        f"MERGE {state} T\nUSING ({source}) S\nON T.pipeline = S.pipeline AND T.table_name = S.table_name\n"
        f"WHEN MATCHED THEN UPDATE SET cursor_column = S.cursor_column, "
        f"watermark = IF({advance}, S.watermark, T.watermark), "
        f"zone_digest = IF({advance}, S.zone_digest, T.zone_digest), "
        "mode = S.mode, rows_loaded = S.rows_loaded, run_id = S.run_id, updated_at = CURRENT_TIMESTAMP(), "
        "snapshot_at = IF(T.snapshot_at IS NULL OR S.snapshot_at > T.snapshot_at, S.snapshot_at, T.snapshot_at), "
        f"full_snapshot_at = {full_snapshot}\n"
        "WHEN NOT MATCHED THEN INSERT (pipeline, table_name, cursor_column, watermark, mode, rows_loaded, run_id, "
        "updated_at, snapshot_at, full_snapshot_at, zone_digest) VALUES (S.pipeline, S.table_name, S.cursor_column, "
        f"S.watermark, S.mode, S.rows_loaded, S.run_id, CURRENT_TIMESTAMP(), S.snapshot_at, "
        f"{'S.snapshot_at' if full else 'NULL'}, S.zone_digest)"
    )


def add_columns(table_sql: str, columns: Sequence[tuple[str, BigQueryType]]) -> list[str]:
    """New NULLABLE (or REPEATED) columns, one statement each (re-runnable); old rows read NULL or []."""
    return [f"ALTER TABLE {table_sql} ADD COLUMN IF NOT EXISTS {ident(name)} {kind.sql}" for name, kind in columns]


def count_rows(table_sql: str) -> str:
    return f"SELECT COUNT(*) AS n FROM {table_sql}"
