"""Postgres → object storage → Postgres staging, with a manifest per table and run.

Objects live under ``<prefix>/<pipeline>/<table>/<run id>/``: ``<attempt>/part-NNNNN.<ext>`` files
and ``manifest.json`` (row count, columns and types, the source snapshot's time, cursor range and
lookback digest, the window, the parts). Runs never overwrite each other, and neither do two
attempts of one run (each writes under its own attempt folder; a zombie attempt cannot overwrite a
part of the live one). The manifest is written last and is the commit point; then every object of
the run prefix it does not list (a killed attempt's parts) is deleted. The load step reads only
what the manifest lists; a missing manifest or part means "extract again" (:class:`ObjectMissing`).
Storage back ends implement :class:`ObjectStore` (:mod:`~dagforge.stage.s3_store`,
:mod:`~dagforge.stage.gcs_store`); the encoding (:mod:`~dagforge.stage.encodings`) follows the
destination that reads the files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg

from dagforge.contracts import ObjectMissing, SourceSnapshot, Staged, StagingLost, Window
from dagforge.loadspec import TableLoad
from dagforge.sources.postgres import (
    consistent_read,
    describe_source,
    figures_alongside,
    require_autocommit,
    window_bound,
    window_facts,
)
from dagforge.sql import postgres as sql

if TYPE_CHECKING:  # pyarrow costs 0.3 s to import: only the steps that write or read parts pay it
    from dagforge.stage.formats import Column, StageFormat

log = logging.getLogger(__name__)

__all__ = ["ObjectMissing", "ObjectStore", "extract", "load_staged", "read_manifest", "with_extract_again"]
MANIFEST = "manifest.json"
_T = TypeVar("_T")
LoadParts = Callable[[list[dict[str, Any]], list[dict[str, str]], str], int]
"""``load_parts(parts, columns, table)``: a destination fills staging ``table`` from ``parts``; rows it holds."""
ROWS_PER_PART = 500_000


class ObjectStore(Protocol):
    """What staging needs from a bucket."""

    def ensure_bucket(self) -> None: ...
    def upload_file(self, path: Path, key: str) -> None: ...
    def download_file(self, key: str, path: Path) -> None: ...
    def put_text(self, key: str, text: str) -> None: ...
    def get_text(self, key: str) -> str: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def delete_keys(self, keys: list[str]) -> int: ...
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
    snapshot_at: str | None = None
    zone_digest: str | None = None
    window: dict[str, Any] | None = None
    attempt: str = ""
    version: int = 2
    source_rows: int | None = None
    checksums: dict[str, str] | None = None
    key_digest: str | None = None
    key_columns: list[dict[str, str]] | None = None
    """Incremental deletes: the primary key columns of ``key_parts`` (every key of the source at the snapshot)."""
    key_parts: list[dict[str, Any]] = field(default_factory=list)
    key_rows: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))

    @property
    def snapshot(self) -> SourceSnapshot:
        """The read's facts, which the manifest carries under their own names."""
        return SourceSnapshot(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SourceSnapshot)})

    def record_snapshot(self, facts: SourceSnapshot) -> None:
        for fact in dataclasses.fields(facts):
            setattr(self, fact.name, getattr(facts, fact.name))

    def load_into(self, staging_table: str, load_parts: LoadParts, where: str) -> Staged:
        """The parts (and the key parts, beside) into staging tables by the destination's ``load_parts``,
        each checked against the row count listed here (:class:`StagingLost`: extract again)."""
        loaded = load_parts(self.parts, self.columns, staging_table)
        if loaded != self.rows:
            raise StagingLost(f"{where} lists {self.rows} rows but the parts held {loaded}")
        key_table = None
        if self.key_columns is not None:
            key_table = sql.key_table_name(staging_table)
            found = load_parts(self.key_parts, self.key_columns, key_table)
            if found != self.key_rows:
                raise StagingLost(f"{where} lists {self.key_rows} keys but the key parts held {found}")
        names = [c["name"] for c in self.columns]
        return Staged.of(staging_table, loaded, names, self.source_window, self.snapshot, key_table=key_table,
                         key_rows=self.key_rows if key_table else None)  # fmt: skip

    @property
    def source_window(self) -> Window:
        return Window.from_dict(self.window or {"load_mode": self.load_mode, "watermark": None, "new_rows": True,
                                                "reason": "window not recorded: every row"})  # fmt: skip


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
    from dagforge.stage.formats import Column, stage_format

    columns = [Column(c.column.name, c.column.type_sql) for c in described]
    bound, params = window_bound(described, load, window)
    fmt: StageFormat = stage_format(encoding, file_format, rows_per_part)
    attempt = uuid.uuid4().hex[:8]
    manifest = Manifest(
        load.pipeline, load.destination.table, run_id, file_format, window.load_mode, [asdict(c) for c in columns],
        encoding=encoding, window=window.to_dict(), attempt=attempt,
    )  # fmt: skip
    store.ensure_bucket()
    with (
        tempfile.TemporaryDirectory(prefix="dagforge-extract-") as tmp,
        consistent_read(source) as snapshot_at,
        figures_alongside(source, load, described, window) as figures,
    ):
        ref = load.source
        names = [c.name for c in columns]
        select = sql.select_window(
            ref.schema, ref.table, names, load.cursor, bound, select_list=fmt.select_list(columns)
        )
        _write_files(source, store, fmt, select, params, columns, Path(tmp), f"{key_prefix}{attempt}/",
                     manifest.parts, progress)  # fmt: skip
        manifest.rows = sum(part["rows"] for part in manifest.parts)
        if load.stages_keys(window.load_mode):
            keys = [next(c for c in columns if c.name == k) for k in load.primary_key]
            select = sql.select_window(ref.schema, ref.table, load.primary_key, None, None,
                                       select_list=fmt.select_list(keys))  # fmt: skip
            (Path(tmp) / "keys").mkdir()
            _write_files(source, store, fmt, select, None, keys, Path(tmp) / "keys", f"{key_prefix}{attempt}/keys/",
                         manifest.key_parts, progress)  # fmt: skip
            manifest.key_columns = [asdict(c) for c in keys]
            manifest.key_rows = sum(part["rows"] for part in manifest.key_parts)
        manifest.record_snapshot(window_facts(source, load, described, window, snapshot_at, figures()))
    store.put_text(key_prefix + MANIFEST, manifest.to_json())  # the commit point
    listed = {key_prefix + MANIFEST, *(part["key"] for part in (*manifest.parts, *manifest.key_parts))}
    leftovers = [key for key in store.list_keys(key_prefix) if key not in listed]
    if leftovers:
        store.delete_keys(leftovers)
        if progress:
            progress(f"deleted {len(leftovers)} object(s) of earlier attempts under {key_prefix}")
    return manifest


