"""The direct COPY path's relay (dagforge/sources/pg_relay.py): a child process (psql, or the
Python reader) reads the source in the stage's own snapshot; every kind stages the same rows."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

from dagforge.sources import postgres as postgres_source
from dagforge.sources.pg_relay import RELAY_ENV, RelayUnavailable, relayed_copy
from dagforge.sources.postgres import PostgresSource, consistent_read
from dagforge.spec.model import LoadMode
from dagforge.sql import postgres as sql
from dagforge.stage.encodings import ENCODINGS
from dagforge.stage.formats import ParquetFormat
from dagforge.transfer import postgres_load
from tests.integration.conftest import Sandbox, table_fingerprint
from tests.integration.loads import Loads, make_load

pytestmark = pytest.mark.integration

TYPES = r"""
CREATE TYPE src.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE src.things (
    id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, amount numeric(30, 10), ratio double precision,
    note text, raw bytea, span interval, tags text[], doc jsonb, feeling src.mood, day date
);
INSERT INTO src.things
SELECT g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', g * 1.0000000001, g / 7.0,
       CASE g % 4 WHEN 0 THEN E'tab\there' WHEN 1 THEN E'line\nbreak \\ back' WHEN 2 THEN NULL ELSE 'ünï' END,
       decode(lpad(to_hex(g), 8, '0'), 'hex'), g * interval '1 minute 0.5 second', ARRAY['a', g::text, NULL],
       jsonb_build_object('g', g, 'half', g / 2.0), (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::src.mood,
       date '2000-02-29' + g
FROM generate_series(1, 5000) g;
"""


@pytest.fixture
def things(sandbox: Sandbox) -> Sandbox:
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src")
    source.execute(TYPES)
    return sandbox


@pytest.mark.parametrize("kind", ["psql", "python", "off"])
def test_every_relay_kind_stages_the_same_exact_rows(things: Sandbox, kind: str, monkeypatch, caplog) -> None:
    monkeypatch.setenv(RELAY_ENV, kind)
    load = make_load("things")

    with caplog.at_level(logging.INFO, logger="dagforge.sources.postgres"):
        Loads(things, "direct", None).run(load)

    assert "could not start" not in caplog.text  # the relay asked for ran: no silent fallback

    assert table_fingerprint(things.connect("target"), "dst.things") == table_fingerprint(
        things.connect("source"), "src.things"
    )


@pytest.mark.parametrize("kind", ["psql", "python"])
def test_the_child_reads_the_snapshot_of_the_stage_not_the_table_now(things: Sandbox, kind: str) -> None:
    source, writer = things.connect("source"), things.connect("source")
    with consistent_read(source):
        writer.execute("DELETE FROM src.things WHERE id > 100")  # committed after the snapshot was taken
        with relayed_copy(source, "COPY (SELECT id FROM src.things) TO STDOUT", sql.PIN_EXPORT_STYLES, kind) as blocks:
            lines = b"".join(blocks).splitlines()
    assert len(lines) == 5000


@pytest.mark.parametrize("kind", ["psql", "python"])
def test_a_child_that_cannot_start_the_read_says_why(things: Sandbox, kind: str) -> None:
    source = things.connect("source")  # autocommit, no transaction: the exported snapshot dies at once
    with (
        pytest.raises(RelayUnavailable, match="snapshot"),
        relayed_copy(source, "COPY src.things TO STDOUT", (), kind) as blocks,
    ):
        list(blocks)


@pytest.mark.parametrize("kind", ["psql", "python"])
def test_a_server_error_mid_copy_keeps_its_class_and_message(things: Sandbox, kind: str) -> None:
    """The child's failure after rows went out is the server's error (an export guard's refusal
    stays a 22P02, which the extract turns into its terminal error), not a bare OperationalError."""
    source = things.connect("source")
    failing = "COPY (SELECT CASE WHEN id > 4000 THEN ('x' || id)::int ELSE id END FROM src.things) TO STDOUT"
    with consistent_read(source), relayed_copy(source, failing, sql.PIN_EXPORT_STYLES, kind) as blocks:
        received = bytearray()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as raised:
            for block in blocks:
                received += block
    assert str(raised.value) == 'invalid input syntax for type integer: "x4001"'
    assert received.startswith(b"1\n2\n")


class _FailsAfterOneBlock(ParquetFormat):
    """The real Parquet part writer, failing once it has taken one block (a disk full, a bad value)."""

    taken = 0

    def write_parts(self, blocks, columns, folder, sink) -> None:
        for _ in blocks:
            self.taken += 1
            time.sleep(0.5)  # meanwhile the read-ahead thread fills its queue and waits on it
            raise OSError("no space left on device (the test's)")


@pytest.mark.parametrize("kind", ["psql", "python"])
def test_an_extract_whose_writer_fails_stops_the_read_ahead_and_the_child(
    sandbox: Sandbox, kind: str, monkeypatch, tmp_path
) -> None:
    """The extract reads the relay's blocks in a thread ahead of the part writer; the writer failing
    mid-table raises its own error, and neither that thread nor the child's read is left running."""
    monkeypatch.setenv(RELAY_ENV, kind)
    monkeypatch.setattr(postgres_source, "READ_AHEAD", 1)  # the thread waits on a full queue when the writer fails
    source = sandbox.connect("source")
    source.execute("CREATE SCHEMA src")
    source.execute("CREATE TABLE src.wide (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, note text)")
    source.execute("INSERT INTO src.wide SELECT g, now(), repeat(md5(g::text), 8) FROM generate_series(1, 200000) g")
    load = make_load("wide", LoadMode.FULL)
    window = postgres_load.decide_window(PostgresSource(source), sandbox.connect("target"), load)
    writer = _FailsAfterOneBlock(1_000_000, ENCODINGS["postgres"])

    with PostgresSource(source).read(load, window) as read:
        with pytest.raises(OSError, match="the test's"):
            read.write_rows(writer, tmp_path, lambda path, rows: None)
        reading = [t.name for t in threading.enumerate() if t.name == "dagforge-copy-read"]  # still in the read

    assert writer.taken == 1
    assert reading == []
    watcher = sandbox.connect("source")
    deadline = time.monotonic() + 10
    relays = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dagforge copy relay'"
    while watcher.execute(relays).fetchone()[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watcher.execute(relays).fetchone()[0] == 0
