"""Object-storage transfers that overlap the work beside them, through bounded queues.

* :class:`BackgroundSink`: the extract hands each finished part file to a thread that uploads it
  while the next part is written; at most ``depth`` parts wait (on disk, not in memory), and the
  first failure is raised in the extract's own thread.
* :func:`in_background`: the load reads the next part (download, decode, CSV encode) in a thread
  while the destination's ``COPY`` takes the blocks already made; at most ``depth`` blocks wait.

Arrow, boto3's and google-cloud-storage's sockets and psycopg all release the GIL while they
work, so the two threads of each step really run at once. Either side stopping (an error, a
killed task) stops the other: nothing is left running or half-uploaded behind the step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class BackgroundSink:
    """A part sink (``sink(path, rows)``) whose work runs in a thread, one part at a time, in order.

    Use as a context manager: leaving it waits for every part and raises the first failure (or,
    leaving on an error, drops the parts still waiting). ``said`` lines (progress) are passed to
    ``progress`` from the caller's thread, as parts finish.
    """

    def __init__(self, work: Callable[[Path, int], str | None], progress: Any = None, depth: int = 1):
        self._work, self._progress = work, progress
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._said: list[str] = []
        self._thread = threading.Thread(target=self._run, name="dagforge-upload", daemon=True)

    def __enter__(self) -> BackgroundSink:
        self._thread.start()
        return self

    def __call__(self, path: Path, rows: int) -> None:
        self._check()
        self._queue.put((path, rows))  # waits while `depth` parts are queued

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self._stop.set()
        self._queue.put(_END)
        self._thread.join()
        if exc_type is None:
            self._check()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _END:
            if self._stop.is_set():
                continue  # drained, not done: the step failed
            try:
                said = self._work(*item)
            except BaseException as failure:  # raised in the caller's thread
                self._failure = failure
                self._stop.set()
            else:
                if said:
                    self._said.append(said)

    def _check(self) -> None:
        while self._said:
            line = self._said.pop(0)
            if self._progress:
                self._progress(line)
        if self._failure is not None:
            raise self._failure


def in_background(produce: Callable[[], Iterator[T]], depth: int = 2, name: str = "dagforge-read") -> Iterator[T]:
    """The items ``produce()`` yields, made in a thread at most ``depth`` items ahead of the caller.

    Its failure is raised here, at the item it failed on; closing this generator early (the
    caller failed) stops the thread at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # raised in the caller's thread
            failure.append(exc)
        items.put(_END)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _END:
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        _drain(items, thread)


def _drain(items: queue.Queue, thread: threading.Thread) -> None:
    """Empty ``items`` until ``thread`` ends (a put of its may wait on the full queue)."""
    while thread.is_alive():
        with contextlib.suppress(queue.Empty):
            items.get(timeout=0.1)
    thread.join()
