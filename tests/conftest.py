"""Test-wide settings. Airflow reads its configuration once, at first import, so the environment
is set here, before any test module can import it: a throwaway AIRFLOW_HOME, this repo's loader,
no examples, no telemetry."""

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ["AIRFLOW_HOME"] = os.environ.get("DAGFORGE_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="dagforge-af-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY"] = "False"
os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
