"""Postgres → S3/MinIO → Postgres: extract a table's window into part files, load them into staging."""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from dagforge.stage.extract_load import extract, load_staged, run_prefix
from dagforge.stage.s3_store import S3Store
from operators.base import TableLoadOperator, fail_fast_on_terminal_errors, postgres_connection


class _S3StageOperator(TableLoadOperator):
    def __init__(self, *, stage: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.stage = stage

    def store(self) -> S3Store:
        """``stage.connection`` is an Airflow ``aws`` connection; MinIO sets ``endpoint_url`` in its extra."""
        return S3Store(S3Hook(aws_conn_id=self.stage["connection"]).get_conn(), self.stage["bucket"])

    def key_prefix(self, context: Any) -> str:
        return run_prefix(self.stage.get("prefix"), self.table_load, context["run_id"])


class S3ExtractOperator(_S3StageOperator):
    """Streams the rows to load into part files (parquet, csv or jsonl) plus a manifest in the bucket."""

    ui_color = "#fff4e5"

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        window = self.window_or_skip(context)
        prefix = self.key_prefix(context)
        self.log.info("extracting %s.%s to s3://%s/%s (%s)", load.source.schema, load.source.table,
                      self.stage["bucket"], prefix, window.reason)  # fmt: skip
        with fail_fast_on_terminal_errors(), postgres_connection(load.source.connection) as source:
            manifest = extract(
                source, load, window, self.store(), prefix, self.stage.get("format", "parquet"), context["run_id"],
                progress=self.log.info,
            )  # fmt: skip
        self.log.info("%d rows in %d part(s); cursor range %s .. %s", manifest.rows, len(manifest.parts),
                      manifest.watermark_min, manifest.watermark_max)  # fmt: skip
        return {"key_prefix": prefix, "rows": manifest.rows, "parts": len(manifest.parts)}


class S3LoadOperator(_S3StageOperator):
    """Loads the parts its manifest lists into a fresh staging table on the destination."""

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        extracted = self.upstream_result(context)
        staging = load.staging_table(context["run_id"])
        with fail_fast_on_terminal_errors(), postgres_connection(load.destination.connection) as destination:
            staged = load_staged(destination, load, self.store(), extracted["key_prefix"], staging)
        self.log.info("loaded %d rows into %s.%s", staged.rows, load.destination.schema, staging)
        return staged.to_dict()
