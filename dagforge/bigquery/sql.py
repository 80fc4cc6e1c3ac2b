"""BigQuery SQL text, built from names and values (pure functions; identifiers always quoted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagforge.bigquery.types import BigQueryType
from dagforge.spec.model import DELETED_AT


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


@dataclass(frozen=True)
class SoftDelete:
    """What a MERGE writes into ``_dagforge_deleted_at`` (SQL over ``S``, the staged row, and ``T``)."""

    on_update: str = "NULL"
    on_insert: str = "NULL"


def merge_upsert(
    target: str,
    staging: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    cursor: str | None = None,
    skip_if: str = "FALSE",
    *,
    casts: Mapping[str, str] | None = None,
    null_fill: Sequence[str] = (),
    soft_delete: SoftDelete | None = None,
    delete_flagged: str | None = None,
) -> str:
    """Insert new keys, update existing ones with staged versions that are not older (by ``cursor``).

    Nothing applies when ``skip_if`` holds (a newer full snapshot is published already).
    ``casts`` converts staged columns to the target's type; ``null_fill`` columns (the source
    dropped them) are set to NULL; ``soft_delete`` writes the soft-delete column; with
    ``delete_flagged`` (SQL over ``S``) a flagged staged row deletes its target row (when not
    older) and is never inserted.
    """
    casts = casts or {}

    def value(c: str) -> str:
        return f"CAST(S.{ident(c)} AS {casts[c]})" if c in casts else f"S.{ident(c)}"

    on = " AND ".join(f"T.{ident(k)} = S.{ident(k)}" for k in primary_key)
    updates = [f"{ident(c)} = {value(c)}" for c in columns if c not in primary_key]
    updates += [f"{ident(c)} = NULL" for c in null_fill]
    names, values = [ident(c) for c in columns], [value(c) for c in columns]
    if soft_delete is not None:
        updates.append(f"{ident(DELETED_AT)} = {soft_delete.on_update}")
        names.append(ident(DELETED_AT))
        values.append(soft_delete.on_insert)
    newer = f" AND (T.{ident(cursor)} IS NULL OR S.{ident(cursor)} >= T.{ident(cursor)})" if cursor else ""
    clauses = [f"WHEN MATCHED{newer} AND {delete_flagged} THEN DELETE"] if delete_flagged else []
    if updates:
        clauses.append(f"WHEN MATCHED{newer} THEN UPDATE SET {', '.join(updates)}")
    insert_if = f" AND NOT {delete_flagged}" if delete_flagged else ""
    clauses.append(f"WHEN NOT MATCHED{insert_if} THEN INSERT ({', '.join(names)}) VALUES ({', '.join(values)})")
    return f"MERGE {target} T\nUSING (SELECT * FROM {staging} WHERE NOT {skip_if}) S\nON {on}\n" + "\n".join(clauses)


def flag_set(alias: str, flag: str, field_type: str) -> str:
    """True when a source's own delete flag marks the row: a true BOOL, or any other type's non-NULL value."""
    column = f"{alias}.{ident(flag)}"
    return f"{column} IS TRUE" if field_type in ("BOOL", "BOOLEAN") else f"{column} IS NOT NULL"


def flagged_soft_delete(flagged: str, deleted_at: str) -> SoftDelete:
    """Flagged rows get ``deleted_at`` (a time already set is kept); an unflagged later version clears it."""
    d = ident(DELETED_AT)
    return SoftDelete(f"IF({flagged}, COALESCE(T.{d}, {deleted_at}), NULL)", f"IF({flagged}, {deleted_at}, NULL)")


def timestamp(value: str | None) -> str:
    """A snapshot time as a TIMESTAMP (the publish's own time when the staging has none)."""
    return f"CAST({literal(value)} AS TIMESTAMP)" if value else "CURRENT_TIMESTAMP()"


def _missing(keys: str, primary_key: Sequence[str]) -> str:
    same = " AND ".join(f"K.{ident(k)} = T.{ident(k)}" for k in primary_key)
    return f"NOT EXISTS (SELECT 1 FROM {keys} K WHERE {same})"


def delete_missing(target: str, keys: str, primary_key: Sequence[str], skip_if: str = "FALSE") -> str:
    """Hard deletes: target rows whose key is not in ``keys`` (a staged key set, or a full staging)."""
    return f"DELETE FROM {target} T WHERE NOT {skip_if} AND {_missing(keys, primary_key)}"


def mark_missing(target: str, keys: str, primary_key: Sequence[str], deleted_at: str, skip_if: str = "FALSE") -> str:
    """Soft deletes: target rows whose key is not in ``keys`` get ``_dagforge_deleted_at`` (once)."""
    d = ident(DELETED_AT)
    return (
        f"UPDATE {target} T SET {d} = {deleted_at} WHERE T.{d} IS NULL AND NOT {skip_if} "
        f"AND {_missing(keys, primary_key)}"
    )


def replace_all(
    target: str,
    staging: str,
    columns: Sequence[str],
    skip_if: str = "FALSE",
    *,
    casts: Mapping[str, str] | None = None,
    keep_if: str | None = None,
) -> list[str]:
    """Every row of the target replaced by staging's (inside a transaction: readers see old or new),
    unless ``skip_if`` holds (a newer snapshot is published already). ``keep_if`` (SQL over the
    staged row) selects which staged rows are inserted; ``casts`` converts to the target's types."""
    casts = casts or {}
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"CAST({ident(c)} AS {casts[c]})" if c in casts else ident(c) for c in columns)
    keep = f" AND {keep_if}" if keep_if else ""
    return [
        f"DELETE FROM {target} WHERE NOT {skip_if}",
        f"INSERT INTO {target} ({names}) SELECT {values} FROM {staging} S WHERE NOT {skip_if}{keep}",
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
    ("schema_changes", "STRING", "NULLABLE"),
    ("reconciliation", "STRING", "NULLABLE"),
    ("key_digest", "STRING", "NULLABLE"),
)
"""``_dagforge_state``: one row per pipeline and table, the same columns as on Postgres."""


