"""Chunked full loads (``chunks:``): key ranges planned from the source at run time, each staged on
its own (concurrently, retried on its own), one publish; the target equals the source every time."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid

import psycopg
import pytest

from dagforge.contracts import Chunk, Staged, Window
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource, chunk_filter, consistent_read, nulls_checked
from dagforge.spec.model import LoadMode
from dagforge.sql import postgres as sql
from dagforge.transfer import postgres_load
from tests.conftest import run_concurrently
from tests.integration.conftest import Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

SKEWED = """
CREATE TABLE src.accounts (aid bigint PRIMARY KEY, bid int, abalance numeric(12, 2), filler text);
INSERT INTO src.accounts SELECT g, g % 10, g * 1.25, repeat('x', g % 40) FROM generate_series(1, 3000) g;
INSERT INTO src.accounts SELECT g, 7, -g, NULL FROM generate_series(1000000, 1000400) g;
"""
"""3,401 rows whose keys bunch at both ends of a wide range: equal-width chunks are uneven, some empty."""


def chunked(table: str = "accounts", **chunks) -> TableLoad:
    spec = {"by": "aid", **(chunks or {"count": 4})}
    return TableLoad("p", TableRef("src", "src", table), TableRef("dst", "dst", table), LoadMode.FULL, ("aid",),
                     chunks=spec)  # fmt: skip


@pytest.fixture
def box(sandbox: Sandbox) -> Sandbox:
    sandbox.connect("source").execute("CREATE SCHEMA src")
    sandbox.connect("source").execute(SKEWED)
    return sandbox


def plan(box: Sandbox, load: TableLoad) -> list[Window]:
    source = PostgresSource(box.connect("source"))
    window = postgres_load.decide_window(source, box.connect("target"), load)
    return source.split(load, window)


def stage_chunk(box: Sandbox, load: TableLoad, window: Window, run_id: str) -> Staged:
    """One chunk, as one mapped task instance runs it: its own connections."""
    staged, _ = postgres_load.stage(PostgresSource(box.connect("source")), box.connect("target"), load, window,
                                    load.staging_table(run_id))  # fmt: skip
    return staged


def stage_all(box: Sandbox, load: TableLoad, windows: list[Window], run_id: str) -> list[Staged]:
    """Every chunk at the same time, as workers run them."""
    results: dict[int, Staged] = {}
    lock = threading.Lock()

    def one(window: Window):
        def call() -> None:
            staged = stage_chunk(box, load, window, run_id)
            with lock:
                results[Chunk.of(window).index] = staged

        return call

    assert run_concurrently([one(w) for w in windows]) == []
    return [results[i] for i in sorted(results)]


def load_once(box: Sandbox, load: TableLoad, run_id: str | None = None):
    run_id = run_id or f"manual__{uuid.uuid4().hex[:8]}"
    parts = stage_all(box, load, plan(box, load), run_id)
    return postgres_load.publish(box.connect("target"), load, Staged.combine(parts), run_id)


def same(box: Sandbox, table: str = "accounts") -> None:
    assert table_fingerprint(box.connect("target"), f"dst.{table}") == table_fingerprint(
        box.connect("source"), f"src.{table}"
    )


def staging_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE '\\_dagforge\\_stg\\_%' ORDER BY 1")
    return [r[0] for r in rows]


def test_chunks_cover_the_table_once_and_the_publish_equals_the_source(box: Sandbox) -> None:
    load = chunked(count=4)
    windows = plan(box, load)
    assert [(c.low, c.high) for c in map(Chunk.of, windows)] == [
        (None, 250101), (250101, 500201), (500201, 750301), (750301, None)
    ]  # fmt: skip
    parts = stage_all(box, load, windows, "run-1")
    assert [p.rows for p in parts] == [3000, 0, 0, 401]  # skewed: uneven, and still every row once

    outcome = postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")

    assert outcome.applied and outcome.rows == 3401
    same(box)
    assert staging_tables(box.connect("target")) == []  # the parent and its chunks are gone
    (text,) = box.connect("target").execute("SELECT reconciliation FROM dst._dagforge_state").fetchone()
    results = {r["name"]: r for r in json.loads(text)["results"]}
    assert results["reconcile rows"]["ok"] and results["reconcile checksum"]["ok"], results  # summed over chunks


def test_a_chunk_run_again_replaces_only_itself(box: Sandbox) -> None:
    load = chunked(count=3)
    windows = plan(box, load)
    parts = stage_all(box, load, windows, "run-1")
    box.connect("source").execute("UPDATE src.accounts SET filler = 'retried' WHERE aid <= 10")
    parts[0] = stage_chunk(box, load, windows[0], "run-1")  # a retry after its commit: same chunk again

    postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")

    same(box)  # no chunk twice, and the retry's rows won
    filler = box.connect("target").execute("SELECT count(*) FROM dst.accounts WHERE filler = 'retried'").fetchone()
    assert filler == (10,)


def test_the_next_run_replaces_the_table_with_the_source_now(box: Sandbox) -> None:
    load = chunked(size=400_000)
    load_once(box, load)
    source = box.connect("source")
    source.execute("DELETE FROM src.accounts WHERE aid % 3 = 0")
    source.execute("UPDATE src.accounts SET abalance = 0 WHERE aid % 5 = 0")
    source.execute("INSERT INTO src.accounts SELECT g, 1, 1, 'new' FROM generate_series(2000000, 2000050) g")

    outcome = load_once(box, load)

    assert outcome.applied
    same(box)


def test_an_empty_table_is_one_chunk_that_empties_the_target(box: Sandbox) -> None:
    load = chunked(count=8)
    load_once(box, load)
    box.connect("source").execute("DELETE FROM src.accounts")

    windows = plan(box, load)
    assert [Chunk.of(w).describe() for w in windows] == ["every row"]
    outcome = load_once(box, load)

    assert outcome.applied
    assert box.connect("target").execute("SELECT count(*) FROM dst.accounts").fetchone() == (0,)


def test_a_publish_retried_after_its_commit_is_a_no_op(box: Sandbox) -> None:
    load = chunked(count=2)
    parts = stage_all(box, load, plan(box, load), "run-1")
    postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")
    box.connect("source").execute("DELETE FROM src.accounts WHERE aid < 100")

    again = postgres_load.publish(box.connect("target"), load, Staged.combine(list(reversed(parts))), "run-1")

    assert "published already" in again.reason
    assert box.connect("target").execute("SELECT count(*) FROM dst.accounts").fetchone() == (3401,)


def test_a_lost_chunk_is_staged_again_by_the_publish(box: Sandbox) -> None:
    load = chunked(count=4)
    windows = plan(box, load)
    parts = stage_all(box, load, windows, "run-1")
    staging, first = load.staging_table("run-1"), Chunk.of(windows[0])
    target = box.connect("target")
    target.execute(sql.delete_where("dst", staging, sql.chunk_where("aid", first.low, first.high)))  # its rows gone

    def restage() -> Staged:
        return postgres_load.restage_direct(PostgresSource(box.connect("source")), target, load,
                                            Staged.combine(parts))  # fmt: skip

    outcome = postgres_load.publish(target, load, Staged.combine(parts), "run-1", restage)

    assert outcome.applied
    same(box)


def test_the_chunks_staging_table_is_swapped_in_once_frozen(box: Sandbox, caplog) -> None:
    """The chunks write one logged staging table; the publish freezes it and swaps it in: no copy."""
    load = chunked(count=4)
    load_once(box, load)
    before = box.connect("target").execute("SELECT 'dst.accounts'::regclass::oid").fetchone()[0]
    box.connect("source").execute("UPDATE src.accounts SET bid = bid + 1 WHERE aid % 7 = 0")

    with caplog.at_level(logging.INFO, logger="dagforge.transfer.postgres_swap"):
        outcome = load_once(box, load)

    assert outcome.applied and "swapped the staging table in" in caplog.text
    assert "froze the chunks' 3401 staged rows" in caplog.text
    assert box.connect("target").execute("SELECT 'dst.accounts'::regclass::oid").fetchone()[0] != before
    same(box)


def test_a_snapshot_older_than_the_chunks_keeps_the_copy_and_still_sees_the_old_table(box: Sandbox, caplog) -> None:
    """A REPEATABLE READ reader that took its snapshot before the chunks committed would see a partial
    table if it were swapped in unfrozen: VACUUM cannot freeze rows that snapshot does not see, so
    the publish copies; the reader goes on seeing the old rows, and a later run swaps again."""
    load = chunked(count=3)
    load_once(box, load)
    reader = box.connect("target")
    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert reader.execute("SELECT count(*) FROM dst.accounts").fetchone() == (3401,)
    box.connect("source").execute("DELETE FROM src.accounts WHERE aid > 2000")

    with caplog.at_level(logging.INFO, logger="dagforge.transfer.postgres_swap"):
        outcome = load_once(box, load)

    assert outcome.applied and "the chunks' rows are not frozen" in caplog.text
    assert reader.execute("SELECT count(*) FROM dst.accounts").fetchone() == (3401,)  # its snapshot, whole
    reader.execute("ROLLBACK")
    same(box)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dagforge.transfer.postgres_swap"):
        load_once(box, load)
    assert "swapped the staging table in" in caplog.text


def test_two_attempts_of_one_chunk_at_once_leave_its_rows_once(box: Sandbox) -> None:
    """A zombie attempt and its retry stage the same chunk at the same time (one at a time, by lock):
    whichever commits last replaced the other's rows."""
    load = chunked(count=2)
    windows = plan(box, load)
    parts = stage_all(box, load, [windows[0], windows[0], windows[1]], "run-1")

    outcome = postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")

    assert outcome.applied
    same(box)


