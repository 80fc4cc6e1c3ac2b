"""Postgres → Postgres table load: check for new rows, stage with COPY, publish in one transaction."""

from __future__ import annotations

from typing import Any

import psycopg
from airflow.sdk.exceptions import AirflowFailException

from dagforge.contracts import PublishOutcome, Staged, Window
from dagforge.transfer import postgres_load
from dagforge.transform import run_postgres_transform
from operators.base import SqlTransformOperator, TableLoadOperator, fail_fast_on_terminal_errors, postgres_connection
from operators.sources import open_source, run_info


class PostgresCheckNewRowsOperator(TableLoadOperator):
    """Reads the watermark and decides what the load reads; the next step skips when nothing is new."""

    ui_color = "#fdf6e3"

    def execute(self, context: Any) -> Any:
        load = self.table_load
        force_full, run = self.force_full(context), run_info(context)
        with (
            fail_fast_on_terminal_errors(),
            open_source(load, self.log.info) as source,
            postgres_connection(load.destination.connection) as destination,
        ):
            window = postgres_load.decide_window(source, destination, load, force_full=force_full, run=run)
            self.log.info("%s: %s", load.source.label, window.reason)
            return self.result(source, window)

    def result(self, source: Any, window: Window) -> Any:
        """What the next step reads (XCom): the window."""
        return window.to_dict()


class PostgresCheckChunksOperator(PostgresCheckNewRowsOperator):
    """The check step of a chunked table (``chunks:``): what the load reads, as one window per key
    range of the source now; the mapped stage task runs one instance per chunk."""

    def result(self, source: Any, window: Window) -> list[dict[str, Any]]:
        chunks = source.split(self.table_load, window)
        for chunk in chunks:
            self.log.info("planned: %s", chunk.reason)
        return [chunk.to_dict() for chunk in chunks]


class PostgresStageTableOperator(TableLoadOperator):
    """Streams the rows to load into a fresh staging table on the destination server."""

    def window(self, context: Any) -> Window:
        return self.window_or_skip(context)

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        window = self.window(context)
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


class PostgresStageChunkOperator(PostgresStageTableOperator):
    """Stages one chunk of a chunked table (a mapped task: ``window`` is one of the check's chunks)
    into a table of its own that joins the run's staging table in the chunk's commit; a retry
    replaces its chunk and nothing else."""

    def __init__(self, *, window: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.chunk_window = window

    def window(self, context: Any) -> Window:
        return Window.from_dict(self.chunk_window)


class PostgresPublishTableOperator(TableLoadOperator):
    """Moves staging into the final table and writes the state, in one transaction, under the table's lock.

    Staging lost since the stage step (a warehouse restart empties UNLOGGED tables, a manual drop)
    is staged again from the check step's window first (:meth:`restage`).
    """

    ui_color = "#e6f4ea"

    def staged(self, context: Any) -> Staged:
        return Staged.from_dict(self.upstream_result(context))

    def execute(self, context: Any) -> int:
        load = self.table_load
        staged = self.staged(context)
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


class PostgresPublishChunksOperator(PostgresPublishTableOperator):
    """Publishes a chunked table once every chunk is staged: the chunks' stagings as one
    (:meth:`Staged.combine`), then the publish of a single load (one transaction, the state once)."""

    def __init__(self, *, check_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.check_task_id = check_task_id

    def staged(self, context: Any) -> Staged:
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids=self.check_task_id)
        if not isinstance(planned, list) or not planned:
            raise AirflowFailException(f"no chunks from {self.check_task_id}; clear it and its downstream tasks")
        results = ti.xcom_pull(task_ids=self.upstream_task_id, map_indexes=list(range(len(planned))))
        missing = [i for i, r in enumerate(results) if not isinstance(r, dict)]
        if missing:
            raise AirflowFailException(
                f"chunk(s) {', '.join(str(i) for i in missing)} of {self.upstream_task_id} have no result; clear them"
            )
        staged = Staged.combine([Staged.from_dict(r) for r in results])
        self.log.info("%d chunks staged %d rows into %s", len(results), staged.rows, staged.staging_table)
        return staged


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
