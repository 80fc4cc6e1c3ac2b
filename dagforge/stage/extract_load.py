"""Any source → object storage → a destination's staging, with a manifest per table and run.

Objects live under ``<prefix>/<pipeline>/<table>/<run id>/``: ``<attempt>/part-NNNNN.<ext>`` files
and ``manifest.json`` (row count, columns and types, the source snapshot's time, cursor range and
lookback digest, the window, the parts). Runs never overwrite each other, and neither do two
attempts of one run (each writes under its own attempt folder; a zombie attempt cannot overwrite a
part of the live one). The manifest is written last and is the commit point; then every object of
the run prefix it does not list (a killed attempt's parts) is deleted. The load step reads only
what the manifest lists; a missing manifest or part means "extract again" (:class:`ObjectMissing`).
The rows come from any source kind's :class:`~dagforge.contracts.SourceRead`; this module never
learns which.
Storage back ends implement :class:`ObjectStore` (:mod:`~dagforge.stage.s3_store`,
:mod:`~dagforge.stage.gcs_store`); the encoding (:mod:`~dagforge.stage.encodings`) follows the
destination that reads the files.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg

from dagforge.contracts import Column, Manifest, ObjectMissing, Source, Staged, StagingLost, Window
from dagforge.loadspec import TableLoad
from dagforge.sql import postgres as sql
from dagforge.stage.overlap import BackgroundSink, in_background
from dagforge.transfer import postgres_swap

if TYPE_CHECKING:  # pyarrow costs 0.3 s to import: only the steps that write or read parts pay it
    from dagforge.stage.formats import StageFormat

log = logging.getLogger(__name__)

__all__ = ["Manifest", "ObjectMissing", "ObjectStore", "extract", "load_staged", "read_manifest", "with_extract_again"]
MANIFEST = "manifest.json"
_T = TypeVar("_T")
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


def run_prefix(prefix: str | None, load: TableLoad, run_id: str) -> str:
    """``<prefix>/<pipeline>/<table>/<run id>/`` with the run id made safe for every store."""
    safe_run = re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)
    parts = [p for p in ((prefix or "").strip("/"), load.pipeline, load.destination.table, safe_run) if p]
    return "/".join(parts) + "/"


def extract(
    source: Source,
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
    """Stream the window's rows (one consistent read of ``source``) into part files under
    ``key_prefix``, then write the manifest: the commit point."""
    from dagforge.stage.formats import stage_format

    fmt: StageFormat = stage_format(encoding, file_format, rows_per_part)
    attempt = uuid.uuid4().hex[:8]
    store.ensure_bucket()
    with tempfile.TemporaryDirectory(prefix="dagforge-extract-") as tmp, source.read(load, window) as read:
        manifest = Manifest(
            load.pipeline, load.destination.table, run_id, file_format, window.load_mode,
            [c.to_dict() for c in read.columns], encoding=encoding, window=window.to_dict(), attempt=attempt,
        )  # fmt: skip
        folder = Path(tmp)
        with _uploads(store, f"{key_prefix}{attempt}/", manifest.parts, progress) as upload:
            read.write_rows(fmt, folder, upload)
        manifest.rows = sum(part["rows"] for part in manifest.parts)
        keys = read.key_columns()
        if keys is not None:
            (folder / "keys").mkdir()
            with _uploads(store, f"{key_prefix}{attempt}/keys/", manifest.key_parts, progress) as upload:
                read.write_keys(fmt, folder / "keys", upload)
            manifest.key_columns = [c.to_dict() for c in keys]
            manifest.key_rows = sum(part["rows"] for part in manifest.key_parts)
        manifest.record_snapshot(read.snapshot())
        manifest.source = read.manifest_facts()
    store.put_text(key_prefix + MANIFEST, manifest.to_json())  # the commit point
    listed = {key_prefix + MANIFEST, *(part["key"] for part in (*manifest.parts, *manifest.key_parts))}
    leftovers = [key for key in store.list_keys(key_prefix) if key not in listed]
    if leftovers:
        store.delete_keys(leftovers)
        if progress:
            progress(f"deleted {len(leftovers)} object(s) of earlier attempts under {key_prefix}")
    return manifest


def _uploads(store: ObjectStore, key_prefix: str, parts: list[dict[str, Any]], progress: Any) -> BackgroundSink:
    """A part sink: each finished part is uploaded under ``key_prefix`` (in a thread, while the next
    part is written; one more waits at most) and listed in ``parts``, in order."""

    def upload(path: Path, rows: int) -> str:
        key = key_prefix + path.name
        store.upload_file(path, key)
        parts.append({"key": key, "uri": store.uri(key), "rows": rows, "bytes": path.stat().st_size})
        path.unlink()
        return f"uploaded {key} ({rows} rows, {sum(p['rows'] for p in parts)} so far)"

    return BackgroundSink(upload, progress)


def read_manifest(store: ObjectStore, key_prefix: str) -> Manifest:
    return Manifest.from_json(store.get_text(key_prefix + MANIFEST))


def load_staged(
    destination: psycopg.Connection, load: TableLoad, store: ObjectStore, key_prefix: str, staging_table: str
) -> Staged:
    """The manifest's parts into a fresh staging table (one transaction), verified by row count.

    Raises :class:`StagingLost` (extract again) when the manifest or a part is missing or the
    parts hold another number of rows than the manifest lists.
    """
    sql.require_autocommit(destination)
    manifest = read_manifest(store, key_prefix)
    from dagforge.stage.formats import stage_format

    fmt = stage_format(manifest.encoding, manifest.format, ROWS_PER_PART)
    schema = load.destination.schema
    with tempfile.TemporaryDirectory(prefix="dagforge-load-") as tmp, destination.transaction():
        for statement in sql.ensure_schema(schema):
            destination.execute(statement)
        # a full replace the publish can swap in: staging logged, rows frozen (docs/decisions/0013)
        frozen = postgres_swap.freezes_staging(destination, load, manifest.load_mode)

        def load_parts(parts: list[dict[str, Any]], columns: list[dict[str, Any]], table: str) -> int:
            typed = [Column(**c) for c in columns]

            def copy(into: list[Column]) -> int:
                with destination.transaction():  # a savepoint: the table and its rows, or neither
                    return _load_parts(destination, store, fmt, parts, schema, table, into, Path(tmp), frozen and
                                       table == staging_table)  # fmt: skip

            try:
                return copy(typed)
            except psycopg.errors.NotNullViolation as refused:  # a NOT NULL dropped meanwhile at the source
                if not any(c.not_null for c in typed):
                    raise
                log.warning("%s.%s: %s, which the source declared NOT NULL when it was read: loading the parts "
                            "again into a staging table without NOT NULLs", schema, table,
                            refused.diag.message_primary)  # fmt: skip
                return copy([dataclasses.replace(c, not_null=False) for c in typed])

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
    frozen: bool = False,
) -> int:
    """A fresh staging table ``table`` holding the parts' rows (``frozen``: logged, ``COPY … FREEZE``,
    in the transaction that created it); returns how many it holds.

    The staging declares NOT NULL where the manifest says the source did (so a swap need not scan the
    rows for it); the caller loads again without them when a NULL arrives there after all (the
    column's NOT NULL dropped between the source's catalog read and its snapshot)."""
    for statement in sql.create_staging(schema, table, sql.staging_columns(columns), logged=frozen):
        destination.execute(statement)
    binary = fmt.copies_binary(columns)
    copy_sql = sql.copy_in(schema, table, [c.name for c in columns], binary, csv=not binary, freeze=frozen)
    log.info("%s.%s: loading %d %s part(s) by %s COPY", schema, table, len(parts), fmt.extension,
             "binary" if binary else "CSV")  # fmt: skip

    def downloaded() -> Iterator[Path]:
        for part in parts:
            local = tmp / Path(part["key"]).name
            store.download_file(part["key"], local)
            yield local
            local.unlink()

    def blocks() -> Iterator[bytes | memoryview]:  # in a thread: the next blocks are made while COPY takes these
        yield from fmt.load_chunks(downloaded(), columns)

    with destination.cursor() as cur:
        with cur.copy(copy_sql) as copy:
            for block in in_background(blocks):
                copy.write(block)
        return cur.rowcount  # the server's count of the rows COPY wrote into the table made above


def with_extract_again(load_step: Callable[[], _T], extract_again: Callable[[], Manifest], what: str) -> _T:
    """Run ``load_step``; when what it reads is lost, extract again (same window) and run it once more."""
    try:
        return load_step()
    except StagingLost as lost:
        log.warning("%s: extracting %s again from the window the check step decided", lost, what)
        extract_again()
        return load_step()
