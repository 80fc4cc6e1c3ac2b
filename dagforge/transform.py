"""SQL transforms: Jinja-rendered SQL files run in the destination after the loads they depend on."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dagforge.errors import TerminalError

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
CONTEXT_NAMES = ("pipeline", "schema", "tables", "run_id", "params", "data_interval_start", "data_interval_end")


def render_transform(sql: str, context: dict[str, Any]) -> str:
    """The SQL with ``{{ … }}`` filled in; an unknown name is a terminal error, not a retry."""
    try:
        return _ENV.from_string(sql).render(**context)
    except TemplateError as exc:
        raise TerminalError(f"transform SQL does not render: {exc} (available: {', '.join(CONTEXT_NAMES)})") from exc


def run_postgres_transform(conn: Any, lock_key: str, sql_text: str) -> None:
    """Run a rendered transform in one transaction, after the transform's own lock.

    Runs of one transform (overlapping runs, a backfill, a late retry) wait for each other, so a
    ``DELETE`` + ``INSERT`` rebuild never interleaves with another one (whose rows it would
    duplicate). ``conn`` is a psycopg connection in autocommit mode.
    """
    from dagforge.sql.postgres import transform_lock

    with conn.transaction():
        conn.execute(transform_lock(), {"lock_key": lock_key})
        conn.execute(sql_text)
