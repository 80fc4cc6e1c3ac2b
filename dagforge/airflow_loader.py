"""The one place that turns catalog entries into Airflow DAGs (imported by ``dags/pipelines.py``).

Airflow drops a whole DAG file on any exception, so nothing here may raise out of
:func:`register_pipelines`: a pipeline that fails validation or building becomes a stand-in DAG
tagged ``invalid`` whose doc and only task show its errors, and every other pipeline still loads.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY", "False")

from airflow.sdk import DAG, get_parsing_context
from dagfactory import load_yaml_dags
from dagfactory.utils import cast_with_type

from dagforge.catalog import Entry, build_catalog, default_pipelines_dir
from operators.invalid import InvalidPipelineOperator

log = logging.getLogger(__name__)
INVALID_TAG = "invalid"
_LOADER_DIR = Path(__file__).resolve().parent


def build_dag(entry: Entry) -> DAG:
    """Build one valid entry's DAG with dag-factory; raises on failure (callers decide)."""
    if entry.config is None:
        raise ValueError(f"{entry.display} is not valid")
    built: dict[str, Any] = {}
    config = copy.deepcopy(entry.config)
    if "params" in config:  # dag-factory's __type__ form → airflow.sdk.Param, as for its YAML files
        config["params"] = cast_with_type(config["params"])
    load_yaml_dags(
        built,
        config_dict={entry.dag_id: config},
        # our config is complete; point dag-factory's defaults.yml lookup at a folder without one
        defaults_config_path=str(_LOADER_DIR),
    )
    dag = built.get(entry.dag_id)
    if not isinstance(dag, DAG):
        raise RuntimeError(f"dag-factory did not build DAG {entry.dag_id!r}")
    return dag


def standin_dag(dag_id: str, display: str, errors: Iterable[str]) -> DAG:
    """A DAG that shows ``errors`` in its doc and fails its only task with them."""
    lines = list(errors)
    doc = "\n".join([f"# {dag_id} is invalid", "", f"`{display}` could not be loaded:", "", "```", *lines, "```", ""])
    with DAG(
        dag_id=dag_id,
        schedule=None,
        tags=[INVALID_TAG, "dagforge"],
        doc_md=doc,
        description=f"INVALID: {lines[0] if lines else display}"[:200],
        is_paused_upon_creation=True,
    ) as dag:
        InvalidPipelineOperator(task_id="show_errors", errors=lines)
    return dag


def _build_or_standin(entry: Entry) -> DAG:
    if entry.valid:
        try:
            return build_dag(entry)
        except Exception as exc:  # any failure inside dag-factory or an operator's constructor
            log.exception("building %s failed", entry.display)
            return standin_dag(entry.dag_id, entry.display, [f"{entry.display}: building the DAG failed: {exc}"])
    return standin_dag(entry.dag_id, entry.display, [str(e) for e in entry.errors])


def register_pipelines(target: MutableMapping[str, Any], pipelines_dir: Path | None = None) -> list[str]:
    """Add a DAG per pipeline file to ``target`` (a module's globals); returns the DAG ids added."""
    folder = pipelines_dir or default_pipelines_dir()
    if not folder.is_dir():
        log.warning("dagforge: pipelines folder %s does not exist (set DAGFORGE_PIPELINES_DIR)", folder)
    try:
        entries = build_catalog([folder]) if folder.is_dir() else []
    except Exception as exc:  # a bug in dagforge itself must not hide every pipeline silently
        log.exception("dagforge could not read %s", folder)
        target["dagforge_loader"] = standin_dag("dagforge_loader", str(folder), [f"dagforge loader failed: {exc}"])
        return ["dagforge_loader"]
    wanted = get_parsing_context().dag_id
    added = []
    for entry in entries:
        if entry.is_defaults or (wanted and entry.dag_id != wanted):
            continue  # a worker parsing for one task run only needs that DAG
        try:
            target[entry.dag_id] = _build_or_standin(entry)
        except Exception:
            log.exception("dagforge could not build a stand-in for %s", entry.display)
            continue
        added.append(entry.dag_id)
    return added
