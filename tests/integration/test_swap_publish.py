"""A full load swaps its staged table in (docs/decisions/0013), on real servers: the table's oid
changes and its rows equal the source's; keys, indexes, grants, comments and options survive;
whatever depends on the table keeps the copy (DELETE + INSERT); readers see the old or the new
rows, never none and never an error; a publish killed or crashed before COMMIT leaves the old table
and a rerun swaps."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from dagforge.contracts import Staged
from dagforge.loadspec import TableLoad, TableRef
from dagforge.reconcile import ChecksFailed
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import MANIFEST, extract, load_staged, read_manifest, run_prefix
from dagforge.transfer import postgres_load, postgres_swap
from tests.conftest import wait_until
from tests.integration.conftest import Sandbox, table_fingerprint
from tests.integration.loads import POSTGRES_SHAPES, Loads, make_load

pytestmark = pytest.mark.integration

ROWS = 5000
SOURCE = f"""
CREATE SCHEMA src;
CREATE TABLE src.acc (id int PRIMARY KEY, bid int NOT NULL, balance numeric(12, 2), v text);
INSERT INTO src.acc SELECT g, g % 10, g * 1.5, md5(g::text) FROM generate_series(1, {ROWS}) g;
"""
CHANGE = f"""
UPDATE src.acc SET v = 'changed' WHERE id % 7 = 0;
DELETE FROM src.acc WHERE id % 11 = 0;
INSERT INTO src.acc SELECT g, g % 10, g, 'new' FROM generate_series({ROWS + 1}, {ROWS + 300}) g;
"""
NEW_ROWS = ROWS - ROWS // 11 + 300
SWAP_LOG = "dagforge.transfer.postgres_swap"


def full_load(**extra) -> TableLoad:
    return TableLoad("p", TableRef("s", "src", "acc"), TableRef("t", "dst", "acc"), LoadMode.FULL, ("id",), **extra)


def stage(box: Sandbox, load: TableLoad, run_id: str) -> Staged:
    source, target = box.connect("source"), box.connect("target")
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table(run_id))
    return staged


def publish(box: Sandbox, load: TableLoad, staged: Staged, run_id: str):
    return postgres_load.publish(box.connect("target"), load, staged, run_id)


def oid(conn: psycopg.Connection, relation: str = "dst.acc") -> int:
    return conn.execute("SELECT %s::regclass::oid", (relation,)).fetchone()[0]


def leftovers(conn: psycopg.Connection) -> list[str]:
    """Staging tables and swap indexes left in the destination schema."""
    query = (
        "SELECT relname FROM pg_class WHERE relnamespace = 'dst'::regnamespace "
        "AND (relname LIKE '\\_dagforge\\_stg\\_%%' OR relname LIKE '\\_dagforge\\_swap\\_%%')"
    )
    return [name for (name,) in conn.execute(query)]


@pytest.fixture
def loaded(sandbox: Sandbox) -> Sandbox:
    """src.acc loaded once into dst.acc (created by that first load: rows copied), then changed."""
    sandbox.connect("source").execute(SOURCE)
    load = full_load()
    publish(sandbox, load, stage(sandbox, load, "r0"), "r0")
    sandbox.connect("source").execute(CHANGE)
    return sandbox


@pytest.fixture
def role(sandbox: Sandbox) -> Iterator[str]:
    """A role of its own for this test (roles are the server's, not the database's)."""
    name = f"r_{uuid.uuid4().hex[:10]}"
    target = sandbox.connect("target")
    target.execute(f"CREATE ROLE {name}")
    yield name
    cleanup = psycopg.connect(sandbox.target_server.dsn(sandbox.database), autocommit=True)
    with cleanup:
        cleanup.execute(f"REASSIGN OWNED BY {name} TO CURRENT_USER; DROP OWNED BY {name}; DROP ROLE {name}")


def test_a_plain_full_table_is_swapped_in_and_equals_its_source(loaded: Sandbox, caplog) -> None:
    target, load = loaded.connect("target"), full_load()
    before = oid(target)
    with caplog.at_level(logging.INFO, logger=SWAP_LOG):
        staged = stage(loaded, load, "r1")
        persistence = "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass"
        assert target.execute(persistence, (f"dst.{staged.staging_table}",)).fetchone()[0] == "p"
        outcome = publish(loaded, load, staged, "r1")

    assert outcome.applied and outcome.rows == NEW_ROWS and "swapped in" in outcome.reason
    assert "dst.acc: swapped the staging table in" in caplog.text
    assert oid(target) != before
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")
    assert leftovers(target) == []
    state = target.execute("SELECT rows_loaded, run_id, reconciliation FROM dst._dagforge_state").fetchone()
    assert state[:2] == (NEW_ROWS, "r1") and '"ok": true' in state[2] and '"ok": false' not in state[2]
    swapped = oid(target)
    again = publish(loaded, load, staged, "r1")  # a retry after the COMMIT
    assert "published already by run r1" in again.reason and oid(target) == swapped


@pytest.fixture
def beside(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every staging table measured on a second connection beside the index builds (as the large
    ones are); lists the thread each measurement ran in."""
    monkeypatch.setattr(postgres_swap, "TWIN_MIN_ROWS", 0)
    threads: list[str] = []
    real = postgres_swap.twin.alongside

    def recorded(conn, measure, *args, **kwargs):
        def measured(twin):
            threads.append(threading.current_thread().name)
            return measure(twin)

        return real(conn, measured, *args, **kwargs)

    monkeypatch.setattr(postgres_swap.twin, "alongside", recorded)
    return threads


