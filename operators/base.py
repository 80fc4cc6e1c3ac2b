"""What every dagforge operator shares: the table-load argument, connections, failure policy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dagforge.contracts import Window
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.transform import render_transform

# psycopg errors that no retry can fix: wrong names, bad data, missing rights.
_TERMINAL_SQL_ERRORS: tuple[type[Exception], ...] = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedObject,
    psycopg.errors.InvalidSchemaName,  # e.g. a type named by a schema only the source has
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.SyntaxError,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.InvalidColumnReference,
    psycopg.errors.CardinalityViolation,
)


@contextlib.contextmanager
def fail_fast_on_terminal_errors(*terminal: type[Exception]) -> Iterator[None]:
    """Turn errors a retry cannot fix into AirflowFailException; let transient ones retry.

    ``terminal`` adds a back end's own such errors (e.g. BigQuery's 400 Bad Request).
    """
    try:
        yield
    except TerminalError as exc:
        raise AirflowFailException(str(exc)) from exc
    except (*_TERMINAL_SQL_ERRORS, *terminal) as exc:
        if _concurrent_catalog_race(exc):
            raise  # two sessions created the same schema or type at once: the retry finds it there
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _concurrent_catalog_race(exc: Exception) -> bool:
    """A unique violation in a system catalog (``CREATE … IF NOT EXISTS`` racing another session)."""
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    return isinstance(exc, psycopg.errors.UniqueViolation) and constraint.startswith("pg_")


@contextlib.contextmanager
def postgres_connection(conn_id: str) -> Iterator[psycopg.Connection]:
    """A psycopg 3 connection from an Airflow connection, in autocommit mode, closed after use."""
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


class TableLoadOperator(BaseOperator):
    """Base for the per-table steps; ``load`` is :meth:`TableLoad.to_dict` from the plan."""

    ui_color = "#e8f1fb"

    def __init__(self, *, load: dict[str, Any], upstream_task_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.load = load
        self.upstream_task_id = upstream_task_id

    @property
    def table_load(self) -> TableLoad:
        return TableLoad.from_dict(self.load)

    def force_full(self, context: Any) -> bool:
        """Whether the trigger asked for a full reload of this table (``full_refresh`` params)."""
        params = context.get("params") or {}
        return bool(params.get("full_refresh")) or self.table_load.source.table in (
            params.get("full_refresh_tables") or []
        )

    def window_or_skip(self, context: Any) -> Window:
        """The check step's window; skips this task (and so what follows) when nothing is new."""
        window = Window.from_dict(self.upstream_result(context))
        if not window.new_rows:
            raise AirflowSkipException(f"nothing new: {window.reason}")
        return window

    def upstream_result(self, context: Any) -> dict[str, Any]:
        """The XCom that the previous step of this table returned."""
        value = context["ti"].xcom_pull(task_ids=self.upstream_task_id)
        if not isinstance(value, dict):
            raise AirflowFailException(
                f"no result from {self.upstream_task_id}; clear it and its downstream tasks to run again"
            )
        return value


class SqlTransformOperator(BaseOperator):
    """Base for the transform operators: one SQL file, rendered with Jinja per run.

    Beside the destination's own ``template_context`` (from the plan), the template sees
    ``run_id``, ``params``, ``data_interval_start`` and ``data_interval_end`` (None for manual
    runs without a logical date).
    """

    ui_color = "#e0f2f1"
    template_fields = ()

    def __init__(self, *, name: str, sql: str, template_context: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.name = name
        self.sql = sql
        self.template_context = template_context

    def rendered(self, context: Any) -> str:
        run_values = {
            "run_id": context["run_id"],
            "params": dict(context.get("params") or {}),
            "data_interval_start": context.get("data_interval_start"),
            "data_interval_end": context.get("data_interval_end"),
        }
        sql = render_transform(self.sql, {**self.template_context, **run_values})
        self.log.info("running transform %s:\n%s", self.name, sql)
        return sql
