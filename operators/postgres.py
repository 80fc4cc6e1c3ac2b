"""Postgres → Postgres table load: check for new rows, stage with COPY, publish in one transaction."""

from __future__ import annotations

from typing import Any

import psycopg

from dagforge.contracts import PublishOutcome, Staged
from dagforge.transfer import postgres_load
from dagforge.transform import run_postgres_transform
from operators.base import SqlTransformOperator, TableLoadOperator, fail_fast_on_terminal_errors, postgres_connection
from operators.sources import open_source, run_info


class PostgresCheckNewRowsOperator(TableLoadOperator):
    """Reads the watermark and decides what the load reads; the next step skips when nothing is new."""

    ui_color = "#fdf6e3"

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        force_full, run = self.force_full(context), run_info(context)
        with (
            fail_fast_on_terminal_errors(),
            open_source(load, self.log.info) as source,
            postgres_connection(load.destination.connection) as destination,
        ):
            window = postgres_load.decide_window(source, destination, load, force_full=force_full, run=run)
        self.log.info("%s: %s", load.source.label, window.reason)
        return window.to_dict()


class PostgresStageTableOperator(TableLoadOperator):
    """Streams the rows to load into a fresh staging table on the destination server."""

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        window = self.window_or_skip(context)
        staging = load.staging_table(context["run_id"])
        self.log.info(
            "staging %s into %s.%s (%s)",
            load.source.label,
            load.destination.schema,
            staging,
            window.reason,
        )
        with (
            fail_fast_on_terminal_errors(),
            open_source(load, self.log.info) as source,
            postgres_connection(load.destination.connection) as destination,
        ):
            staged, stats = postgres_load.stage(source, destination, load, window, staging, self._progress)
        self.log.info(
            "staged %d rows (%.1f MB) in %.1f s (%.0f rows/s) from the source's snapshot at %s",
            stats.rows,
            stats.bytes / 1e6,
            stats.seconds,
            stats.rows / max(stats.seconds, 1e-9),
            staged.snapshot_at,
        )
        return staged.to_dict()

    def _progress(self, moved_bytes: int, seconds: float) -> None:
        self.log.info("copied %.1f MB in %.0f s", moved_bytes / 1e6, seconds)


class PostgresPublishTableOperator(TableLoadOperator):
    """Moves staging into the final table and writes the state, in one transaction, under the table's lock.

    Staging lost since the stage step (a warehouse restart empties UNLOGGED tables, a manual drop)
    is staged again from the check step's window first (:meth:`restage`).
    """

    ui_color = "#e6f4ea"

    def execute(self, context: Any) -> int:
        load = self.table_load
        staged = Staged.from_dict(self.upstream_result(context))
        with fail_fast_on_terminal_errors(), postgres_connection(load.destination.connection) as destination:
            outcome = postgres_load.publish(
                destination, load, staged, context["run_id"], lambda: self.restage(destination, staged, context)
            )
        self.log_outcome(outcome, staged)
        return outcome.rows

    def restage(self, destination: psycopg.Connection, staged: Staged, context: Any) -> Staged:
        load = self.table_load
        with open_source(load) as source:
            return postgres_load.restage_direct(source, destination, load, staged)

    def log_outcome(self, outcome: PublishOutcome, staged: Staged) -> None:
        dest = self.table_load.destination
        self.log.info("%s.%s (%s): %s", dest.schema, dest.table, staged.load_mode, outcome.reason)


class PostgresTransformOperator(SqlTransformOperator):
    """Runs one SQL file in the destination, in its own transaction, one run at a time.

    The template sees (besides what every transform sees, :class:`SqlTransformOperator`):
    ``pipeline``, ``schema`` (the destination schema) and ``tables`` (table name → quoted
    ``"schema"."table"``). Runs of the same transform (overlapping runs, a backfill, a late retry)
    wait for each other: a lock per pipeline and transform is taken first in the transaction, so
    a ``DELETE`` + ``INSERT`` rebuild never interleaves with another.
    """

    def __init__(self, *, connection: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.connection = connection

    def execute(self, context: Any) -> None:
        sql_text = self.rendered(context)
        lock_key = f"{self.template_context['pipeline']}.{self.name}"
        with fail_fast_on_terminal_errors(), postgres_connection(self.connection) as conn:
            run_postgres_transform(conn, lock_key, sql_text)