def read_state(state: str, pipeline: str, table_name: str) -> str:
    return (
        f"SELECT watermark, zone_digest, key_digest FROM {state} "
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
    schema_changes: str | None = None,
    key_digest: str | None = None,
    knows_deletes: bool = False,
) -> str:
    """Upsert the table's state row by rules 2 and 3 of docs/decisions/0008 (unless ``skip_if``).

    A full replace sets its own watermark and becomes the last full snapshot (so does an incremental
    publish that applies deletes, ``knows_deletes``: an older one could bring a deleted row back); an incremental
    publish moves the watermark (and the lookback digest with it) only forwards, as ``cursor_type``.
    ``schema_changes`` (JSON) replaces the recorded one when this publish changed the table's columns;
    ``key_digest`` (every source key, for loads that track deletes) moves with the newest snapshot only.
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
        f"{literal(zone_digest)} AS zone_digest, {literal(schema_changes)} AS schema_changes, "
        f"{literal(key_digest)} AS key_digest "
        f"FROM UNNEST([1]) WHERE NOT {skip_if}"
    )
    full_snapshot = "S.snapshot_at" if full else "T.full_snapshot_at"
    if knows_deletes and not full:  # an older incremental publish could bring back a row this one deleted
        full_snapshot = (
            "IF(T.full_snapshot_at IS NULL OR S.snapshot_at > T.full_snapshot_at, S.snapshot_at, T.full_snapshot_at)"
        )
    return (
        f"MERGE {state} T\nUSING ({source}) S\nON T.pipeline = S.pipeline AND T.table_name = S.table_name\n"
        f"WHEN MATCHED THEN UPDATE SET cursor_column = S.cursor_column, "
        f"watermark = IF({advance}, S.watermark, T.watermark), "
        f"zone_digest = IF({advance}, S.zone_digest, T.zone_digest), "
        "mode = S.mode, rows_loaded = S.rows_loaded, run_id = S.run_id, updated_at = CURRENT_TIMESTAMP(), "
        "snapshot_at = IF(T.snapshot_at IS NULL OR S.snapshot_at > T.snapshot_at, S.snapshot_at, T.snapshot_at), "
        f"full_snapshot_at = {full_snapshot}, schema_changes = COALESCE(S.schema_changes, T.schema_changes), "
        "key_digest = IF(T.snapshot_at IS NULL OR S.snapshot_at >= T.snapshot_at, "
        "COALESCE(S.key_digest, T.key_digest), T.key_digest)\n"
        "WHEN NOT MATCHED THEN INSERT (pipeline, table_name, cursor_column, watermark, mode, rows_loaded, run_id, "
        "updated_at, snapshot_at, full_snapshot_at, zone_digest, schema_changes, key_digest) VALUES (S.pipeline, "
        "S.table_name, "
        f"S.cursor_column, S.watermark, S.mode, S.rows_loaded, S.run_id, CURRENT_TIMESTAMP(), S.snapshot_at, "
        f"{'S.snapshot_at' if full or knows_deletes else 'NULL'}, S.zone_digest, S.schema_changes, S.key_digest)"
    )


def add_columns(table_sql: str, columns: Sequence[tuple[str, BigQueryType]]) -> list[str]:
    """New NULLABLE (or REPEATED) columns, one statement each (re-runnable); old rows read NULL or []."""
    return [f"ALTER TABLE {table_sql} ADD COLUMN IF NOT EXISTS {ident(name)} {kind.sql}" for name, kind in columns]


def count_rows(table_sql: str) -> str:
    return f"SELECT COUNT(*) AS n FROM {table_sql}"


def widen_column(table_sql: str, column: str, type_sql: str) -> str:
    return f"ALTER TABLE {table_sql} ALTER COLUMN {ident(column)} SET DATA TYPE {type_sql}"


def drop_not_null(table_sql: str, column: str) -> str:
    return f"ALTER TABLE {table_sql} ALTER COLUMN {ident(column)} DROP NOT NULL"


STAGING_PREFIX, KEYS_PREFIX = "_dagforge_stg_", "_dagforge_key_"


def key_table_name(staging_table: str) -> str:
    """The staged key set (incremental deletes) that goes with a staging table."""
    return KEYS_PREFIX + staging_table.removeprefix(STAGING_PREFIX)


def this_snapshot_is_newest(state: str, pipeline: str, table_name: str, snapshot_at: str | None) -> str:
    """True when the state's newest published snapshot is this one (nothing newer published since)."""
    return (
        f"EXISTS (SELECT 1 FROM {state} WHERE pipeline = {literal(pipeline)} AND table_name = {literal(table_name)} "
        f"AND snapshot_at = CAST({literal(snapshot_at)} AS TIMESTAMP))"
    )


