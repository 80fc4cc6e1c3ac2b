"""dagforge loader: one Airflow DAG per pipeline YAML file.

Reads every pipeline under DAGFORGE_PIPELINES_DIR (default: the repository's pipelines/),
validates and compiles it, and builds it with dag-factory. This file never raises: a broken
pipeline becomes a stand-in DAG tagged `invalid` that shows its errors.

For thousands of pipelines, copies of this file named `pipelines_shard_<i>_of_<n>.py` (i = 0 .. n-1)
each load a stable shard, and this file then loads nothing (README: "Many pipelines").
"""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY", "False")
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

try:
    from dagforge.airflow_loader import register_pipelines

    register_pipelines(globals(), loader_file=Path(__file__))
except Exception as exc:  # last resort: even an import error in dagforge must show up in the UI
    logging.getLogger(__name__).exception("dagforge loader failed")
    from airflow.sdk import DAG

    dagforge_loader = DAG(
        dag_id="dagforge_loader",
        schedule=None,
        tags=["invalid", "dagforge"],
        doc_md=f"# dagforge loader failed\n\n```\n{type(exc).__name__}: {exc}\n```\n",
    )
