"""End to end, a file pipeline the way users backfill it: ``taxi_to_bigquery`` (monthly CSV.gz over
HTTP → Parquet in GCS → BigQuery, ``mode: interval``) in the session's real Airflow.

A backfill created through the REST API (``POST /api/v2/backfills``, what ``airflow backfill create``
and the UI do) loads 2024-01 and 2024-02 from the stack's file server, two runs at a time: each
month then holds exactly its file's rows and ``_dagforge_files`` names the file each month loaded.
Then January is rerun the way users rerun a run (its task instances cleared through the API): the
check step finds the file unchanged, the extract, load and publish are skipped, and nothing moves.

The taxi DAG is run by this module alone (the scheduled run that unpausing makes asks for the
current month's file, which the server does not have: that run loads nothing).
"""

from __future__ import annotations

import gzip
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dagforge.devservices import tripdata
from dagforge.devservices.airflow import LocalAirflow
from dagforge.devservices.stack import LocalStack
from tests.e2e.conftest import dags, wait_for
from tests.e2e.test_run_orders import task_errors

pytestmark = pytest.mark.e2e

DAG_ID = "taxi_to_bigquery"
PROJECT, DATASET, TABLE = "dagforge-local", "taxi", "trips"
MONTHS = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
FROM_DATE, TO_DATE = MONTHS[0], MONTHS[-1]
"""Both inclusive logical dates: Airflow backfills every run whose logical date is in [from, to]. Under
``@monthly`` (a cron trigger timetable in Airflow 3) a run's logical date is its month's first day."""
CHECK, EXTRACT, LOAD, PUBLISH = (f"{TABLE}.{step}_{TABLE}" for step in ("check", "extract", "load", "publish"))
BACKFILL_TIMEOUT_S = 150
RERUN_TIMEOUT_S = 90


def test_a_backfill_loads_each_month_once_and_a_rerun_of_an_unchanged_file_loads_nothing(
    airflow: LocalAirflow, token: str, stack: LocalStack
) -> None:
    began = time.monotonic()
    wait_for(lambda: DAG_ID in dags(airflow, token), 120, DAG_ID)
    if dags(airflow, token)[DAG_ID]["is_paused"]:
        airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", token, {"is_paused": False})

    # 1. a backfill of exactly January and February, two runs at a time
    body = {"dag_id": DAG_ID, "from_date": FROM_DATE.isoformat(), "to_date": TO_DATE.isoformat()}
    planned = airflow.api("POST", "/api/v2/backfills/dry_run", token, body)["backfills"]
    assert [parse(b["logical_date"]) for b in planned] == list(MONTHS), planned
    backfill = airflow.backfill(token, DAG_ID, FROM_DATE, TO_DATE, max_active_runs=2)
    assert backfill["max_active_runs"] == 2, backfill
    runs = airflow.dag_runs(token, DAG_ID, run_type="backfill", logical_date_gte=FROM_DATE.isoformat(),
                            logical_date_lte=TO_DATE.isoformat())  # fmt: skip
    by_month = {parse(r["data_interval_start"]): r["dag_run_id"] for r in runs}
    assert sorted(by_month) == list(MONTHS), runs
    assert [parse(r["logical_date"]) for r in runs] == list(MONTHS), runs

    wait_for_success(airflow, token, list(by_month.values()), BACKFILL_TIMEOUT_S, "the backfill")
    airflow.wait_for_backfill(token, backfill["id"], 30)
    for month, run_id in by_month.items():
        states = task_states(airflow, token, run_id)
        assert states[EXTRACT] == states[LOAD] == states[PUBLISH] == "success", (month, states)

    # 2. each month holds exactly its file's rows; _dagforge_files names the file each month loaded
    client = stack.gcp.bigquery_client(PROJECT)
    expected = {month: file_rows(stack.files.root, month) for month in MONTHS}
    assert interval_counts(client) == expected
    for month, (first, last) in pickup_ranges(client).items():
        assert (first.year, first.month) == (last.year, last.month) == (month.year, month.month), (month, first, last)
    files = loaded_files(client)
    assert sorted(files) == list(MONTHS), files
    for month, record in files.items():
        name = tripdata.file_name(month.year, month.month)
        assert record["size"] == (stack.files.root / name).stat().st_size, record
        assert record["url"] == stack.files.url_for(name), record
        assert record["rows_loaded"] == expected[month], record
        assert record["run_id"] == by_month[month], record

    # 3. a rerun of January, cleared the way users do: the file is unchanged, nothing is loaded again
    january = by_month[MONTHS[0]]
    cleared = airflow.api(
        "POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", token,
        {"dag_run_id": january, "dry_run": False, "only_failed": False, "reset_dag_runs": True},
    )  # fmt: skip
    assert {CHECK, EXTRACT, LOAD, PUBLISH} <= {ti["task_id"] for ti in cleared["task_instances"]}, cleared
    wait_for_success(airflow, token, [january], RERUN_TIMEOUT_S, "the rerun of January", after_clear=True)

    tis = {ti["task_id"]: ti for ti in airflow.task_instances(token, DAG_ID, january)}
    assert tis[CHECK]["state"] == "success" and tis[CHECK]["try_number"] == 2, tis[CHECK]
    assert {tis[t]["state"] for t in (EXTRACT, LOAD, PUBLISH)} == {"skipped"}, describe(airflow, token, [january])
    window = xcom(airflow, token, january, CHECK)
    assert window["new_rows"] is False and "unchanged" in window["reason"], window
    assert interval_counts(client) == expected
    assert loaded_files(client) == files  # the same record: not written again
    print(f"{DAG_ID}: backfill of {len(MONTHS)} months and a rerun in {time.monotonic() - began:.0f} s")


