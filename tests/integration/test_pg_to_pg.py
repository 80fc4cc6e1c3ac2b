"""The Postgres → Postgres example, run through Airflow's dag.test() against two real servers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.conftest import SEED_DIR, Sandbox, table_fingerprint

pytestmark = pytest.mark.integration

DAG_ID = "sales_pg_to_pg"
TABLES = {"public.tb_trx_src": "reporting.tb_trx_dest", "public.customers": "reporting.customers"}


def assert_target_matches_source(box: Sandbox) -> None:
    source, target = box.connect("source"), box.connect("target")
    for source_table, target_table in TABLES.items():
        assert table_fingerprint(target, target_table) == table_fingerprint(source, source_table), target_table


def fingerprints(box: Sandbox) -> dict[str, tuple]:
    target = box.connect("target")
    return {t: table_fingerprint(target, t) for t in TABLES.values()}


def test_first_run_copies_every_row(sales_sandbox: Sandbox) -> None:
    result = sales_sandbox.run(DAG_ID)

    assert result.succeeded, result.task_states
    assert_target_matches_source(sales_sandbox)
    target = sales_sandbox.connect("target")
    assert target.execute("SELECT count(*) FROM reporting.tb_trx_dest").fetchone()[0] == 5000
    # created from the source's catalog: same types and the primary key
    types = target.execute(
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
        "WHERE table_schema = 'reporting' AND table_name = 'tb_trx_dest' ORDER BY ordinal_position"
    ).fetchall()
    assert types == [
        ("id", "integer", 32, 0),
        ("creation_date", "timestamp without time zone", None, None),
        ("sale_value", "numeric", 12, 2),
    ]
    pk = target.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'reporting.customers'::regclass AND i.indisprimary"
    ).fetchall()
    assert pk == [("customer_id",)]
    staging_left = target.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_dagforge\\_stg%'")
    assert staging_left.fetchone()[0] == 0


def test_incremental_run_applies_exactly_the_changes(sales_sandbox: Sandbox) -> None:
    assert sales_sandbox.run(DAG_ID).succeeded
    target = sales_sandbox.connect("target")
    before = dict(target.execute("SELECT customer_id, tier FROM reporting.customers").fetchall())
    sales_sandbox.connect("source").execute((SEED_DIR / "changes" / "sales.sql").read_text())

    result = sales_sandbox.run(DAG_ID)

    assert result.succeeded, result.task_states
    assert_target_matches_source(sales_sandbox)
    after = dict(target.execute("SELECT customer_id, tier FROM reporting.customers").fetchall())
    assert len(after) == len(before) + 20
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {3, 5, 8}
    state = target.execute(
        "SELECT rows_loaded, watermark FROM reporting._dagforge_state WHERE table_name = 'customers'"
    ).fetchone()
    # the window starts 10 minutes behind the watermark: the 23 changed rows plus customer 1000,
    # whose updated_at is the old watermark itself (the bound is inclusive); nothing older
    assert state[0] == 24
    max_source = sales_sandbox.connect("source").execute("SELECT max(updated_at)::text FROM customers").fetchone()[0]
    assert state[1] == max_source


def test_a_customer_deleted_at_the_source_is_deleted_and_nothing_else_moves(sales_sandbox: Sandbox) -> None:
    """customers has deletes: hard: a delete alone is something new (the key digest), and reconciles."""
    assert sales_sandbox.run(DAG_ID).succeeded
    sales_sandbox.connect("source").execute("DELETE FROM customers WHERE customer_id IN (10, 20)")

    result = sales_sandbox.run(DAG_ID)

    assert result.succeeded, result.task_states
    assert result.task_states["customers.publish_customers"] == "success"
    assert_target_matches_source(sales_sandbox)
    reconciliation = (
        sales_sandbox.connect("target")
        .execute("SELECT reconciliation FROM reporting._dagforge_state WHERE table_name = 'customers'")
        .fetchone()[0]
    )
    assert '"reconcile rows", "ok": true' in reconciliation and "998 live rows" in reconciliation


def test_nothing_new_skips_the_load(sales_sandbox: Sandbox) -> None:
    assert sales_sandbox.run(DAG_ID).succeeded
    before = fingerprints(sales_sandbox)

    result = sales_sandbox.run(DAG_ID)

    assert result.succeeded
    assert result.task_states["customers.check_customers"] == "success"
    assert result.task_states["customers.stage_customers"] == "skipped"
    assert result.task_states["customers.publish_customers"] == "skipped"
    assert result.task_states["tb_trx_src.publish_tb_trx_src"] == "success"  # full mode always reloads
    assert fingerprints(sales_sandbox) == before


def test_same_run_twice_changes_nothing(sales_sandbox: Sandbox) -> None:
    logical_date = datetime(2024, 6, 1, tzinfo=UTC)
    first = sales_sandbox.run(DAG_ID, logical_date=logical_date)
    after_first = fingerprints(sales_sandbox)
    state_first = sales_sandbox.connect("target").execute("SELECT * FROM reporting._dagforge_state ORDER BY 1, 2")
    state_first = [row[:5] for row in state_first.fetchall()]

    second = sales_sandbox.run(DAG_ID, logical_date=logical_date)

    assert first.succeeded and second.succeeded
    assert second.run_id == first.run_id
    assert fingerprints(sales_sandbox) == after_first
    state_second = sales_sandbox.connect("target").execute("SELECT * FROM reporting._dagforge_state ORDER BY 1, 2")
    assert [row[:5] for row in state_second.fetchall()] == state_first
    assert_target_matches_source(sales_sandbox)


FAIL_ONCE = """
CREATE SEQUENCE reporting.injected_failures;
CREATE FUNCTION reporting.fail_first_publish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('reporting.injected_failures') <= {failures} THEN
        RAISE EXCEPTION 'injected failure between staging and publish';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_publish BEFORE INSERT OR UPDATE OR DELETE ON reporting.{table}
    FOR EACH STATEMENT EXECUTE FUNCTION reporting.fail_first_publish();
