"""Compile a validated :class:`Pipeline` into a dag-factory config dict. Pure and deterministic."""

from __future__ import annotations

from typing import Any

from dagforge.plan.dbt import dbt_tasks
from dagforge.plan.docs import dag_doc
from dagforge.plan.extras import add_notifications, full_refresh_params, transform_tasks
from dagforge.plan.shapes import SHAPES, Shape
from dagforge.spec.model import Pipeline
from dagforge.spec.yaml_source import KeyPath

DAGFORGE_TAG = "dagforge"


class PlanError(Exception):
    """A valid spec that this version cannot build; ``path`` locates the key to blame."""

    def __init__(self, path: KeyPath, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def resolve_shape(pipeline: Pipeline) -> Shape:
    """The shape for this pipeline's kinds, or a PlanError naming the unsupported part."""
    stage_kind = pipeline.stage.kind if pipeline.stage else None
    key = (pipeline.source.kind, stage_kind, pipeline.destination.kind)
    if key in SHAPES:
        return SHAPES[key]
    for position, (path, kind) in enumerate(
        ((("source", "kind"), key[0]), (("stage", "kind"), key[1]), (("destination", "kind"), key[2]))
    ):
        if not any(k[position] == kind for k in SHAPES):
            what = path[0]
            supported = sorted({str(k[position]) for k in SHAPES if k[position]}) or ["none"]
            raise PlanError(path, f"{what} kind {kind!r} is not supported yet (supported: {', '.join(supported)})")
    stages = sorted({k[1] for k in SHAPES if (k[0], k[2]) == (key[0], key[2]) and k[1]})
    if key[1] is None and stages:
        raise PlanError(
            ("destination", "kind"),
            f"{key[0]} → {key[2]} goes through object storage: add a stage (kind: {' or '.join(stages)})",
        )
    shapes = ", ".join(" → ".join(k for k in key if k) for key in SHAPES)
    raise PlanError(("source", "kind"), f"this combination of kinds is not supported yet (supported: {shapes})")


def compile_pipeline(pipeline: Pipeline) -> dict[str, Any]:
    """``{dag_id: config}`` as dag-factory's ``load_yaml_dags(config_dict=...)`` takes it."""
    shape = resolve_shape(pipeline)
    groups, tasks = shape.build(pipeline)
    tasks.update(transform_tasks(pipeline, shape))
    dbt_groups, dbt = dbt_tasks(pipeline, shape)
    groups.update(dbt_groups)
    tasks.update(dbt)
    config = {**_dag_arguments(pipeline, shape), "task_groups": groups, "tasks": tasks}
    if shape.reloadable:
        config["params"] = full_refresh_params(pipeline)
    add_notifications(config, pipeline.notify)
    return {pipeline.id: config}


def _dag_arguments(pipeline: Pipeline, shape: Shape) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "description": pipeline.description or f"{shape.name} pipeline from {pipeline.file}",
        "schedule": pipeline.schedule,
        "start_date": pipeline.start_date,
        "catchup": pipeline.catchup,
        "max_active_runs": pipeline.max_active_runs,
        "tags": _tags(pipeline, shape),
        "default_args": {
            "owner": pipeline.owner,
            "retries": pipeline.retries,
            "retry_delay": pipeline.retry_delay_seconds,  # seconds; Airflow accepts a number
        },
        "doc_md": dag_doc(pipeline, shape.name, shape.doc_tables),
    }
    return {key: value for key, value in arguments.items() if value is not None or key == "schedule"}


def _tags(pipeline: Pipeline, shape: Shape) -> list[str]:
    generated = [DAGFORGE_TAG, shape.name, f"destination:{pipeline.destination.kind}"]
    return generated + [t for t in pipeline.tags if t not in generated]
