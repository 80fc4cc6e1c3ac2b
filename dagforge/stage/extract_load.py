"""Postgres → object storage → Postgres staging, with a manifest per table and run.

Objects live under ``<prefix>/<pipeline>/<table>/<run id>/``: ``part-NNNNN.<ext>`` files and
``manifest.json`` (row count, columns and types, watermark range, the parts). Runs never
overwrite each other; a retry of a run first deletes its own objects, so it leaves exactly one
set. The load step reads only what the manifest lists. Storage back ends implement
:class:`ObjectStore` (:mod:`~dagforge.stage.s3_store`, :mod:`~dagforge.stage.gcs_store`); the
encoding (:mod:`~dagforge.stage.encodings`) follows the destination that reads the files.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.sql import postgres as sql
from dagforge.stage.formats import Column, StageFormat, stage_format
from dagforge.transfer.postgres_load import Staged, Window, describe_source, lower_bound, require_autocommit

MANIFEST = "manifest.json"
ROWS_PER_PART = 500_000


class ObjectStore(Protocol):
    """What staging needs from a bucket."""

    def ensure_bucket(self) -> None: ...
    def upload_file(self, path: Path, key: str) -> None: ...
    def download_file(self, key: str, path: Path) -> None: ...
    def put_text(self, key: str, text: str) -> None: ...
    def get_text(self, key: str) -> str: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def uri(self, key: str) -> str: ...


@dataclass
class Manifest:
    pipeline: str
    table: str
    run_id: str
    format: str
    load_mode: str
    columns: list[dict[str, str]]
    rows: int = 0
    watermark_min: str | None = None
    watermark_max: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    encoding: str = "postgres"
    """Who reads the parts: the destination kind whose types they carry."""
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


def run_prefix(prefix: str | None, load: TableLoad, run_id: str) -> str:
    """``<prefix>/<pipeline>/<table>/<run id>/`` with the run id made safe for every store."""
    safe_run = re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)
    parts = [p for p in ((prefix or "").strip("/"), load.pipeline, load.destination.table, safe_run) if p]
    return "/".join(parts) + "/"


def extract(
    source: psycopg.Connection,
    load: TableLoad,
    window: Window,
    store: ObjectStore,
    key_prefix: str,
    file_format: str,
    run_id: str,
    progress: Any = None,
    rows_per_part: int = ROWS_PER_PART,
    encoding: str = "postgres",
) -> Manifest:
    """Stream the window's rows into part files under ``key_prefix``, then write the manifest."""
    require_autocommit(source)
    described = describe_source(source, load)
    columns = [Column(c.column.name, c.column.type_sql) for c in described]
    bound = lower_bound(described, load) if window.watermark is not None else None
    fmt: StageFormat = stage_format(encoding, file_format, rows_per_part)
    columns_doc = [asdict(c) for c in columns]
    manifest = Manifest(
        load.pipeline, load.destination.table, run_id, file_format, window.load_mode, columns_doc, encoding=encoding
    )
    store.ensure_bucket()
    store.delete_prefix(key_prefix)  # a retry of this run replaces, never adds
    params = {"watermark": window.watermark} if bound else None
    with tempfile.TemporaryDirectory(prefix="dagforge-extract-") as tmp, source.transaction():
        source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        ref = load.source
        if load.cursor:
            rng = source.execute(sql.cursor_range(ref.schema, ref.table, load.cursor, bound), params).fetchone()
            manifest.watermark_min, manifest.watermark_max = rng
        names = [c.name for c in columns]
        select = sql.select_window(
            ref.schema, ref.table, names, load.cursor, bound, select_list=fmt.select_list(columns)
        )

        def upload(path: Path, rows: int) -> None:
            key = key_prefix + path.name
            store.upload_file(path, key)
            manifest.parts.append({"key": key, "uri": store.uri(key), "rows": rows, "bytes": path.stat().st_size})
            manifest.rows += rows
            path.unlink()
            if progress:
                progress(f"uploaded {key} ({rows} rows, {manifest.rows} so far)")

        with source.cursor() as cur, cur.copy(f"COPY ({select}) TO STDOUT {fmt.copy_options}", params) as copy:
            fmt.write_parts(copy, columns, Path(tmp), upload)
    store.put_text(key_prefix + MANIFEST, manifest.to_json())
    return manifest


def read_manifest(store: ObjectStore, key_prefix: str) -> Manifest:
    return Manifest.from_json(store.get_text(key_prefix + MANIFEST))


def load_staged(
    destination: psycopg.Connection, load: TableLoad, store: ObjectStore, key_prefix: str, staging_table: str
) -> Staged:
    """The manifest's parts into a fresh staging table (one transaction), verified by row count."""
    require_autocommit(destination)
    manifest = read_manifest(store, key_prefix)
    columns = [Column(**c) for c in manifest.columns]
    fmt = stage_format(manifest.encoding, manifest.format, ROWS_PER_PART)
    schema = load.destination.schema
    names = [c.name for c in columns]
    with tempfile.TemporaryDirectory(prefix="dagforge-load-") as tmp, destination.transaction():
        for statement in sql.ensure_schema(schema):
            destination.execute(statement)
        for statement in sql.create_staging(schema, staging_table, [sql.Column(c.name, c.type_sql) for c in columns]):
            destination.execute(statement)
        copy_sql = sql.copy_in(schema, staging_table, names, False) + " (FORMAT csv)"
        for part in manifest.parts:
            local = Path(tmp) / Path(part["key"]).name
            store.download_file(part["key"], local)
            with destination.cursor() as cur, cur.copy(copy_sql) as copy:
                for chunk in fmt.csv_chunks(local, columns):
                    copy.write(chunk)
            local.unlink()
        loaded = destination.execute(sql.count_rows(schema, staging_table)).fetchone()[0]
        if loaded != manifest.rows:
            raise TerminalError(f"{key_prefix}{MANIFEST} lists {manifest.rows} rows but the parts held {loaded}")
    return Staged(staging_table, loaded, names, manifest.load_mode, manifest.watermark_max)
