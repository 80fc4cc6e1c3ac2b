"""End to end, the way users meet dagforge: a real Airflow (standalone: scheduler, DAG processor,
API server, workers) parses dags/pipelines.py, lists one DAG per YAML file, runs one triggered
through the REST API, shows a broken file as a stand-in, and renders it all in the UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.devservices.airflow import LocalAirflow
from dagforge.devservices.stack import LocalStack
from dagforge.loadspec import table_loads
from tests.e2e.conftest import dags, wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(e.dag_id for e in build_catalog([REPO / "pipelines"]))
CHROMIUM = "/usr/bin/chromium"


def test_every_example_is_listed_without_import_errors(airflow: LocalAirflow, token: str) -> None:
    listed = wait_for(lambda: set(EXAMPLES) <= set(dags(airflow, token)) and dags(airflow, token), 120, "the DAGs")
    assert airflow.api("GET", "/api/v2/importErrors", token)["total_entries"] == 0
    sales = listed["sales_pg_to_pg"]
    assert sales["owners"] == ["data-eng"]
    assert {"dagforge", "postgres_to_postgres", "destination:postgres", "sales"} <= {t["name"] for t in sales["tags"]}
    details = airflow.api("GET", "/api/v2/dags/sales_pg_to_pg/details", token)
    assert "Defined in `pipelines/sales_pg_to_pg.yml`" in details["doc_md"]
    assert "| `customers` | `customers` | incremental | updated_at | 10m | customer_id |" in details["doc_md"]
    tasks = {t["task_id"] for t in airflow.api("GET", "/api/v2/dags/sales_pg_to_pg/tasks", token)["tasks"]}
    assert {"customers.check_customers", "customers.stage_customers", "customers.publish_customers"} <= tasks


@pytest.mark.parametrize("dag_id", ["sales_pg_to_pg", "olist_to_bigquery"])
def test_a_run_triggered_through_the_api_loads_the_target(
    airflow: LocalAirflow, token: str, stack: LocalStack, dag_id: str
) -> None:
    """Task processes of a real Airflow reach Postgres, and GCS and BigQuery through configuration only."""
    wait_for(lambda: dag_id in dags(airflow, token), 120, dag_id)
    airflow.api("PATCH", f"/api/v2/dags/{dag_id}", token, {"is_paused": False})
    run = airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": None})
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"

    final = wait_for(
        lambda: (state := airflow.api("GET", path, token)["state"]) in ("success", "failed") and state, 300, "the run"
    )

    assert final == "success"
    (entry,) = [e for e in build_catalog([REPO / "pipelines"]) if e.dag_id == dag_id]
    loads = table_loads(entry.config)
    assert loads
    for load in loads:
        result = stack.compare(entry, load)
        assert result.same and result.source_rows > 0, (load.source.table, result)


def test_the_ui_shows_the_pipelines_and_a_graph(airflow: LocalAirflow, token: str, workdir: Path) -> None:
    from playwright.sync_api import sync_playwright

    wait_for(lambda: set(EXAMPLES) <= set(dags(airflow, token)), 120, "the DAGs")
    shots = workdir / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "_token", "value": token, "url": airflow.url}])
        page = context.new_page()
        page.goto(f"{airflow.url}/dags", wait_until="networkidle")
        for dag_id in EXAMPLES:
            page.wait_for_selector(f"text={dag_id}", timeout=60_000)
        page.screenshot(path=str(shots / "dag_list.png"), full_page=True)
        page.goto(f"{airflow.url}/dags/flights_to_dwh", wait_until="networkidle")
        page.get_by_title("Show Graph", exact=False).first.click()
        for node in ("bookings", "transform_fct_daily_revenue", "transform_dim_aircrafts"):
            page.wait_for_selector(f"text={node}", timeout=60_000)
        page.screenshot(path=str(shots / "flights_to_dwh_graph.png"))
        browser.close()
    assert (shots / "dag_list.png").stat().st_size > 10_000
    assert (shots / "flights_to_dwh_graph.png").stat().st_size > 10_000
    print(f"screenshots in {shots}")


def test_a_broken_file_appears_as_a_standin_and_the_others_stay(
    airflow: LocalAirflow, token: str, pipelines_dir: Path
) -> None:
    wait_for(lambda: set(EXAMPLES) <= set(dags(airflow, token)), 120, "the DAGs")
    (pipelines_dir / "broken.yml").write_text(
        "pipeline: broken_orders\nsource: {kind: postgres, connection: sales_src}\n"
        "destination: {kind: postgres, connection: sales_dwh}\ntables:\n  - name: orders\n    mode: incremental\n"
    )

    listed = wait_for(lambda: "broken_orders" in (found := dags(airflow, token)) and found, 120, "the stand-in")

    assert set(EXAMPLES) <= set(listed)
    assert "invalid" in {t["name"] for t in listed["broken_orders"]["tags"]}
    details = airflow.api("GET", "/api/v2/dags/broken_orders/details", token)
    assert "broken.yml:6:11: tables[0].mode: mode 'incremental' needs 'cursor'" in details["doc_md"]
    assert airflow.api("GET", "/api/v2/importErrors", token)["total_entries"] == 0