def test_an_older_chunked_snapshot_published_late_is_not_applied(box: Sandbox) -> None:
    load = chunked(count=2)
    old = stage_all(box, load, plan(box, load), "run-old")
    box.connect("source").execute("DELETE FROM src.accounts WHERE aid > 1000")
    load_once(box, load, "run-new")

    late = postgres_load.publish(box.connect("target"), load, Staged.combine(old), "run-old")

    assert not late.applied and "newer snapshot" in late.reason
    same(box)


def test_the_last_chunk_of_a_not_null_key_reads_its_range_only(box: Sandbox) -> None:
    """A primary key has no NULLs: the last chunk asks for none (``OR aid IS NULL`` made the planner scan
    the whole table in that chunk, twice: rows and figures), and the chunks still cover every row."""
    source = box.connect("source")
    source.execute("CREATE TABLE src.wide (aid int PRIMARY KEY, v text); "
                   "INSERT INTO src.wide SELECT g, repeat('v', 50) FROM generate_series(1, 100000) g")  # fmt: skip
    source.execute("ANALYZE src.wide")
    load = dataclasses.replace(chunked(count=4), source=TableRef("src", "src", "wide"),
                               destination=TableRef("dst", "dst", "wide"))  # fmt: skip
    windows = plan(box, load)
    last = Chunk.of(windows[-1])
    assert last.not_null and not last.takes_nulls and windows[-1].reason.endswith("(aid >= 75001)")
    with consistent_read(source):
        where = chunk_filter(nulls_checked(source, load, windows[-1]))
    assert where == '"aid" >= 75001'
    plan_text = "\n".join(r[0] for r in source.execute(f"EXPLAIN SELECT * FROM src.wide WHERE {where}"))
    assert "Index Scan" in plan_text, plan_text
    parts = stage_all(box, load, windows, "run-1")
    assert [p.rows for p in parts] == [25000] * 4
    postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")
    same(box, "wide")


