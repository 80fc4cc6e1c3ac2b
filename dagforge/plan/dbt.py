"""``transform: {dbt: …}``: one task per dbt model, and one for its tests, after the loads its
sources name (docs/decisions/0016).

The project is read without dbt (:mod:`dagforge.dbt.project`), so ``render``/``graph``/``diff``
show the models as tasks with no warehouse and no dbt installed. A model runs after the publish
of every pipeline table its ``source()`` calls name and after the tests of the models it refs;
it runs when at least one of those ran and none failed (``none_failed_min_one_success``): a model
whose sources had nothing new is skipped, and so is what depends on it.
"""

from __future__ import annotations

import os
from typing import Any

from dagforge.dbt.project import DbtProject, load_project
from dagforge.plan.destinations import DESTINATIONS
from dagforge.spec.model import DbtTransform, Pipeline
from dagforge.spec.rules import DBT_GROUP

RUN_OPERATOR = "operators.dbt.DbtRunModelOperator"
SCHEMA_VAR = "dagforge_schema"
"""The dbt var every model task gets: the schema (dataset) this pipeline loads into."""
TEST_OPERATOR = "operators.dbt.DbtTestModelOperator"


def run_task(model: str) -> str:
    return f"{model}_run"


def test_task(model: str) -> str:
    return f"{model}_test"


def dbt_tasks(pipeline: Pipeline, shape: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The dbt task group and its tasks (none without ``transform.dbt``)."""
    dbt = pipeline.dbt
    if dbt is None or dbt.folder is None:
        return {}, {}
    project = load_project(dbt.folder)
    selected = project.select(dbt.select, dbt.exclude)
    loads = {t.target: shape.final_task(t) for t in pipeline.tables}
    namespace = DESTINATIONS[pipeline.destination.kind].namespace(pipeline.destination)
    shared = {
        "project": _relative(dbt),
        "profile": profile(pipeline, dbt),
        # where the pipeline loads its tables: a project's sources say schema: "{{ var('dagforge_schema') }}"
        "dbt_vars": {SCHEMA_VAR: namespace, **dict(dbt.vars)},
    }
    tasks: dict[str, dict[str, Any]] = {}
    for name in selected:
        model = project.models[name]
        after = sorted({loads[t] for t in _source_tables(project, name) if t in loads})
        after += [_done(project, up) for up in project.upstream(name) if up in selected]
        run: dict[str, Any] = {"operator": RUN_OPERATOR, "task_group_name": DBT_GROUP, **shared, "model": name}
        if after:
            run.update(dependencies=after, trigger_rule="none_failed_min_one_success")
        run["doc_md"] = f"`dbt run --select {name}` (`{project.label(model.path)}`)."
        tasks[run_task(name)] = run
        if model.tests:
            tasks[test_task(name)] = {
                "operator": TEST_OPERATOR, "task_group_name": DBT_GROUP, **shared, "model": name,
                "dependencies": [run_task(name)],
                "doc_md": f"`dbt test --select {name}`: {model.tests} test(s) on the model and its columns.",
            }  # fmt: skip
    group = {"tooltip": f"dbt project {project.name}: {len(selected)} model(s), built in {shared['profile']['schema']}"}
    return {DBT_GROUP: group}, tasks


def _done(project: DbtProject, model: str) -> str:
    """The task after which ``model`` is built and tested."""
    return test_task(model) if project.models[model].tests else run_task(model)


def _source_tables(project: DbtProject, model: str) -> list[str]:
    """The destination tables a model's ``source()`` calls name (external sources left out)."""
    found = (project.sources.get(call.names) for call in project.models[model].sources)
    return [s.identifier for s in found if s is not None and not s.external]


def profile(pipeline: Pipeline, dbt: DbtTransform) -> dict[str, Any]:
    """What the operator builds the dbt profile from (:mod:`dagforge.dbt.profiles`): no secrets."""
    destination = pipeline.destination
    kind = DESTINATIONS[destination.kind]
    schema = dbt.schema or f"{kind.namespace(destination)}_analytics"
    return {"kind": destination.kind, "connection": destination.connection, "schema": schema,
            **kind.dbt_profile(destination)}  # fmt: skip


def _relative(dbt: DbtTransform) -> str:
    """The project folder relative to the pipelines folder, where every worker finds it."""
    from dagforge.catalog import default_pipelines_dir

    assert dbt.folder is not None
    return os.path.relpath(dbt.folder, default_pipelines_dir().resolve())
