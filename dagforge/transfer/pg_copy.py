"""Stream COPY chunks into a PostgreSQL server, in constant memory.

A source's ``COPY (SELECT …) TO STDOUT`` (:meth:`dagforge.contracts.CopyRead.copy_stream`) feeds
``COPY … FROM STDIN`` on the target chunk by chunk (psycopg 3 yields the server's buffers as they
arrive), so memory does not grow with the table. No Airflow here: the operator and
``bench/pg_to_pg.py`` call the same function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class CopyStats:
    rows: int
    bytes: int
    seconds: float


ProgressFn = Callable[[int, float], None]
"""Called with (bytes so far, seconds so far) at most every ``progress_every`` seconds."""


def pipe_copy(
    chunks: Iterable[bytes],
    target: psycopg.Connection,
    copy_in_sql: str,
    *,
    progress: ProgressFn | None = None,
    progress_every: float = 10.0,
) -> CopyStats:
    """Write COPY chunks from any source (a source's ``copy_stream``) into ``COPY … FROM STDIN``."""
    started = last_report = time.monotonic()
    moved = 0
    with target.cursor() as in_cur:
        with in_cur.copy(copy_in_sql) as copy_in:
            for chunk in chunks:
                copy_in.write(chunk)
                moved += len(chunk)
                if progress and time.monotonic() - last_report >= progress_every:
                    last_report = time.monotonic()
                    progress(moved, last_report - started)
        rows = in_cur.rowcount
    return CopyStats(rows=rows, bytes=moved, seconds=time.monotonic() - started)
