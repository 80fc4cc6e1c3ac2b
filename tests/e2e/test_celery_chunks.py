"""A chunked table on a real distributed executor: Airflow with the CeleryExecutor, a Redis broker
(Debian's redis-server on 127.0.0.1) and two Celery workers. The chunks of one table run on both
workers, and the target equals the source after one publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dagforge.devservices.airflow import LocalAirflow, start_celery_airflow
from dagforge.devservices.redis import running_redis
from dagforge.devservices.stack import LocalStack
from tests.conftest import table_fingerprint
from tests.e2e.conftest import SMALL_MACHINE, dags, wait_for

pytestmark = pytest.mark.e2e

DATABASE, DAG_ID, CHUNKS = "celery_chunks", "big_accounts", 4
PIPELINE = f"""
pipeline: {DAG_ID}
source: {{kind: postgres, connection: celery_src, schema: public}}
destination: {{kind: postgres, connection: celery_dwh, schema: big}}
tables:
  - name: accounts
    primary_key: [aid]
    mode: full
    chunks: {{count: {CHUNKS}}}
"""


def connect(stack: LocalStack, role: str) -> psycopg.Connection:
    return psycopg.connect(stack.servers[role].dsn(DATABASE), autocommit=True)


@pytest.fixture(scope="module")
def celery(stack: LocalStack, workdir: Path) -> Iterator[LocalAirflow]:
    source, warehouse = stack.servers["source"], stack.servers["warehouse"]
    source.create_database(DATABASE)
    warehouse.create_database(DATABASE)
    warehouse.create_database("airflow_celery")
    with connect(stack, "source") as conn:
        conn.execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int NOT NULL, abalance int, filler text)")
        conn.execute(
            "INSERT INTO accounts SELECT g, g % 100, g % 9973, repeat('f', 84) FROM generate_series(1, 400000) g"
        )
    folder = workdir / "celery-pipelines"
    folder.mkdir()
    (folder / f"{DAG_ID}.yml").write_text(PIPELINE)
    connections = {
        "AIRFLOW_CONN_CELERY_SRC": source.airflow_conn_uri(DATABASE),
        "AIRFLOW_CONN_CELERY_DWH": warehouse.airflow_conn_uri(DATABASE),
    }
    metadata = warehouse.dsn("airflow_celery").replace("postgresql://", "postgresql+psycopg://", 1)
    home = workdir / "airflow-celery"
    home.mkdir()
    with running_redis(workdir) as redis:
        # two slots each: a worker's first task process (here the check) can hold its slot for seconds after
        # it reported success (a cold start on a loaded machine), and with one slot the other worker would
        # then run every chunk (0.6 s each) before this one takes any: seen in CI
        local = start_celery_airflow(home, metadata, folder, redis.url, workers=2, concurrency=2, paused=True,
                                     settings={**SMALL_MACHINE, **connections})  # fmt: skip
        try:
            yield local
        finally:
            local.stop()


def test_chunks_run_on_both_workers_and_the_target_equals_the_source(celery: LocalAirflow, stack: LocalStack) -> None:
    token = celery.token()
    wait_for(lambda: DAG_ID in dags(celery, token), 180, DAG_ID)
    celery.api("PATCH", f"/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    run = celery.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token, {"logical_date": None})

    finished = celery.wait_for_runs(token, DAG_ID, [run["dag_run_id"]], timeout=400)

    instances = celery.task_instances(token, DAG_ID, run["dag_run_id"])
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert finished[run["dag_run_id"]]["state"] == "success", states
    chunks = [ti for ti in instances if ti["task_id"] == "accounts.stage_accounts"]
    assert sorted(ti["map_index"] for ti in chunks) == list(range(CHUNKS))
    ran_on = {ti["map_index"]: ti["hostname"] for ti in chunks}
    assert set(ran_on.values()) == {"worker-1", "worker-2"}, ran_on
    with connect(stack, "source") as source, connect(stack, "warehouse") as target:
        assert table_fingerprint(target, "big.accounts") == table_fingerprint(source, "public.accounts")
        assert target.execute("SELECT count(*) FROM big.accounts").fetchone() == (400000,)
