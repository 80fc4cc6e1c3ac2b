"""One real Airflow for the whole end-to-end session: the local stand-ins (two Postgres servers, S3,
GCS and BigQuery emulators, a webhook), a private copy of ``pipelines/`` and ``airflow standalone``
over it, started once and shared by every module under ``tests/e2e`` (an Airflow start costs about
a minute on a small machine). DAGs are paused at creation: a test unpauses what it runs."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dagforge.devservices.airflow import LocalAirflow, start_airflow
from dagforge.devservices.stack import LocalStack, local_stack
from tests.conftest import wait_until, without_dbt

REPO = Path(__file__).resolve().parents[2]
SMALL_MACHINE = {"AIRFLOW__CORE__PARALLELISM": "8", "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120"}
"""Every task process parses dags/pipelines.py (seconds of CPU). With Airflow's default 32 task
slots, a backfill of a wide DAG on 2 cores starts dozens at once and their parses pass the default
30 s import timeout ("Dag not found during start up"): a failure of the machine, not of a load."""


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 2) -> Any:
    """Poll ``check`` every ``interval`` s until it returns something truthy (returned)."""
    return wait_until(check, timeout, what, interval)


def dags(airflow: LocalAirflow, token: str) -> dict[str, dict]:
    return {d["dag_id"]: d for d in airflow.api("GET", "/api/v2/dags?limit=100", token)["dags"]}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def stack(workdir: Path) -> Iterator[LocalStack]:
    with local_stack(workdir) as running:
        running.seed()
        yield running


@pytest.fixture(scope="session")
def pipelines_dir(workdir: Path) -> Path:
    """The examples without their dbt projects: the run-order tests start dozens of runs, and
    every dbt model is a task of several seconds of CPU; dbt runs in the integration tests and the
    demo (tests/integration/test_dbt.py, test_bigquery.py, test_flights_s3.py)."""
    folder = workdir / "pipelines"
    shutil.copytree(REPO / "pipelines", folder)
    for file in folder.glob("*.yml"):
        file.write_text(without_dbt(file.read_text()))
    return folder


@pytest.fixture(scope="session")
def airflow(stack: LocalStack, workdir: Path, pipelines_dir: Path) -> Iterator[LocalAirflow]:
    warehouse = stack.servers["warehouse"]
    warehouse.create_database("airflow")
    metadata = warehouse.dsn("airflow").replace("postgresql://", "postgresql+psycopg://", 1)
    local = start_airflow(workdir / "airflow", metadata, pipelines_dir, paused=True, settings=SMALL_MACHINE)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def token(airflow: LocalAirflow) -> str:
    return airflow.token()