# ---- helpers ----------------------------------------------------------------------------------


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def file_rows(root: Path, month: datetime) -> int:
    with gzip.open(root / tripdata.file_name(month.year, month.month), "rb") as lines:
        return sum(1 for _ in lines) - 1  # the header


def interval_counts(client: Any) -> dict[datetime, int]:
    query = f"SELECT _dagforge_interval AS start, count(*) AS n FROM `{PROJECT}.{DATASET}.{TABLE}` GROUP BY 1"
    return {row["start"].astimezone(UTC): int(row["n"]) for row in client.query(query).result()}


def pickup_ranges(client: Any) -> dict[datetime, tuple[datetime, datetime]]:
    query = (
        "SELECT _dagforge_interval AS start, min(tpep_pickup_datetime) AS first, max(tpep_pickup_datetime) AS last "
        f"FROM `{PROJECT}.{DATASET}.{TABLE}` GROUP BY 1"
    )
    return {row["start"].astimezone(UTC): (row["first"], row["last"]) for row in client.query(query).result()}


def loaded_files(client: Any) -> dict[datetime, dict]:
    query = (
        "SELECT interval_start, url, size, etag, rows_loaded, run_id, loaded_at "
        f"FROM `{PROJECT}.{DATASET}._dagforge_files` WHERE pipeline = '{DAG_ID}' AND table_name = '{TABLE}'"
    )
    return {parse(row["interval_start"]): dict(row.items()) for row in client.query(query).result()}


def task_states(airflow: LocalAirflow, token: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in airflow.task_instances(token, DAG_ID, run_id)}


def xcom(airflow: LocalAirflow, token: str, run_id: str, task_id: str) -> Any:
    path = (
        f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
        "/xcomEntries/return_value"
    )
    return airflow.api("GET", path, token)["value"]


def describe(airflow: LocalAirflow, token: str, run_ids: list[str]) -> str:
    """Every run's state and its task instances' states and tries, with the error lines of their logs."""
    runs = {r["dag_run_id"]: r for r in airflow.dag_runs(token, DAG_ID)}
    lines = []
    for run_id in run_ids:
        lines.append(f"run {run_id}: {runs.get(run_id, {}).get('state', 'missing')}")
        for ti in sorted(airflow.task_instances(token, DAG_ID, run_id), key=lambda t: t["task_id"]):
            errors = task_errors(airflow.home, ti) if ti["state"] not in ("success", "skipped", None) else ""
            lines.append(f"  {ti['task_id']}: {ti['state']} (try {ti['try_number']}){errors}")
    return "\n".join(lines)


def wait_for_success(
    airflow: LocalAirflow, token: str, run_ids: list[str], timeout: float, what: str, *, after_clear: bool = False
) -> None:
    """Wait until every run has finished; fail with every task's state unless all succeeded.

    ``after_clear``: the runs were just cleared, so a run only counts as finished once its check task
    ran again (a second try), whatever the run's state says in between."""

    def finished() -> bool:
        runs = {r["dag_run_id"]: r for r in airflow.dag_runs(token, DAG_ID) if r["dag_run_id"] in run_ids}
        if len(runs) < len(run_ids) or any(r["state"] not in ("success", "failed") for r in runs.values()):
            return False
        if after_clear:
            checks = [ti for i in run_ids for ti in airflow.task_instances(token, DAG_ID, i) if ti["task_id"] == CHECK]
            return all(ti["try_number"] >= 2 and ti["state"] in ("success", "failed") for ti in checks)
        return True

    try:
        wait_for(finished, timeout, what)
    except AssertionError as exc:
        pytest.fail(f"{exc}:\n{describe(airflow, token, run_ids)}", pytrace=False)
    states = {r["dag_run_id"]: r["state"] for r in airflow.dag_runs(token, DAG_ID) if r["dag_run_id"] in run_ids}
    if set(states.values()) != {"success"}:
        pytest.fail(f"{what} did not succeed:\n{describe(airflow, token, run_ids)}", pytrace=False)
