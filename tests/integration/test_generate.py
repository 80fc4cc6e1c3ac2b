"""Generate → Postgres against a real server: growth, contiguous ids, foreign keys, seeds, atomicity."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from dagforge.generate.postgres_writer import generate_run
from dagforge.generate.tables import GeneratedTable
from tests.integration.conftest import REPO_ROOT, Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

TABLES = [
    {
        "name": "member",
        "rows_per_run": 7,
        "unique": ["email"],
        "columns": {
            "member_id": {"sequence": True},
            "name": {"faker": "name"},
            "email": {"faker": "email"},
            "phone": {"faker": "phone_number", "null_fraction": 0.5},
        },
    },
    {
        "name": "book",
        "rows_per_run": {"min": 3, "max": 6},
        "columns": {
            "book_id": {"sequence": {"start": 100}},
            "title": {"faker": "catch_phrase"},
            "genre": {"choice": ["a", "b"], "weights": [1, 3]},
            "price": {"range": {"min": 1, "max": 20, "decimals": 2}},
        },
    },
    {
        "name": "rent",
        "rows_per_run": 11,
        "columns": {
            "rent_id": {"sequence": True},
            "member_id": {"reference": "member.member_id"},
            "book_id": {"reference": "book.book_id"},
            "rent_date": {"range": {"min": "2024-01-01", "max": "2024-12-31"}},
            "return_date": {"template": "{{ rent_date + days(randint(0, 20)) }}", "type": "date"},
            "note": {"template": "{{ 'late' if (return_date - rent_date).days > 14 else 'ok' }}"},
        },
    },
]


def run(conn: psycopg.Connection, schema: str = "lib", seed: int | None = 5) -> dict[str, int]:
    return generate_run(conn, schema, [GeneratedTable.from_dict(t) for t in TABLES], locale="en_US", seed=seed)


def test_three_runs_grow_tables_with_contiguous_ids_and_valid_references(sandbox: Sandbox) -> None:
    conn = sandbox.connect("target")
    counts = [run(conn, seed=None) for _ in range(3)]

    assert [c["member"] for c in counts] == [7, 7, 7]
    assert [c["rent"] for c in counts] == [11, 11, 11]
    assert all(3 <= c["book"] <= 6 for c in counts)
    for table, key, start in (("member", "member_id", 1), ("book", "book_id", 100), ("rent", "rent_id", 1)):
        total, low, high, distinct = conn.execute(
            f"SELECT count(*), min({key}), max({key}), count(DISTINCT {key}) FROM lib.{table}"
        ).fetchone()
        assert total == sum(c[table] for c in counts)
        assert (low, high, distinct) == (start, start + total - 1, total)
    orphans = conn.execute(
        "SELECT count(*) FROM lib.rent r LEFT JOIN lib.member m USING (member_id) "
        "LEFT JOIN lib.book b USING (book_id) WHERE m.member_id IS NULL OR b.book_id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    fks = conn.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' ORDER BY 2"
    ).fetchall()
    assert fks == [("lib.rent", "lib.book"), ("lib.rent", "lib.member")]
    assert conn.execute("SELECT count(*) FROM lib.rent WHERE return_date < rent_date").fetchone()[0] == 0
    assert conn.execute("SELECT count(DISTINCT email) = count(*) FROM lib.member").fetchone()[0]


def test_derived_and_explicit_types(sandbox: Sandbox) -> None:
    conn = sandbox.connect("target")
    run(conn)
    types = dict(
        conn.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'lib'"
        ).fetchall()
    )
    assert types["member.member_id"] == "bigint"
    assert types["member.name"] == "text"
    assert types["book.price"] == "numeric"
    assert types["rent.rent_date"] == "date"
    assert types["rent.return_date"] == "date"
    assert types["rent.member_id"] == "bigint"


def test_same_seed_same_state_same_rows(sandbox: Sandbox) -> None:
    conn = sandbox.connect("target")
    run(conn, schema="first")
    run(conn, schema="second")
    for table in ("member", "book", "rent"):
        assert table_fingerprint(conn, f"first.{table}") == table_fingerprint(conn, f"second.{table}")
    run(conn, schema="first")
    first_new = conn.execute("SELECT name FROM first.member WHERE member_id > 7 ORDER BY 1").fetchall()
    first_old = conn.execute("SELECT name FROM first.member WHERE member_id <= 7 ORDER BY 1").fetchall()
    assert first_new != first_old  # the next run starts from another state, so it makes other rows


def test_a_failed_run_leaves_nothing_behind(sandbox: Sandbox) -> None:
    conn = sandbox.connect("target")
    run(conn)
    before = {t: table_fingerprint(conn, f"lib.{t}") for t in ("member", "book", "rent")}
    conn.execute(
        "CREATE FUNCTION lib.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;"
        "CREATE TRIGGER boom BEFORE INSERT ON lib.rent FOR EACH STATEMENT EXECUTE FUNCTION lib.boom()"
    )
    with pytest.raises(psycopg.errors.RaiseException, match="disk full"):
        run(conn)
    assert {t: table_fingerprint(conn, f"lib.{t}") for t in ("member", "book", "rent")} == before


def test_unique_columns_stay_unique_across_runs(sandbox: Sandbox) -> None:
    conn = sandbox.connect("target")
    tables = [
        {
            "name": "code",
            "rows_per_run": 4,
            "unique": ["c"],
            "columns": {"id": {"sequence": True}, "c": {"choice": list("abcdefghij")}},
        }
    ]
    for _ in range(2):
        generate_run(conn, "u", [GeneratedTable.from_dict(t) for t in tables], seed=1)
    values = [r[0] for r in conn.execute("SELECT c FROM u.code")]
    assert len(values) == 8 == len(set(values))


def test_example_pipeline_runs_through_airflow_and_feeds_the_pg_example(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LIBRARY_DB", sandbox.source_server.airflow_conn_uri(sandbox.database))
    for name in ("defaults.yml", "library_generate.yml", "library_to_dwh.yml"):
        shutil.copy(REPO_ROOT / "pipelines" / name, sandbox.pipelines_dir / name)
    monkeypatch.setenv("AIRFLOW_CONN_LIBRARY_DWH", sandbox.target_server.airflow_conn_uri(sandbox.database))

    first = sandbox.run("library_generate")
    second = sandbox.run("library_generate")
    moved = sandbox.run("library_to_dwh")

    assert first.succeeded and second.succeeded and moved.succeeded, (first, second, moved)
    source, target = sandbox.connect("source"), sandbox.connect("target")
    assert source.execute("SELECT count(*) FROM library.books_table").fetchone()[0] == 20
    for table in ("library_member", "books_table", "rent_table"):
        assert table_fingerprint(target, f"library.{table}") == table_fingerprint(source, f"library.{table}")