def test_a_large_staging_is_measured_on_a_second_connection_while_its_indexes_build(
    loaded: Sandbox, beside: list[str]
) -> None:
    target, load = loaded.connect("target"), full_load()
    outcome = publish(loaded, load, stage(loaded, load, "r1"), "r1")

    assert "swapped in" in outcome.reason and beside == ["dagforge-twin"]
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")
    state = target.execute("SELECT reconciliation FROM dst._dagforge_state").fetchone()[0]
    assert '"ok": true' in state and '"ok": false' not in state
    assert leftovers(target) == []


def test_a_changed_staging_fails_the_checksum_measured_beside_the_index_builds(
    loaded: Sandbox, beside: list[str]
) -> None:
    target, load = loaded.connect("target"), full_load()
    staged = stage(loaded, load, "r1")
    target.execute(f"UPDATE dst.{staged.staging_table} SET v = 'meddled' WHERE id = 12")

    with pytest.raises(ChecksFailed, match="the values changed between the source and the staging table"):
        publish(loaded, load, staged, "r1")
    assert beside == ["dagforge-twin"]


def table_shape(conn: psycopg.Connection) -> dict[str, object]:
    """Everything the swap must keep, by name (not by oid)."""
    queries = {
        "indexes": "SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid::regclass::text) "
        "FROM pg_index WHERE indrelid = 'dst.acc'::regclass",
        "constraints": "SELECT array_agg(conname || ' ' || contype::text || ' ' || pg_get_constraintdef(oid) "
        "ORDER BY conname) FROM pg_constraint WHERE conrelid = 'dst.acc'::regclass",
        "table": "SELECT ARRAY[obj_description(oid, 'pg_class'), reloptions::text, relpersistence::text, "
        "(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(relacl) a)::text] "
        "FROM pg_class WHERE oid = 'dst.acc'::regclass",
        "columns": "SELECT array_agg(ROW(attname, attnotnull, attstattarget, attoptions, "
        "(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(attacl) a), "
        "col_description(attrelid, attnum))::text ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'dst.acc'::regclass AND attnum > 0 AND NOT attisdropped",
    }
    return {name: conn.execute(query).fetchone()[0] for name, query in queries.items()}


def test_the_swap_keeps_keys_indexes_grants_comments_and_options(loaded: Sandbox, role: str) -> None:
    target, load = loaded.connect("target"), full_load()
    target.execute(
        f"""
        CREATE INDEX acc_bid ON dst.acc (bid) WHERE balance > 10;
        CREATE INDEX "odd ""name"" x" ON dst.acc (lower(v)) WITH (fillfactor = 70);
        ALTER TABLE dst.acc ADD CONSTRAINT acc_bid_v UNIQUE (bid, id) DEFERRABLE INITIALLY DEFERRED;
        ALTER TABLE dst.acc ADD CONSTRAINT acc_balance_positive CHECK (balance >= 0);
        ALTER TABLE dst.acc SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05);
        ALTER TABLE dst.acc ALTER COLUMN v SET STATISTICS 500, ALTER COLUMN bid SET (n_distinct = 10);
        COMMENT ON TABLE dst.acc IS 'accounts, it''s loaded by dagforge';
        COMMENT ON COLUMN dst.acc.balance IS 'in EUR';
        GRANT SELECT ON dst.acc TO {role};
        GRANT UPDATE (v) ON dst.acc TO {role} WITH GRANT OPTION;
        GRANT SELECT ON dst.acc TO PUBLIC;
        """
    )
    shape, before = table_shape(target), oid(target)
    assert "acc_pkey p PRIMARY KEY (id)" in shape["constraints"]

    outcome = publish(loaded, load, stage(loaded, load, "r1"), "r1")

    assert "swapped in" in outcome.reason and oid(target) != before
    assert table_shape(target) == shape
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")
    analyzed = "SELECT count(*) FROM pg_stats WHERE schemaname = 'dst' AND tablename = 'acc'"
    assert target.execute(analyzed).fetchone()[0] == 4
    assert leftovers(target) == []