"""


def _set_retries(box: Sandbox, retries: int) -> None:
    path = box.pipelines_dir / "sales_pg_to_pg.yml"
    path.write_text(path.read_text() + f"\nretries: {retries}\nretry_delay: 0s\n")


def test_failure_between_stage_and_publish_leaves_target_unchanged_then_retry_completes(
    sales_sandbox: Sandbox,
) -> None:
    _set_retries(sales_sandbox, 0)
    assert sales_sandbox.run(DAG_ID).succeeded
    sales_sandbox.connect("source").execute((SEED_DIR / "changes" / "sales.sql").read_text())
    target = sales_sandbox.connect("target")
    target.execute(FAIL_ONCE.format(failures=1, table="customers"))
    before = fingerprints(sales_sandbox)
    watermark_before = target.execute("SELECT watermark FROM reporting._dagforge_state WHERE table_name = 'customers'")
    watermark_before = watermark_before.fetchone()

    failed = sales_sandbox.run(DAG_ID)

    assert failed.state == "failed"
    assert failed.task_states["customers.stage_customers"] == "success"
    assert failed.task_states["customers.publish_customers"] == "failed"
    assert fingerprints(sales_sandbox)["reporting.customers"] == before["reporting.customers"]
    watermark_after = target.execute("SELECT watermark FROM reporting._dagforge_state WHERE table_name = 'customers'")
    assert watermark_after.fetchone() == watermark_before

    retried = sales_sandbox.run(DAG_ID)

    assert retried.succeeded, retried.task_states
    assert_target_matches_source(sales_sandbox)


def test_task_retry_inside_one_run_completes_the_load(sales_sandbox: Sandbox) -> None:
    _set_retries(sales_sandbox, 1)
    assert sales_sandbox.run(DAG_ID).succeeded
    sales_sandbox.connect("source").execute((SEED_DIR / "changes" / "sales.sql").read_text())
    sales_sandbox.connect("target").execute(FAIL_ONCE.format(failures=1, table="tb_trx_dest"))

    result = sales_sandbox.run(DAG_ID)

    assert result.succeeded, result.task_states
    assert (
        sales_sandbox.connect("target").execute("SELECT last_value FROM reporting.injected_failures").fetchone()[0] >= 2
    )  # the first publish failed, the retry went through
    assert_target_matches_source(sales_sandbox)
