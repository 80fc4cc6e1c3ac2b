"""Does a loaded table hold exactly its source's rows? Used by ``make demo`` and the tests.

Postgres → Postgres compares :func:`~dagforge.sql.postgres.fingerprint` on both sides. Postgres →
BigQuery reads both sides and compares values after :func:`canonical` (Decimal by value, instants
in UTC, JSON by content, a NULL array as an empty one, as BigQuery stores it), with Postgres types
that BigQuery keeps as STRING read as Postgres's text.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from dagforge.bigquery import sql as bigquery_sql
from dagforge.bigquery.types import bigquery_type
from dagforge.loadspec import TableLoad
from dagforge.sql.postgres import describe_columns, fingerprint, ident, qualified


@dataclass(frozen=True)
class Comparison:
    source_rows: int
    target_rows: int
    same: bool


def canonical(value: Any, repeated: bool = False) -> Any:
    if value is None:
        return () if repeated else None
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, Decimal):
        return ("decimal", value.normalize() if value else Decimal(0))
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, dict):
        return ("json", json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=repr)


def postgres_columns(conn: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(describe_columns(), {"schema": schema, "table": table})]


def postgres_rows_as_bigquery(conn: psycopg.Connection, schema: str, table: str) -> tuple[list[str], list[tuple]]:
    """The source's column names and rows canonical, read the way BigQuery keeps them (STRING columns as text)."""
    columns = postgres_columns(conn, schema, table)
    types = [bigquery_type(type_sql) for _, type_sql in columns]
    select = ", ".join(
        f"CASE WHEN num_nulls({ident(name)}) = 0 THEN concat({ident(name)}) END"  # output text; ::text strips char(n)
        if t.field_type == "STRING" and t.mode != "REPEATED"
        else ident(name)
        for (name, _), t in zip(columns, types, strict=True)
    )
    rows = conn.execute(f"SELECT {select} FROM {qualified(schema, table)}").fetchall()
    canonical_rows = [
        tuple(canonical(v, t.mode == "REPEATED") for v, t in zip(row, types, strict=True)) for row in rows
    ]
    return [name for name, _ in columns], _sorted(canonical_rows)


def bigquery_rows(client: Any, table_id: str, names: list[str]) -> list[tuple]:
    table = client.get_table(table_id)
    repeated = {f.name: f.mode == "REPEATED" for f in table.schema}
    query = f"SELECT {', '.join(bigquery_sql.ident(n) for n in names)} FROM {bigquery_sql.ident(table_id)}"
    rows = client.query(query).result()
    return _sorted([tuple(canonical(row[n], repeated.get(n, False)) for n in names) for row in rows])


def compare_postgres(source: psycopg.Connection, target: psycopg.Connection, load: TableLoad) -> Comparison:
    src = source.execute(fingerprint(qualified(load.source.schema, load.source.table))).fetchone()
    dst = target.execute(fingerprint(qualified(load.destination.schema, load.destination.table))).fetchone()
    return Comparison(src[0], dst[0], src == dst)


def compare_bigquery(source: psycopg.Connection, client: Any, project: str, load: TableLoad) -> Comparison:
    names, src = postgres_rows_as_bigquery(source, load.source.schema, load.source.table)
    dst = bigquery_rows(client, f"{project}.{load.destination.schema}.{load.destination.table}", names)
    return Comparison(len(src), len(dst), src == dst)


def compare_files(load: TableLoad, files_root: Any, loaded: dict[str, int]) -> Comparison:
    """A file table (``mode: interval``) against the files served from ``files_root``: every
    interval the destination holds has exactly its file's rows, none twice.

    ``loaded`` is the destination's row count per interval start (ISO 8601, UTC)."""
    import gzip
    from pathlib import Path

    from dagforge.sources.http_urls import render_url

    source_rows, same = 0, bool(loaded)
    for start, rows in sorted(loaded.items()):
        name = render_url(str((load.source_options or {})["url"]), start, None)
        path = Path(files_root) / name
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as lines:
            in_file = sum(1 for _ in lines) - 1  # the header
        source_rows += in_file
        same = same and rows == in_file
    return Comparison(source_rows, sum(loaded.values()), same)


def bigquery_interval_counts(client: Any, project: str, load: TableLoad, column: str) -> dict[str, int]:
    """Rows per interval start of a file table in BigQuery."""
    table = bigquery_sql.table(project, load.destination.schema, load.destination.table)
    query = f"SELECT {bigquery_sql.ident(column)} AS start, count(*) AS n FROM {table} GROUP BY 1"
    return {row["start"].astimezone(dt.UTC).isoformat(): int(row["n"]) for row in client.query(query).result()}
