"""The extract's upload thread and the load's read-ahead thread (dagforge.stage.overlap)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dagforge.stage.overlap import BackgroundSink, in_background


def test_the_sink_works_in_order_in_its_own_thread_and_says_so_from_the_callers() -> None:
    done, said, threads = [], [], set()

    def work(path: Path, rows: int) -> str:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        done.append((path.name, rows))
        return f"did {path.name}"

    with BackgroundSink(work, said.append) as sink:
        for n in range(5):
            sink(Path(f"part-{n}"), n)

    assert done == [(f"part-{n}", n) for n in range(5)]
    assert said == [f"did part-{n}" for n in range(5)]
    assert threads == {"dagforge-upload"}


def test_a_failed_upload_is_raised_in_the_callers_thread_and_stops_the_rest() -> None:
    done = []

    def work(path: Path, rows: int) -> None:
        if path.name == "part-1":
            raise OSError("bucket gone")
        done.append(path.name)

    with pytest.raises(OSError, match="bucket gone"), BackgroundSink(work) as sink:
        for n in range(6):
            sink(Path(f"part-{n}"), n)
            time.sleep(0.02)
    assert done == ["part-0"]


def test_leaving_on_an_error_drops_what_waits_and_ends_the_thread() -> None:
    started, release = [], threading.Event()

    def work(path: Path, rows: int) -> None:
        started.append(path.name)
        release.wait(5)

    sink = BackgroundSink(work, depth=1)
    with pytest.raises(RuntimeError), sink:
        sink(Path("part-0"), 1)  # taken by the thread
        time.sleep(0.05)
        sink(Path("part-1"), 1)  # waits in the queue
        release.set()
        raise RuntimeError("the source failed")
    assert started == ["part-0"]
    assert not sink._thread.is_alive()


def test_in_background_yields_everything_made_ahead_but_bounded() -> None:
    made = []

    def produce():
        for n in range(100):
            made.append(n)
            yield n

    got = []
    for item in in_background(produce, depth=2):
        got.append(item)
        time.sleep(0.001)
        assert len(made) <= len(got) + 3  # two queued, one in the producer's hand
    assert got == list(range(100))


def test_in_background_raises_the_producers_failure_where_it_happened() -> None:
    def produce():
        yield 1
        yield 2
        raise KeyError("part-00003 is missing")

    got = []
    with pytest.raises(KeyError, match="part-00003"):
        for item in in_background(produce):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_producer() -> None:
    made = []

    def produce():
        for n in range(10_000):
            made.append(n)
            yield n

    reader = in_background(produce, depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    count = len(made)
    time.sleep(0.3)
    assert len(made) == count <= 7
    assert not [t for t in threading.enumerate() if t.name == "dagforge-read"]