@dataclass(frozen=True)
class Dependent:
    """Something in the destination that keeps a full load on the copy (DELETE + INSERT)."""

    target_sql: str
    reason: str
    staging_sql: str = ""
    source_sql: str = ""


DEPENDENTS = {
    "view": Dependent("CREATE VIEW dst.acc_count AS SELECT count(*) AS n FROM dst.acc", "view dst.acc_count"),
    "materialized view": Dependent(
        "CREATE MATERIALIZED VIEW dst.acc_m AS SELECT id FROM dst.acc", "materialized view dst.acc_m"
    ),
    "rule": Dependent(
        "CREATE TABLE dst.audit (id int); CREATE RULE keep AS ON INSERT TO dst.acc DO ALSO INSERT INTO dst.audit "
        "VALUES (NEW.id)",
        "rule keep on table dst.acc depends on it",
    ),
    "foreign key to it": Dependent(
        "CREATE TABLE dst.child (acc int REFERENCES dst.acc)", "constraint child_acc_fkey on table dst.child"
    ),
    "foreign key from it": Dependent(
        "CREATE TABLE dst.branch (bid int PRIMARY KEY); INSERT INTO dst.branch SELECT generate_series(0, 9); "
        "ALTER TABLE dst.acc ADD FOREIGN KEY (bid) REFERENCES dst.branch",
        "constraint acc_bid_fkey on table dst.acc",
    ),
    "trigger": Dependent(
        "CREATE FUNCTION dst.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
        "CREATE TRIGGER noop BEFORE INSERT ON dst.acc FOR EACH ROW EXECUTE FUNCTION dst.noop()",
        "trigger noop on table dst.acc",
    ),
    "policy": Dependent(
        "ALTER TABLE dst.acc ENABLE ROW LEVEL SECURITY; CREATE POLICY mine ON dst.acc USING (true)",
        "row-level security",
    ),
    "default": Dependent("ALTER TABLE dst.acc ALTER COLUMN v SET DEFAULT 'x'", "default value for column v"),
    "identity": Dependent(
        "ALTER TABLE dst.acc ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY", "sequence dst.acc_id_seq"
    ),
    "inheritance child": Dependent("CREATE TABLE dst.acc_more () INHERITS (dst.acc)", "dst.acc_more inherits from it"),
    "inheritance parent": Dependent(
        "CREATE TABLE dst.base (id int, bid int NOT NULL, balance numeric(12, 2), v text); "
        "ALTER TABLE dst.acc INHERIT dst.base",
        "it inherits from dst.base",
    ),
    "publication": Dependent("CREATE PUBLICATION acc_pub FOR TABLE dst.acc", "it is in publication acc_pub"),
    "staging with children": Dependent(
        "", "the staging table has inheritance children", staging_sql="CREATE TABLE dst.chunk () INHERITS (dst.{})"
    ),
    "schema drift": Dependent("", "schema drift", source_sql="ALTER TABLE src.acc ADD COLUMN extra int"),
    "deleted_flag": Dependent("", "deleted_flag 'gone' filters", source_sql="ALTER TABLE src.acc ADD COLUMN gone bool"),
}


