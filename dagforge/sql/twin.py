"""Work on a second connection that shares a transaction's snapshot, in a thread, while the first
connection goes on: the source's table figures beside the COPY of its rows
(:func:`dagforge.sources.postgres.figures_alongside`), the publish's measurement of a staging table
beside its index builds (:mod:`dagforge.transfer.postgres_swap`).

The twin imports the snapshot the caller's open transaction exports (``pg_export_snapshot``), so
it reads exactly what that transaction reads at the export; or, where the caller holds a lock that
keeps what the twin reads from changing (a savepoint cannot export its snapshot), it takes a
snapshot of its own. Where no twin can be had (a standby, no free connection slot)
:func:`alongside` says so and the caller does the work itself afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg

from dagforge.sql import postgres as sql

log = logging.getLogger(__name__)
T = TypeVar("T")


def snapshot_twin(
    conn: psycopg.Connection, pins: tuple[str, ...], why_not: str, *, share: bool = True
) -> psycopg.Connection | None:
    """A new connection in a read-only REPEATABLE READ transaction on ``conn``'s snapshot (``share``;
    else a snapshot of its own, taken at its first query), with ``pins`` set; None (logged with
    ``why_not``) when there is none to be had."""
    snapshot = None
    if share:
        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            return None  # a standby cannot export its snapshot
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    try:
        twin = psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True)
    except psycopg.OperationalError as exc:
        log.info("%s (no second connection: %s)", why_not, exc)
        return None
    twin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if snapshot is not None:
        twin.execute(f"SET TRANSACTION SNAPSHOT {sql.literal(snapshot)}")
    for statement in pins:
        twin.execute(statement)
    return twin


@contextlib.contextmanager
def alongside(
    conn: psycopg.Connection,
    work: Callable[[psycopg.Connection], T],
    pins: tuple[str, ...],
    why_not: str,
    *,
    share: bool = True,
) -> Iterator[Callable[[], T | None]]:
    """Run ``work(twin)`` (which returns something, never None) in a thread while the caller goes
    on; yields a function that waits for its result (None when no twin could be had: the caller
    runs ``work`` itself). ``share``: see :func:`snapshot_twin`. Leaving early (the caller failed)
    cancels the twin's query."""
    twin = snapshot_twin(conn, pins, why_not, share=share)
    if twin is None:
        yield lambda: None
        return
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work(twin)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="dagforge-twin", daemon=True)
    thread.start()

    def result() -> T | None:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    try:
        yield result
    finally:
        if thread.is_alive():  # the caller failed first: stop the scan
            twin.cancel_safe()
            thread.join()
        twin.close()
