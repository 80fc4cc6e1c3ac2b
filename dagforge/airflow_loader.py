"""The one place that turns pipeline files into Airflow DAGs (imported by ``dags/pipelines.py``).

Airflow drops a whole DAG file on any exception, so nothing here may raise out of
:func:`register_pipelines`: a pipeline that fails validation or building becomes a stand-in DAG
tagged ``invalid`` whose doc and only task show its errors, and every other pipeline still loads.

A parse builds only what it needs (:mod:`dagforge.folder`): a worker parsing for one task builds
that task's DAG alone, a sharded loader file builds its shard, and plans come from the plan cache
(:mod:`dagforge.plancache`) when the files are unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY", "False")
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")

from airflow.sdk import DAG, get_parsing_context
from dagfactory.dagbuilder import DagBuilder
from dagfactory.utils import cast_with_type

from dagforge.catalog import Entry, default_pipelines_dir
from dagforge.folder import Selection, read_folder
from dagforge.plancache import PlanCache
from operators.invalid import InvalidPipelineOperator

log = logging.getLogger(__name__)
INVALID_TAG = "invalid"


def build_dag(entry: Entry) -> DAG:
    """Build one valid entry's DAG with dag-factory's builder; raises on failure (callers decide).

    dag-factory's ``load_yaml_dags`` would also dump the config as YAML twice per DAG to append it
    to the doc (half its build time, and a doc of 15,000 characters in the UI): the builder alone
    builds the same DAG with our doc only.
    """
    if entry.config is None:
        raise ValueError(f"{entry.display} is not valid")
    config = dict(entry.config)  # DagBuilder deep-copies what it keeps
    if "params" in config:  # dag-factory's __type__ form → airflow.sdk.Param, as for its YAML files
        config["params"] = cast_with_type(config["params"])
    config.setdefault("task_groups", {})
    built = DagBuilder(dag_name=entry.dag_id, dag_config=config, default_config={"default_args": {}}).build()
    dag = built.get("dag")
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


def default_cache_dir() -> Path:
    from airflow.configuration import AIRFLOW_HOME

    return Path(AIRFLOW_HOME) / "dagforge" / "plans"


SHARD_NAME = re.compile(r"^(?P<stem>.+)_shard_(?P<index>\d+)_of_(?P<count>\d+)\.py$")


def loader_shard(loader_file: Path) -> tuple[int, int] | bool | None:
    """The shard a loader file takes from its name (``pipelines_shard_2_of_4.py`` → ``(2, 4)``).

    ``None`` for the plain loader (every pipeline); ``False`` when shard files sit beside the plain
    loader, which then leaves the pipelines to them (never a DAG in two files).
    """
    match = SHARD_NAME.match(loader_file.name)
    if match:
        index, count = int(match["index"]), int(match["count"])
        if not 0 <= index < count:
            raise ValueError(f"{loader_file.name}: shard {index} of {count} does not exist (0 .. {count - 1})")
        return index, count
    if any(loader_file.parent.glob(f"{loader_file.stem}_shard_*_of_*.py")):
        return False
    return None


def register_pipelines(
    target: MutableMapping[str, Any],
    pipelines_dir: Path | None = None,
    shard: tuple[int, int] | None = None,
    loader_file: Path | None = None,
) -> list[str]:
    """Add a DAG per pipeline file to ``target`` (a module's globals); returns the DAG ids added.

    ``shard=(index, count)`` builds only the files of that shard (:func:`dagforge.folder.shard_of`);
    with ``loader_file``, the shard comes from the file's name (:func:`loader_shard`). Several
    loader files, one per shard, let the dag-processor parse them in parallel.
    """
    started = time.perf_counter()
    if loader_file is not None and shard is None:
        taken = loader_shard(loader_file)
        if taken is False:
            log.info("dagforge: %s loads nothing: shard files beside it load the pipelines", loader_file.name)
            return []
        shard = taken or None
    folder = pipelines_dir or default_pipelines_dir()
    if not folder.is_dir():
        log.warning("dagforge: pipelines folder %s does not exist (set DAGFORGE_PIPELINES_DIR)", folder)
        return []
    wanted = get_parsing_context().dag_id  # a worker parsing for one task run only needs that DAG
    cache = PlanCache.from_env(default_cache_dir())
    try:
        parsed = read_folder(folder, cache, Selection(shard=shard, dag_id=wanted))
    except Exception as exc:  # a bug in dagforge itself must not hide every pipeline silently
        log.exception("dagforge could not read %s", folder)
        dag_id = f"dagforge_loader_shard_{shard[0]}" if shard else "dagforge_loader"
        target[dag_id] = standin_dag(dag_id, str(folder), [f"dagforge loader failed: {exc}"])
        return [dag_id]
    added, standins = [], []
    for entry in parsed.entries:
        try:
            target[entry.dag_id] = _build_or_standin(entry)
        except Exception:
            log.exception("dagforge could not build a stand-in for %s", entry.display)
            continue
        added.append(entry.dag_id)
        if not entry.valid:
            standins.append(entry.display)
    if wanted is None:
        cache.prune()
    log.info(
        "dagforge: %d DAGs from %d files in %s in %.2f s (%d plans from the cache, %d files compiled, "
        "%d ids read from pipeline: lines)%s%s%s",
        len(added),
        parsed.files,
        folder,
        time.perf_counter() - started,
        parsed.from_cache,
        parsed.compiled,
        parsed.quick_ids,
        f"; shard {shard[0]} of {shard[1]}" if shard else "",
        f"; only {wanted}" if wanted else "",
        f"; stand-ins: {', '.join(standins)}" if standins else "",
    )
    return added
