"""Generate → Postgres: append realistic fake rows to every table of a pipeline, in one transaction."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from dagforge.generate.postgres_writer import generate_run
from dagforge.generate.tables import GeneratedTable
from operators.base import fail_fast_on_terminal_errors, postgres_connection


class GenerateRowsOperator(BaseOperator):
    """Runs one generate run; returns rows written per table (also in the task log)."""

    ui_color = "#f3e8fd"

    def __init__(
        self,
        *,
        pipeline: str,
        destination: dict[str, str],
        tables: list[dict[str, Any]],
        locale: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.destination = destination
        self.tables = tables
        self.locale = locale
        self.seed = seed

    def execute(self, context: Any) -> dict[str, int]:
        tables = [GeneratedTable.from_dict(t) for t in self.tables]
        with fail_fast_on_terminal_errors(), postgres_connection(self.destination["connection"]) as conn:
            written = generate_run(
                conn, self.destination["schema"], tables, locale=self.locale, seed=self.seed, progress=self.log.info
            )
        for table, rows in written.items():
            self.log.info("%s.%s: %d rows added", self.destination["schema"], table, rows)
        return written
