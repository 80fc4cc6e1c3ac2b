"""Any source → object storage: extract a table's window into part files (any store, any encoding),
and load them back into a Postgres staging table. Stores are a registry keyed by ``stage.kind``.

What a step reads may be lost before it runs (a bucket server restarted empty, a part deleted):
the load and publish steps then extract again from the check step's window (:meth:`extract_again`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from dagforge.contracts import Staged, Window
from dagforge.stage.extract_load import Manifest, ObjectStore, extract, load_staged, run_prefix, with_extract_again
from operators.base import TableLoadOperator, fail_fast_on_terminal_errors, postgres_connection
from operators.postgres import PostgresPublishTableOperator
from operators.sources import open_source


def s3_store(stage: dict[str, Any]) -> ObjectStore:
    """``stage.connection`` is an Airflow ``aws`` connection; MinIO sets ``endpoint_url`` in its extra."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from dagforge.stage.s3_store import S3Store

    return S3Store(S3Hook(aws_conn_id=stage["connection"]).get_conn(), stage["bucket"])


def gcs_store(stage: dict[str, Any]) -> ObjectStore:
    """``stage.connection`` is a ``google_cloud_platform`` connection (``STORAGE_EMULATOR_HOST`` for an emulator)."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from dagforge.stage.gcs_store import GCSStore

    return GCSStore(GCSHook(gcp_conn_id=stage["connection"]).get_conn(), stage["bucket"], stage.get("location"))


STORES: dict[str, Callable[[dict[str, Any]], ObjectStore]] = {"s3": s3_store, "gcs": gcs_store}
"""stage.kind → the store for a stage block."""


class _StageOperator(TableLoadOperator):
    """``stage`` is the stage block: kind, connection, bucket, prefix, format, and ``encoding``, the
    destination kind the files are written for (column types, JSON shape)."""

    def __init__(self, *, stage: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage

    def store(self) -> ObjectStore:
        return STORES[self.stage["kind"]](self.stage)

    def key_prefix(self, context: Any) -> str:
        return run_prefix(self.stage.get("prefix"), self.table_load, context["run_id"])

    def extract_window(self, store: ObjectStore, window: Window, context: Any) -> Manifest:
        load = self.table_load
        with open_source(load, self.log.info) as source:
            manifest = extract(
                source, load, window, store, self.key_prefix(context), self.stage.get("format", "parquet"),
                context["run_id"], progress=self.log.info, encoding=self.stage.get("encoding", "postgres"),
            )  # fmt: skip
        self.log.info("%d rows in %d part(s); cursor range %s .. %s; source snapshot at %s", manifest.rows,
                      len(manifest.parts), manifest.watermark_min, manifest.watermark_max,
                      manifest.snapshot_at)  # fmt: skip
        return manifest

    def extract_again(self, store: ObjectStore, window: Window, context: Any) -> Callable[[], Manifest]:
        return lambda: self.extract_window(store, window, context)


class ExtractOperator(_StageOperator):
    """Streams the rows to load into part files plus a manifest in the bucket."""

    ui_color = "#fff4e5"

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        window = self.window_or_skip(context)
        prefix = self.key_prefix(context)
        store = self.store()
        self.log.info("extracting %s to %s (%s)", load.source.label, store.uri(prefix),
                      window.reason)  # fmt: skip
        with fail_fast_on_terminal_errors():
            manifest = self.extract_window(store, window, context)
        return {"key_prefix": prefix, "rows": manifest.rows, "parts": len(manifest.parts), "window": window.to_dict()}


class PostgresLoadOperator(_StageOperator):
    """Loads the parts its manifest lists into a fresh staging table on the Postgres destination."""

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        extracted = self.upstream_result(context)
        staging = load.staging_table(context["run_id"])
        store = self.store()
        window = Window.from_dict(extracted["window"])
        with fail_fast_on_terminal_errors(), postgres_connection(load.destination.connection) as destination:
            staged = with_extract_again(
                lambda: load_staged(destination, load, store, extracted["key_prefix"], staging),
                self.extract_again(store, window, context),
                load.source.label,
            )
        self.log.info("loaded %d rows into %s.%s", staged.rows, load.destination.schema, staging)
        return staged.to_dict()


class PostgresPublishFromStoreOperator(_StageOperator, PostgresPublishTableOperator):
    """The Postgres publish, for tables that come through object storage: lost staging is loaded
    again from the manifest, and extracted again first when the files are gone too."""

    def restage(self, destination: psycopg.Connection, staged: Staged, context: Any) -> Staged:
        load, store = self.table_load, self.store()
        return with_extract_again(
            lambda: load_staged(destination, load, store, self.key_prefix(context), staged.staging_table),
            self.extract_again(store, staged.source_window, context),
            load.source.label,
        )