def test_a_key_that_lost_not_null_after_the_split_still_loads_its_null_rows(box: Sandbox, caplog) -> None:
    """The check split by a NOT NULL column; before the last chunk is read, the column loses NOT NULL and
    rows with a NULL key arrive. The read sees the catalog as its snapshot does: it takes the NULLs again."""
    source = box.connect("source")
    source.execute("CREATE TABLE src.byk (id int PRIMARY KEY, k bigint NOT NULL, v text); "
                   "INSERT INTO src.byk SELECT g, g * 10, 'v' || g FROM generate_series(1, 500) g")  # fmt: skip
    load = TableLoad("p", TableRef("src", "src", "byk"), TableRef("dst", "dst", "byk"), LoadMode.FULL, ("id",),
                     chunks={"by": "k", "count": 3})  # fmt: skip
    windows = plan(box, load)
    assert Chunk.of(windows[-1]).not_null
    source.execute("ALTER TABLE src.byk ALTER COLUMN k DROP NOT NULL; "
                   "INSERT INTO src.byk VALUES (501, NULL, 'null key'), (502, NULL, NULL)")  # fmt: skip

    with caplog.at_level(logging.WARNING):
        parts = stage_all(box, load, windows, "run-1")
    outcome = postgres_load.publish(box.connect("target"), load, Staged.combine(parts), "run-1")

    assert outcome.applied and outcome.rows == 502 and parts[-1].rows == 169  # k 3340..5000 and the two NULLs
    assert "k is no longer NOT NULL: the last chunk reads its NULLs too" in caplog.text
    same(box, "byk")


def test_chunks_need_an_integer_column(box: Sandbox) -> None:
    box.connect("source").execute("CREATE TABLE src.codes (code text PRIMARY KEY)")
    load = TableLoad("p", TableRef("src", "src", "codes"), TableRef("dst", "dst", "codes"), LoadMode.FULL, ("code",),
                     chunks={"by": "code", "count": 2})  # fmt: skip

    with pytest.raises(TerminalError, match=r"chunks: splits by an integer column .* 'code' is text"):
        plan(box, load)


CHUNKED_PIPELINE = """
pipeline: big_accounts
source: {kind: postgres, connection: sales_src, schema: src}
destination: {kind: postgres, connection: sales_dwh, schema: dst}
tables:
  - name: accounts
    primary_key: [aid]
    mode: full
    chunks: {count: 3}
"""


def test_a_chunked_pipeline_runs_as_mapped_tasks_in_airflow(box: Sandbox) -> None:
    box.write_pipeline("big_accounts.yml", CHUNKED_PIPELINE)

    result = box.run("big_accounts")

    assert result.state == "success", result.task_states
    same(box)
    box.connect("source").execute("UPDATE src.accounts SET bid = -1 WHERE aid > 999999")
    assert box.run("big_accounts").state == "success"
    same(box)