@pytest.mark.parametrize("kind", DEPENDENTS)
def test_what_depends_on_the_table_keeps_the_copy(loaded: Sandbox, kind: str, caplog) -> None:
    dependent, target = DEPENDENTS[kind], loaded.connect("target")
    load = full_load(deleted_flag="gone") if kind == "deleted_flag" else full_load()
    for conn, statements in ((target, dependent.target_sql), (loaded.connect("source"), dependent.source_sql)):
        if statements:
            conn.execute(statements)
    if kind == "deleted_flag":  # the column the flag is (no row is flagged), in the table too: no drift
        target.execute("ALTER TABLE dst.acc ADD COLUMN gone bool")
    before = oid(target)

    with caplog.at_level(logging.INFO, logger=SWAP_LOG):
        staged = stage(loaded, load, "r1")
        if dependent.staging_sql:
            target.execute(dependent.staging_sql.format(staged.staging_table))
        outcome = publish(loaded, load, staged, "r1")

    assert outcome.applied and "swapped in" not in outcome.reason
    assert oid(target) == before
    assert "not swapping the staging table in" in caplog.text and dependent.reason in caplog.text
    source_rows = loaded.connect("source").execute("SELECT count(*) FROM src.acc").fetchone()[0]
    assert target.execute("SELECT count(*) FROM ONLY dst.acc").fetchone()[0] == source_rows
    if kind == "view":
        assert target.execute("SELECT n FROM dst.acc_count").fetchone()[0] == source_rows


def test_a_table_another_role_owns_keeps_the_copy(loaded: Sandbox, role: str, caplog) -> None:
    target, load = loaded.connect("target"), full_load()
    target.execute(f"ALTER TABLE dst.acc OWNER TO {role}")
    before = oid(target)

    with caplog.at_level(logging.INFO, logger=SWAP_LOG):
        outcome = publish(loaded, load, stage(loaded, load, "r1"), "r1")

    assert outcome.applied and "swapped in" not in outcome.reason and oid(target) == before
    assert f"it is owned by {role}, not by postgres" in caplog.text
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")


def test_new_rows_that_break_a_unique_index_fail_as_the_copy_does(loaded: Sandbox, caplog) -> None:
    """The index built on the staging table refuses the duplicates: the publish copies instead, and
    the copy fails naming the table's own index; nothing changed."""
    target, load = loaded.connect("target"), full_load()
    target.execute("CREATE UNIQUE INDEX acc_v ON dst.acc (v)")  # the source now has duplicates ('changed')
    before = (oid(target), table_fingerprint(target, "dst.acc"))

    with caplog.at_level(logging.INFO, logger=SWAP_LOG), pytest.raises(psycopg.errors.UniqueViolation, match="acc_v"):
        publish(loaded, load, stage(loaded, load, "r1"), "r1")

    assert "the swap gave way (could not create unique index" in caplog.text
    assert (oid(target), table_fingerprint(target, "dst.acc")) == before


def test_a_concurrent_reader_sees_the_old_or_the_new_rows_never_none(loaded: Sandbox) -> None:
    """A reader counting in a loop (READ COMMITTED), and one whose snapshot is older than the stage
    (REPEATABLE READ, not touching the table before the swap): the frozen rows are what it sees."""
    target, load = loaded.connect("target"), full_load()
    old_rows, before = target.execute("SELECT count(*) FROM dst.acc").fetchone()[0], oid(target)
    old_snapshot = psycopg.connect(loaded.target_server.dsn(loaded.database))
    old_snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    old_snapshot.execute("SELECT 1 FROM pg_class LIMIT 1")  # its snapshot is taken here
    seen: set[object] = set()
    stop = threading.Event()

    def count_in_a_loop() -> None:
        with psycopg.connect(loaded.target_server.dsn(loaded.database), autocommit=True) as reader:
            while not stop.is_set():
                try:
                    seen.add(reader.execute("SELECT count(*) FROM dst.acc").fetchone()[0])
                except psycopg.Error as exc:
                    seen.add(repr(exc))

    thread = threading.Thread(target=count_in_a_loop)
    thread.start()
    try:
        wait_until(lambda: seen, 10, "the reader's first count")
        outcome = publish(loaded, load, stage(loaded, load, "r1"), "r1")
        wait_until(lambda: NEW_ROWS in seen, 10, "the reader to see the new rows")
    finally:
        stop.set()
        thread.join(10)

    assert "swapped in" in outcome.reason and oid(target) != before
    assert seen == {old_rows, NEW_ROWS}
    assert old_snapshot.execute("SELECT count(*) FROM dst.acc").fetchone()[0] == NEW_ROWS
    old_snapshot.close()