def live_rows(alias: str = "") -> str:
    """Rows not soft-deleted."""
    return f"{alias + '.' if alias else ''}{ident(DELETED_AT)} IS NULL"


def figures(
    target: str, *, live: str | None, measures: Sequence[tuple[str, Sequence[str]]], flags: Sequence[str] = ()
) -> str:
    """One query (one consistent read): each of ``flags`` (SQL booleans), the target's live rows, then
    per measure (``not_null``: rows with a NULL in any of the columns; ``unique``: rows beyond the
    first of each combination that occurs more than once, NULLs equal), as ``f0``…, ``live_rows``, ``m0``…."""
    where = f" WHERE {live}" if live else ""
    items = [f"{flag} AS f{i}" for i, flag in enumerate(flags)]
    items.append(f"(SELECT COUNT(*) FROM {target}{where}) AS live_rows")
    for i, (kind, columns) in enumerate(measures):
        names = ", ".join(ident(c) for c in columns)
        if kind == "not_null":
            nulls = " OR ".join(f"{ident(c)} IS NULL" for c in columns)
            query = f"SELECT COUNT(*) FROM {target} WHERE ({nulls})" + (f" AND {live}" if live else "")
        else:
            query = (
                f"SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM {target}{where} "
                f"GROUP BY {names} HAVING COUNT(*) > 1)"
            )
        items.append(f"({query}) AS m{i}")
    return "SELECT " + ", ".join(items)


def record_reconciliation(state: str, pipeline: str, table_name: str, snapshot_at: str | None, text: str) -> str:
    """The reconciliation's JSON into the state row, while this snapshot is still the newest published."""
    return (
        f"UPDATE {state} SET reconciliation = {literal(text)} WHERE pipeline = {literal(pipeline)} "
        f"AND table_name = {literal(table_name)} AND snapshot_at = CAST({literal(snapshot_at)} AS TIMESTAMP)"
    )


