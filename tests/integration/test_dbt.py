"""dbt models as tasks, for real: dbt (the repository's .venv-dbt) through Cosmos against the
warehouse Postgres, with the profile from the Airflow connection. Models are built, their tests
run; a model whose sources had nothing new is skipped; a failing dbt test fails its task."""

from __future__ import annotations

import logging
import shutil

import pytest

from tests.integration.conftest import REPO_ROOT, Sandbox

pytestmark = pytest.mark.integration

PROJECT = REPO_ROOT / "tests" / "golden" / "render" / "dbt_postgres" / "pipelines" / "dbt"
PIPELINE = """
pipeline: shop
retries: 0
source: {kind: postgres, connection: sales_src, schema: public}
destination: {kind: postgres, connection: sales_dwh, schema: reporting}
tables:
  - {name: orders, primary_key: [id], mode: incremental, cursor: updated_at}
  - {name: customers, primary_key: [id], mode: incremental, cursor: updated_at}
transform:
  dbt: {project: dbt/shop, schema: shop_analytics}
"""
SOURCE = """
CREATE TABLE customers (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric(10, 2),
                     updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers (id, name) SELECT g, 'customer ' || g FROM generate_series(1, 20) g;
INSERT INTO orders (id, customer_id, amount) SELECT g, 1 + g % 15, g * 2.5 FROM generate_series(1, 200) g;
"""
TOTALS = (
    "SELECT c.id, count(o.id), coalesce(sum(o.amount), 0) FROM {customers} c "
    "LEFT JOIN {orders} o ON o.customer_id = c.id GROUP BY c.id ORDER BY c.id"
)


@pytest.fixture
def shop(sandbox: Sandbox) -> Sandbox:
    sandbox.connect("source").execute(SOURCE)
    shutil.copytree(PROJECT, sandbox.pipelines_dir / "dbt")
    sandbox.write_pipeline("shop.yml", PIPELINE)
    return sandbox


def dbt_states(states: dict[str, str]) -> dict[str, str]:
    return {task: state for task, state in states.items() if task.startswith("dbt.")}


def test_models_build_after_the_loads_and_their_tests_pass(shop: Sandbox) -> None:
    result = shop.run("shop")

    assert result.state == "success", result.task_states
    assert set(dbt_states(result.task_states).values()) == {"success"}
    assert len(dbt_states(result.task_states)) == 5  # 3 models, 2 of them with tests
    views = TOTALS.format(customers="shop_analytics.stg_customers", orders="shop_analytics.stg_orders")
    built = shop.connect("target").execute(views.replace("c.id", "c.customer_id").replace("o.id", "o.order_id"))
    assert (
        built.fetchall()
        == shop.connect("source").execute(TOTALS.format(customers="customers", orders="orders")).fetchall()
    )
    totals = shop.connect("target").execute("SELECT count(*), sum(orders) FROM shop_analytics.customer_totals")
    assert totals.fetchone() == (20, 200)
    views = shop.connect("target").execute(
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'shop_analytics' ORDER BY 1"
    )
    assert views.fetchall() == [("customer_totals", "BASE TABLE"), ("stg_customers", "VIEW"), ("stg_orders", "VIEW")]


def test_nothing_new_skips_the_models_and_one_new_source_runs_what_reads_it(shop: Sandbox) -> None:
    assert shop.run("shop").state == "success"

    quiet = shop.run("shop")

    assert quiet.state == "success"
    assert set(dbt_states(quiet.task_states).values()) == {"skipped"}, quiet.task_states
    shop.connect("source").execute(
        "UPDATE customers SET name = 'renamed', updated_at = now() + interval '1 s' WHERE id = 3"
    )
    changed = shop.run("shop")
    states = dbt_states(changed.task_states)
    assert states["dbt.stg_customers_run"] == "success" and states["dbt.customer_totals_run"] == "success"
    assert states["dbt.stg_orders_run"] == "skipped" and states["dbt.stg_orders_test"] == "skipped"
    name = shop.connect("target").execute("SELECT name FROM shop_analytics.customer_totals WHERE customer_id = 3")
    assert name.fetchone() == ("renamed",)


def test_a_failing_dbt_test_fails_its_task_with_dbts_message(
    shop: Sandbox, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (shop.pipelines_dir / "dbt" / "shop" / "models" / "staging" / "names.yml").write_text(
        "version: 2\nmodels:\n  - name: stg_customers\n    columns:\n"
        "      - name: name\n        data_tests: [not_null]\n"
    )
    shop.connect("source").execute("INSERT INTO customers (id, name) VALUES (99, NULL)")

    with caplog.at_level(logging.INFO):
        result = shop.run("shop")

    states = dbt_states(result.task_states)
    assert result.state == "failed"
    assert states["dbt.stg_customers_test"] == "failed"
    assert states["dbt.customer_totals_run"] == "upstream_failed"
    assert states["dbt.stg_orders_test"] == "success"
    log = capfd.readouterr()
    said = log.out + log.err + caplog.text  # the task log reaches one or the other, by logging's set-up
    assert "dbt test --select stg_customers failed (exit code 1)" in said  # the task's error, dbt's words in it
    assert "Failure in test not_null_stg_customers_name" in said