def test_a_reader_holding_the_table_makes_the_publish_copy(
    loaded: Sandbox, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that read the table before the publish holds it: the swap waits for its lock at
    most SWAP_LOCK_TIMEOUT, then the publish copies; the reader keeps its rows throughout."""
    monkeypatch.setattr(postgres_swap, "SWAP_LOCK_TIMEOUT", "300ms")
    target, load = loaded.connect("target"), full_load()
    before = oid(target)
    reader = psycopg.connect(loaded.target_server.dsn(loaded.database))
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    old_rows = reader.execute("SELECT count(*) FROM dst.acc").fetchone()[0]

    with caplog.at_level(logging.INFO, logger=SWAP_LOG):
        outcome = publish(loaded, load, stage(loaded, load, "r1"), "r1")

    assert outcome.applied and "swapped in" not in outcome.reason and oid(target) == before
    assert "the swap gave way (canceling statement due to lock timeout)" in caplog.text
    assert reader.execute("SELECT count(*) FROM dst.acc").fetchone()[0] == old_rows
    reader.close()
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")


@dataclass
class HeldPublish:
    """A publish in a thread, waiting for its ACCESS EXCLUSIVE lock at the swap (the staging table
    rebuilt, indexes and ANALYZE, in its open transaction) because ``holder`` reads the table."""

    holder: psycopg.Connection
    thread: threading.Thread
    outcome: list[object]
    pid: int = 0


def hold_publish_at_the_swap(box: Sandbox, load: TableLoad, staged: Staged) -> HeldPublish:
    holder = psycopg.connect(box.target_server.dsn(box.database))
    holder.execute("SELECT count(*) FROM dst.acc")  # ACCESS SHARE until its transaction ends
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(publish(box, load, staged, "r1"))
        except psycopg.Error as exc:
            outcome.append(exc)

    held = HeldPublish(holder, threading.Thread(target=run), outcome)
    held.thread.start()
    waiting = (
        "SELECT l.pid FROM pg_locks l WHERE l.relation = 'dst.acc'::regclass AND NOT l.granted "
        "AND l.mode = 'AccessExclusiveLock'"
    )

    def publisher_waits() -> int | None:
        with psycopg.connect(box.target_server.dsn(box.database), autocommit=True) as conn:
            row = conn.execute(waiting).fetchone()
            return row[0] if row else None

    held.pid = wait_until(publisher_waits, 30, "the publish to wait for its swap lock", every=0.05)
    return held


def assert_old_table_intact(box: Sandbox, before: tuple, staged: Staged) -> None:
    target = box.connect("target")
    assert (oid(target), table_fingerprint(target, "dst.acc")) == before
    assert target.execute("SELECT run_id FROM dst._dagforge_state").fetchone()[0] == "r0"
    assert target.execute("SELECT count(*) FROM dst._dagforge_runs WHERE run_id = 'r1'").fetchone()[0] == 0
    assert leftovers(target) == [staged.staging_table]  # no swap index: they went with the transaction


def test_a_publish_killed_before_commit_leaves_the_old_table_and_a_rerun_swaps(
    loaded: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_swap, "SWAP_LOCK_TIMEOUT", "60s")
    target, load = loaded.connect("target"), full_load()
    before = (oid(target), table_fingerprint(target, "dst.acc"))
    staged = stage(loaded, load, "r1")
    held = hold_publish_at_the_swap(loaded, load, staged)

    assert target.execute("SELECT pg_terminate_backend(%s)", (held.pid,)).fetchone()[0]
    held.thread.join(30)
    assert len(held.outcome) == 1 and isinstance(held.outcome[0], psycopg.OperationalError)
    held.holder.close()

    assert_old_table_intact(loaded, before, staged)
    assert "swapped in" in publish(loaded, load, staged, "r1").reason
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")
    assert leftovers(target) == []


def test_a_server_crash_during_the_swap_leaves_the_old_table_and_a_rerun_swaps(
    loaded: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pg_ctl stop -m immediate`` while the publish waits at the swap: crash recovery keeps the old
    table, and the staging table too (logged, committed by the stage); the rerun swaps it in."""
    monkeypatch.setattr(postgres_swap, "SWAP_LOCK_TIMEOUT", "60s")
    target, load = loaded.connect("target"), full_load()
    before = (oid(target), table_fingerprint(target, "dst.acc"))
    staged = stage(loaded, load, "r1")
    time.sleep(1)  # the servers run with synchronous_commit=off: let the stage's commit reach the WAL
    held = hold_publish_at_the_swap(loaded, load, staged)

    loaded.target_server.crash_and_restart()
    loaded.connections.clear()  # they died with the server
    held.thread.join(30)
    assert len(held.outcome) == 1 and isinstance(held.outcome[0], psycopg.OperationalError)

    assert_old_table_intact(loaded, before, staged)
    assert "swapped in" in publish(loaded, load, staged, "r1").reason
    target = loaded.connect("target")
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(loaded.connect("source"), "src.acc")
    assert leftovers(target) == []


@pytest.mark.parametrize("loads", ["parquet", "csv", "jsonl"], indirect=True)
def test_a_full_load_through_object_storage_is_swapped_in_too(loads: Loads) -> None:
    """The load step writes its staging logged and frozen as the direct stage does (0013)."""
    source = loads.box.connect("source")
    source.execute("CREATE TABLE src.acc (id int PRIMARY KEY, v text)")
    source.execute("INSERT INTO src.acc SELECT g, 'v' || g FROM generate_series(1, 500) g")
    load = make_load("acc", LoadMode.FULL)
    loads.run(load)  # creates the table
    source.execute("DELETE FROM src.acc WHERE id > 400")

    outcome = loads.run(load)

    assert outcome is not None and "swapped in" in outcome.reason, outcome
    assert table_fingerprint(loads.box.connect("target"), "dst.acc") == table_fingerprint(source, "src.acc")


@pytest.mark.parametrize("loads", POSTGRES_SHAPES, indirect=True)
def test_every_shape_stages_the_sources_not_nulls_so_the_swap_scans_for_none(loads: Loads) -> None:
    """The staging table declares NOT NULL where the source does (through object storage the
    manifest carries it), so the swap's `SET NOT NULL` (a scan of every staged row) is not needed;
    a column the source leaves nullable stays nullable, and the swap still gives the table's own."""
    source = loads.box.connect("source")
    source.execute("CREATE TABLE src.acc (id int PRIMARY KEY, bid int NOT NULL, v text)")
    source.execute("INSERT INTO src.acc SELECT g, g % 10, 'v' || g FROM generate_series(1, 500) g")
    load = make_load("acc", LoadMode.FULL)
    loads.run(load)  # creates the table
    target = loads.box.connect("target")
    target.execute("ALTER TABLE dst.acc ALTER COLUMN v SET NOT NULL")  # the table's own, not the source's

    staged = loads.stage(load, "r1")
    not_null = "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
    staging = dict(target.execute(not_null, (f"dst.{staged.staging_table}",)).fetchall())
    outcome = loads.publish(load, staged, "r1")

    assert staging == {"id": True, "bid": True, "v": False}
    assert "swapped in" in outcome.reason, outcome
    assert dict(target.execute(not_null, ("dst.acc",)).fetchall()) == {"id": True, "bid": True, "v": True}
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(source, "src.acc")


@pytest.mark.parametrize("loads", ["parquet", "csv", "jsonl"], indirect=True)
def test_a_null_in_a_column_the_manifest_calls_not_null_loads_without_the_not_null(loads: Loads, caplog) -> None:
    """A manifest whose source read its catalog (NOT NULL) just before a DROP NOT NULL and a NULL
    that its snapshot then saw: the load puts the rows into a staging table without NOT NULLs, says
    so, and the publish equals the source."""
    source = loads.box.connect("source")
    source.execute("CREATE TABLE src.acc (id int PRIMARY KEY, v text)")
    source.execute("INSERT INTO src.acc SELECT g, CASE WHEN g % 50 = 0 THEN NULL ELSE 'v' || g END "
                   "FROM generate_series(1, 500) g")  # fmt: skip
    load = make_load("acc", LoadMode.FULL)
    loads.run(load)  # creates the table
    source.execute("UPDATE src.acc SET v = 'changed' WHERE id % 7 = 0")
    target, run_id = loads.box.connect("target"), "r1"
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    prefix = run_prefix("raw", load, run_id)
    extract(PostgresSource(source), load, window, loads.store, prefix, loads.shape, run_id)
    manifest = read_manifest(loads.store, prefix)
    manifest.columns = [{**column, "not_null": True} for column in manifest.columns]
    loads.store.put_text(prefix + MANIFEST, manifest.to_json())

    with caplog.at_level(logging.WARNING, logger="dagforge.stage.extract_load"):
        staged = load_staged(target, load, loads.store, prefix, load.staging_table(run_id))
    outcome = loads.publish(load, staged, run_id)

    assert "which the source declared NOT NULL when it was read" in caplog.text
    assert 'null value in column "v"' in caplog.text
    assert outcome.applied, outcome
    assert table_fingerprint(target, "dst.acc") == table_fingerprint(source, "src.acc")
