"""A bounded background writer: an application that keeps changing a source database while a
pipeline reads it. For end-to-end and fault tests (``tests/e2e``), never for production data.

One *tick* runs every statement of :attr:`SourceWriter.statements`, in order, in one transaction
(so a reader sees all of a tick or none of it), then commits and counts. Ticks run one after the
other in a daemon thread, ``interval_s`` apart, until :meth:`SourceWriter.stop` is called or a
bound is reached: ``max_ticks`` committed ticks or ``max_seconds`` since :meth:`start`, whichever
comes first. The writer can never outlive a test: ``max_seconds`` is required, and leaving the
``with`` block stops and joins the thread.

Each statement is run with the parameters ``{"tick": n}`` (n = 1, 2, … for this writer), so a
statement may use ``%(tick)s``; a literal percent sign is then written ``%%``. A failing tick
stops the writer; the exception is re-raised by :meth:`stop` (and so when the ``with`` block
ends), so a broken statement fails the test instead of silently writing nothing::

    statements = [
        "UPDATE public.customers SET updated_at = clock_timestamp() WHERE customer_id = 1 + %(tick)s %% 1000",
    ]
    with SourceWriter(dsn, statements, interval_s=0.2, max_seconds=120) as writer:
        ...  # run the pipeline
    assert writer.ticks > 0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import psycopg

log = logging.getLogger(__name__)


class SourceWriter:
    """Run ``statements`` as one transaction every ``interval_s`` seconds in a background thread."""

    def __init__(
        self,
        conninfo: str,
        statements: Sequence[str],
        *,
        interval_s: float = 0.5,
        max_seconds: float,
        max_ticks: int | None = None,
        name: str = "source-writer",
    ) -> None:
        if not statements:
            raise ValueError("SourceWriter needs at least one statement")
        if interval_s < 0 or max_seconds <= 0 or (max_ticks is not None and max_ticks <= 0):
            raise ValueError("interval_s must be >= 0, max_seconds and max_ticks > 0")
        self.conninfo = conninfo
        self.statements = list(statements)
        self.interval_s = interval_s
        self.max_seconds = max_seconds
        self.max_ticks = max_ticks
        self.name = name
        self._ticks = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._lock = threading.Lock()

    @property
    def ticks(self) -> int:
        """Committed ticks so far."""
        with self._lock:
            return self._ticks

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def elapsed_s(self) -> float:
        """Seconds from :meth:`start` to the end of the last tick (or to now, while running)."""
        if self._started_at is None:
            return 0.0
        return (self._stopped_at or time.monotonic()) - self._started_at

    def start(self) -> SourceWriter:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was started already")
        # Connect in the caller's thread: a wrong DSN fails here, not silently in the thread.
        conn = psycopg.connect(self.conninfo, autocommit=True, application_name=self.name)
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(conn,), name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> int:
        """Stop after the tick in progress, join the thread; re-raise its error; return the ticks committed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not stop within {timeout:.0f} s")
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed after {self.ticks} ticks: {self._error}") from self._error
        return self.ticks

    def wait(self, ticks: int, timeout: float) -> None:
        """Block until at least ``ticks`` ticks are committed (TimeoutError, or the writer's error)."""
        deadline = time.monotonic() + timeout
        while self.ticks < ticks:
            if self._error is not None or not self.running:
                self.stop()
                raise RuntimeError(f"{self.name} ended after {self.ticks} ticks, before {ticks}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {self.ticks} ticks after {timeout:.0f} s, waited for {ticks}")
            time.sleep(0.05)

    def _run(self, conn: psycopg.Connection) -> None:
        assert self._started_at is not None
        deadline = self._started_at + self.max_seconds
        try:
            with conn:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if self.max_ticks is not None and self._ticks >= self.max_ticks:
                        break
                    with conn.transaction():
                        for statement in self.statements:
                            conn.execute(statement, {"tick": self._ticks + 1})
                    with self._lock:
                        self._ticks += 1
                    self._stop.wait(self.interval_s)
        except BaseException as exc:  # handed to the caller by stop()
            log.exception("%s failed", self.name)
            self._error = exc
        finally:
            self._stopped_at = time.monotonic()

    def __enter__(self) -> SourceWriter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:  # the test's own failure matters more than the writer's
            self.stop()
        except Exception:
            log.exception("%s: error while stopping after another failure", self.name)
