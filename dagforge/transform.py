"""SQL transforms: Jinja-rendered SQL files run in the destination after the loads they depend on."""

from __future__ import annotations

import time
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
    import psycopg

    from dagforge.sql.postgres import transform_lock

    for attempt in range(1, CATALOG_RACE_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(transform_lock(), {"lock_key": lock_key})
                conn.execute(sql_text)
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject) as exc:
            # two transforms (of two runs of a backfill) ran ``CREATE SCHEMA/TABLE IF NOT EXISTS`` at
            # the same moment: one loses on the catalog (a unique index of pg_namespace or pg_type,
            # or "type already exists"); run again, it exists now. A real duplicate fails every time.
            constraint = getattr(exc.diag, "constraint_name", None) or ""
            lost_race = isinstance(exc, psycopg.errors.DuplicateObject) or constraint.startswith("pg_")
            if not lost_race or attempt == CATALOG_RACE_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)


CATALOG_RACE_ATTEMPTS = 5
"""How often a transform that lost a race to create the same schema or table is run again."""
