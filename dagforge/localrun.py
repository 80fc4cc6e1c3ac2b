"""Run pipelines once, in this process, with Airflow's ``dag.test()``.

Used by ``dagforge run``, ``make demo`` and the integration tests, so all three exercise the
exact DAG the loader builds. Call :func:`prepare_airflow_env` before anything imports Airflow.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dagforge.catalog import PIPELINES_DIR_ENV, REPO_ROOT, build_catalog, default_pipelines_dir


@dataclass(frozen=True)
class RunResult:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


def prepare_airflow_env(home: Path, pipelines_dir: Path | None = None) -> None:
    """Airflow config for local runs: this repo's loader, a sqlite DB in ``home`` (migrated once)."""
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY", "False")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
    if pipelines_dir is not None:
        os.environ[PIPELINES_DIR_ENV] = str(pipelines_dir)
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in os.environ and not _sqlite_is_migrated(home / "airflow.db"):
        home.mkdir(parents=True, exist_ok=True)
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


def _sqlite_is_migrated(path: Path) -> bool:
    """True when Airflow's sqlite DB exists and has been migrated (importing Airflow creates it empty)."""
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'task_instance'")
        return found.fetchone() is not None


def run_pipeline(dag_id: str, logical_date: datetime | None = None, conf: dict | None = None) -> RunResult:
    """Build ``dag_id`` from the pipelines folder as the loader would, run it once, report states."""
    from dagforge.airflow_loader import build_dag, standin_dag  # imports Airflow

    entries = {entry.dag_id: entry for entry in build_catalog([default_pipelines_dir()])}
    if dag_id not in entries:
        raise KeyError(f"no pipeline {dag_id!r} in {default_pipelines_dir()}")
    entry = entries[dag_id]
    dag = build_dag(entry) if entry.valid else standin_dag(dag_id, entry.display, map(str, entry.errors))
    # the same logical date (and run_after) gives the same run id: dag.test() replaces that run
    dates = {"logical_date": logical_date, "run_after": logical_date} if logical_date else {}
    run = dag.test(run_conf=conf, **dates)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return RunResult(dag_id=dag_id, run_id=run.run_id, state=str(run.state), task_states=states)
