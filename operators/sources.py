"""Source kinds bound to their Airflow connections: what every check and stage step opens.

:data:`CONNECT` maps ``source.kind`` to a function that takes a table load and yields a
:class:`dagforge.contracts.Source` on the kind's connection; nothing else in the operators
branches on the source kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from dagforge.contracts import RunInfo, Source
from dagforge.loadspec import TableLoad
from dagforge.sources import source_class
from operators.base import postgres_connection

Progress = Callable[[str], None] | None


@contextlib.contextmanager
def postgres_source(load: TableLoad, progress: Progress = None) -> Iterator[Source]:
    with postgres_connection(load.source.connection) as conn:
        yield source_class("postgres")(conn)


@contextlib.contextmanager
def http_source(load: TableLoad, progress: Progress = None) -> Iterator[Source]:
    """An optional Airflow ``http`` connection gives the base URL, headers (its extra) and auth."""
    from dagforge.sources.http import HttpEndpoint

    endpoint = HttpEndpoint()
    if load.source.connection:
        from airflow.sdk import BaseHook

        endpoint = HttpEndpoint.from_connection(BaseHook.get_connection(load.source.connection))
    source = source_class("http")(endpoint, progress=progress)
    try:
        yield source
    finally:
        source.close()


CONNECT: dict[str, Callable[[TableLoad, Progress], contextlib.AbstractContextManager[Source]]] = {
    "postgres": postgres_source,
    "http": http_source,
}
"""source.kind → a source on its connection."""


def open_source(load: TableLoad, progress: Progress = None) -> contextlib.AbstractContextManager[Source]:
    """The table's source on its connection; ``progress`` (the task log) hears how a read goes."""
    return CONNECT[load.source_kind](load, progress)


def run_info(context: Any) -> RunInfo:
    """The run's id and data interval (ISO 8601; None for a run without one)."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return RunInfo(
        run_id=context.get("run_id", ""),
        data_interval_start=iso(context.get("data_interval_start")),
        data_interval_end=iso(context.get("data_interval_end")),
    )