def _write_files(
    source: psycopg.Connection,
    store: ObjectStore,
    fmt: StageFormat,
    select: str,
    params: dict | None,
    columns: list[Column],
    folder: Path,
    key_prefix: str,
    parts: list[dict[str, Any]],
    progress: Any,
) -> None:
    """Export ``select`` as part files, uploaded under ``key_prefix`` and listed in ``parts`` as they finish."""

    def upload(path: Path, rows: int) -> None:
        key = key_prefix + path.name
        store.upload_file(path, key)
        parts.append({"key": key, "uri": store.uri(key), "rows": rows, "bytes": path.stat().st_size})
        path.unlink()
        if progress:
            progress(f"uploaded {key} ({rows} rows, {sum(p['rows'] for p in parts)} so far)")

    try:
        with source.cursor() as cur, cur.copy(f"COPY ({select}) TO STDOUT {fmt.copy_options}", params) as copy:
            fmt.write_parts(copy, columns, folder, upload)
    except psycopg.errors.InvalidTextRepresentation as error:  # the encoding's guard refusing a value
        raise (fmt.encoding.refused_value(error) or error) from error


def read_manifest(store: ObjectStore, key_prefix: str) -> Manifest:
    return Manifest.from_json(store.get_text(key_prefix + MANIFEST))


def load_staged(
    destination: psycopg.Connection, load: TableLoad, store: ObjectStore, key_prefix: str, staging_table: str
) -> Staged:
    """The manifest's parts into a fresh staging table (one transaction), verified by row count.

    Raises :class:`StagingLost` (extract again) when the manifest or a part is missing or the
    parts hold another number of rows than the manifest lists.
    """
    require_autocommit(destination)
    manifest = read_manifest(store, key_prefix)
    from dagforge.stage.formats import Column, stage_format

    fmt = stage_format(manifest.encoding, manifest.format, ROWS_PER_PART)
    schema = load.destination.schema
    with tempfile.TemporaryDirectory(prefix="dagforge-load-") as tmp, destination.transaction():
        for statement in sql.ensure_schema(schema):
            destination.execute(statement)

        def load_parts(parts: list[dict[str, Any]], columns: list[dict[str, str]], table: str) -> int:
            return _load_parts(destination, store, fmt, parts, schema, table, [Column(**c) for c in columns], Path(tmp))

        return manifest.load_into(staging_table, load_parts, key_prefix + MANIFEST)


def _load_parts(
    destination: psycopg.Connection,
    store: ObjectStore,
    fmt: StageFormat,
    parts: list[dict[str, Any]],
    schema: str,
    table: str,
    columns: list[Column],
    tmp: Path,
) -> int:
    """A fresh staging table ``table`` holding the parts' rows; returns how many it holds."""
    for statement in sql.create_staging(schema, table, [sql.Column(c.name, c.type_sql) for c in columns]):
        destination.execute(statement)
    copy_sql = sql.copy_in(schema, table, [c.name for c in columns], False) + " (FORMAT csv)"
    for part in parts:
        local = tmp / Path(part["key"]).name
        store.download_file(part["key"], local)
        with destination.cursor() as cur, cur.copy(copy_sql) as copy:
            for chunk in fmt.csv_chunks(local, columns):
                copy.write(chunk)
        local.unlink()
    return destination.execute(sql.count_rows(schema, table)).fetchone()[0]


def with_extract_again(load_step: Callable[[], _T], extract_again: Callable[[], Manifest], what: str) -> _T:
    """Run ``load_step``; when what it reads is lost, extract again (same window) and run it once more."""
    try:
        return load_step()
    except StagingLost as lost:
        log.warning("%s: extracting %s again from the window the check step decided", lost, what)
        extract_again()
        return load_step()