FILES_COLUMNS = (
    ("pipeline", "STRING", "REQUIRED"),
    ("table_name", "STRING", "REQUIRED"),
    ("interval_start", "STRING", "REQUIRED"),
    ("url", "STRING", "NULLABLE"),
    ("size", "INT64", "NULLABLE"),
    ("etag", "STRING", "NULLABLE"),
    ("last_modified", "STRING", "NULLABLE"),
    ("sha256", "STRING", "NULLABLE"),
    ("rows_loaded", "INT64", "NULLABLE"),
    ("bad_rows", "INT64", "NULLABLE"),
    ("snapshot_at", "TIMESTAMP", "NULLABLE"),
    ("run_id", "STRING", "NULLABLE"),
    ("stage_id", "STRING", "NULLABLE"),
    ("loaded_at", "TIMESTAMP", "NULLABLE"),
)
"""``_dagforge_files``: which file each (pipeline, table, interval) loaded, as on Postgres."""


def _file_where(pipeline: str, table_name: str, interval: str) -> str:
    return (f"pipeline = {literal(pipeline)} AND table_name = {literal(table_name)} "
            f"AND interval_start = {literal(interval)}")  # fmt: skip


def read_file(files: str, pipeline: str, table_name: str, interval: str) -> str:
    return (
        "SELECT url, size, etag, last_modified, sha256, rows_loaded, run_id, CAST(snapshot_at AS STRING) "
        f"FROM {files} WHERE {_file_where(pipeline, table_name, interval)}"
    )


def newer_file(files: str, pipeline: str, table_name: str, interval: str, snapshot_at: str | None) -> str:
    """True when a newer read of the same interval was published (rule 2, per interval)."""
    return (f"EXISTS (SELECT 1 FROM {files} WHERE {_file_where(pipeline, table_name, interval)} "
            f"AND snapshot_at > CAST({literal(snapshot_at)} AS TIMESTAMP))")  # fmt: skip


def same_file_appended(files: str, pipeline: str, table_name: str, interval: str, sha256: str, stage_id: str) -> str:
    """True when another staging appended the same file for the interval already (``append``)."""
    return (f"EXISTS (SELECT 1 FROM {files} WHERE {_file_where(pipeline, table_name, interval)} "
            f"AND sha256 = {literal(sha256)} AND stage_id != {literal(stage_id)})")  # fmt: skip


def write_file(files: str, values: dict[str, str | int | None], skip_if: str = "FALSE") -> str:
    """Record the file an interval loaded (a MERGE on pipeline, table, interval), unless ``skip_if``."""
    names = [name for name, _, _ in FILES_COLUMNS if name != "loaded_at"]
    row = ", ".join(
        f"CAST({literal(values.get(n))} AS TIMESTAMP) AS {n}" if n == "snapshot_at" else
        (f"CAST({literal(values.get(n))} AS INT64) AS {n}" if n in ("size", "rows_loaded", "bad_rows")
         else f"CAST({literal(values.get(n))} AS STRING) AS {n}")
        for n in names
    )  # fmt: skip
    keys = ("pipeline", "table_name", "interval_start")
    updates = ", ".join(f"{n} = S.{n}" for n in names if n not in keys)
    return (
        f"MERGE {files} T\nUSING (SELECT {row} FROM UNNEST([1]) WHERE NOT {skip_if}) S\n"
        + "ON "
        + " AND ".join(f"T.{k} = S.{k}" for k in keys)
        + "\n"
        + f"WHEN MATCHED THEN UPDATE SET {updates}, loaded_at = CURRENT_TIMESTAMP()\n"
        + f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}, loaded_at) "
        + f"VALUES ({', '.join('S.' + n for n in names)}, CURRENT_TIMESTAMP())"
    )


def delete_interval(target: str, column: str, interval: str, skip_if: str = "FALSE") -> str:
    """``mode: interval``: the rows an interval loaded before."""
    return f"DELETE FROM {target} WHERE {ident(column)} = TIMESTAMP({literal(interval)}) AND NOT {skip_if}"


def insert_all(
    target: str, staging: str, columns: Sequence[str], skip_if: str = "FALSE", casts: Mapping[str, str] | None = None
) -> str:
    casts = casts or {}
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"CAST({ident(c)} AS {casts[c]})" if c in casts else ident(c) for c in columns)
    return f"INSERT INTO {target} ({names}) SELECT {values} FROM {staging} S WHERE NOT {skip_if}"
