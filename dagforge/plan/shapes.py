"""Pipeline shapes: which (source, stage, destination) kinds dagforge can build, and their tasks.

A shape turns a pipeline into task groups and task configs for dag-factory. Most shapes are
"one task group per table" (:func:`per_table`). Adding a shape is adding an entry to
:data:`SHAPES`; nothing else branches on kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagforge.loadspec import TableLoad, TableRef
from dagforge.plan.destinations import DESTINATIONS, warehouse
from dagforge.plan.docs import TableSection, generated_table_section, group_tooltip, load_table_section
from dagforge.spec.model import Pipeline, Table

TaskConfigs = dict[str, dict[str, Any]]
"""Task name → dag-factory task config (``operator``, arguments, ``dependencies``)."""
GroupConfigs = dict[str, dict[str, Any]]
"""Task group id → dag-factory task group config."""
BuildFn = Callable[[Pipeline], tuple[GroupConfigs, TaskConfigs]]


@dataclass(frozen=True)
class Shape:
    name: str
    """Short name, also a DAG tag, e.g. ``postgres_to_postgres``."""
    build: BuildFn
    doc_tables: TableSection = load_table_section
    """The tables part of the DAG's doc."""
    final_task: Callable[[Table], str] = lambda table: step_id("publish", table)
    """The task after which a table is loaded (what transforms depend on)."""
    reloadable: bool = True
    """Copies tables from a source, so a trigger may force a full reload (DAG params)."""


def per_table(table_tasks: Callable[[Pipeline, Table], TaskConfigs]) -> BuildFn:
    """A shape whose every table is a task group of its own."""

    def build(pipeline: Pipeline) -> tuple[GroupConfigs, TaskConfigs]:
        groups: GroupConfigs = {}
        tasks: TaskConfigs = {}
        for table in pipeline.tables:
            groups[table.name] = {"tooltip": group_tooltip(pipeline, table)}
            tasks.update(table_tasks(pipeline, table))
        return groups, tasks

    return build


def _postgres_table(pipeline: Pipeline, table: Table) -> tuple[TableRef, dict[str, Any] | None]:
    source = pipeline.source
    return TableRef(source.connection or "", source.options.get("schema", "public"), table.name), None


FILE_FORMATS = ("csv.gz", "jsonl.gz", "csv", "jsonl", "parquet")
"""File formats of the HTTP source, longest ending first (what a URL's ending says)."""


def file_format(spec: Any) -> str | None:
    """A file table's format: as written, else from its URL's ending (None: neither says)."""
    if spec.get("format"):
        return spec["format"]
    path = str(spec.get("url", "")).split("?", 1)[0].lower()
    return next((f for f in FILE_FORMATS if path.endswith("." + f)), None)


def _http_table(pipeline: Pipeline, table: Table) -> tuple[TableRef, dict[str, Any] | None]:
    """A file table: its URL (template), format, typed columns and file options."""
    from dagforge.sources.http_urls import is_template

    spec = table.spec
    options = {
        "url": spec["url"],
        "format": file_format(spec),
        "columns": dict(spec["columns"]),
        "csv": dict(spec.get("csv") or {}),
        "max_bad_rows": spec.get("max_bad_rows", 0),
        "missing": spec.get("missing", "skip" if is_template(spec["url"]) else "fail"),
    }
    return TableRef(pipeline.source.connection or "", "", table.name), options


TABLE_SOURCES: dict[str, Callable[[Pipeline, Table], tuple[TableRef, dict[str, Any] | None]]] = {
    "postgres": _postgres_table,
    "http": _http_table,
}
"""source.kind → what a table load knows of its source (the reference, and the kind's options)."""


def _table_load(pipeline: Pipeline, table: Table) -> TableLoad:
    source, destination = pipeline.source, pipeline.destination
    namespace = DESTINATIONS[destination.kind].namespace(destination)
    reference, options = TABLE_SOURCES[source.kind](pipeline, table)
    return TableLoad(
        pipeline=pipeline.id,
        source=reference,
        destination=TableRef(destination.connection or "", namespace, table.target),
        mode=table.mode,
        primary_key=table.primary_key,
        cursor=table.cursor,
        lookback=table.lookback,
        columns=table.columns,
        on_schema_change=table.on_schema_change,
        deletes=table.deletes,
        deleted_flag=table.deleted_flag,
        checks=tuple(dict(c) for c in table.checks),
        source_kind=source.kind,
        source_options=options,
        chunks=_chunks(table),
    )


def _chunks(table: Table) -> dict[str, Any] | None:
    """``chunks:`` resolved: the column to split by (the one-column primary key when not named)."""
    if table.chunks is None:
        return None
    by = table.chunks.get("by") or (table.primary_key[0] if len(table.primary_key) == 1 else None)
    return {"by": by, **{k: table.chunks[k] for k in ("count", "size") if k in table.chunks}}


def step_id(step: str, table: Table) -> str:
    """Task name of one step of one table, e.g. ``stage_orders`` (inside group ``orders``)."""
    return f"{step}_{table.name}"


def _chain(table: Table, load: dict[str, Any], steps: list[tuple[str, str, str, dict[str, Any]]]) -> TaskConfigs:
    """A table's task group: each step after the previous one, reading its result (XCom)."""
    tasks: TaskConfigs = {}
    previous: str | None = None
    for step, operator, doc, extra in steps:
        name = step_id(step, table)
        task: dict[str, Any] = {"operator": operator, "task_group_name": table.name, "load": load, **extra}
        if previous:
            task["upstream_task_id"] = f"{table.name}.{previous}"
            task["dependencies"] = [previous]
        tasks[name] = {**task, "doc_md": doc}
        previous = name
    return tasks


_CHECK = (
    "check",
    "operators.postgres.PostgresCheckNewRowsOperator",
    "Reads the watermark and decides whether there is anything new to load.",
    {},
)
_PUBLISH = (
    "publish",
    "operators.postgres.PostgresPublishTableOperator",
    "Publishes staging into the final table and writes the watermark, in one transaction.",
    {},
)


def _postgres_to_postgres(pipeline: Pipeline, table: Table) -> TaskConfigs:
    load = _table_load(pipeline, table).to_dict()
    if load.get("chunks"):
        return _chunked(table, load)
    stage = (
        "stage",
        "operators.postgres.PostgresStageTableOperator",
        "Streams the rows to load into a staging table on the destination (COPY).",
        {},
    )
    return _chain(table, load, [_CHECK, stage, _PUBLISH])


def _chunked(table: Table, load: dict[str, Any]) -> TaskConfigs:
    """``chunks:``: the check plans key ranges, a mapped stage task stages each (any worker, each
    retried on its own), one publish applies them all (docs/decisions/0014)."""
    check, stage = step_id("check", table), step_id("stage", table)
    chunks = load["chunks"]
    split = f"{chunks['count']} chunks" if "count" in chunks else f"chunks of {chunks['size']} values"
    steps = [
        ("check", "operators.postgres.PostgresCheckChunksOperator",
         f"Decides what to load and splits it into key ranges of `{chunks['by']}` ({split}).", {}),
        ("stage", "operators.postgres.PostgresStageChunkOperator",
         "Streams one chunk's rows into its own staging table (COPY); one mapped task per chunk.", {}),
        ("publish", "operators.postgres.PostgresPublishChunksOperator",
         "Publishes every chunk's staging into the final table and writes the watermark, in one transaction.",
         {"check_task_id": f"{table.name}.{check}"}),
    ]  # fmt: skip
    tasks = _chain(table, load, steps)
    mapped = tasks[stage]
    fixed = {k: mapped.pop(k) for k in ("load", "upstream_task_id")}
    mapped["partial"] = fixed
    mapped["expand"] = {"window": f"{table.name}.{check}.output"}
    return tasks


def _stage_block(pipeline: Pipeline) -> dict[str, Any]:
    """The stage block every object-storage step takes; files are encoded for the destination kind."""
    assert pipeline.stage is not None
    block = {"kind": pipeline.stage.kind, "connection": pipeline.stage.connection, **pipeline.stage.options}
    block["encoding"] = pipeline.destination.kind
    if "location" in pipeline.destination.options:  # a bucket made for a dataset lives where the dataset does
        block["location"] = pipeline.destination.options["location"]
    return block


def _extract(pipeline: Pipeline) -> tuple[str, str, str, dict[str, Any]]:
    """The object-storage extract, one operator for every store; files typed for the destination."""
    return (
        "extract",
        "operators.stage.ExtractOperator",
        "Streams the rows to load into part files and a manifest in the bucket.",
        {"stage": _stage_block(pipeline)},
    )


def _via_storage_to_postgres(pipeline: Pipeline, table: Table) -> TaskConfigs:
    load = (
        "load",
        "operators.stage.PostgresLoadOperator",
        "Loads the parts the manifest lists into a staging table on the destination.",
        {"stage": _stage_block(pipeline)},
    )
    publish = (
        "publish",
        "operators.stage.PostgresPublishFromStoreOperator",
        "Publishes staging into the final table and writes the watermark, in one transaction "
        "(staging lost since is loaded again from the manifest).",
        {"stage": _stage_block(pipeline)},
    )
    return _chain(table, _table_load(pipeline, table).to_dict(), [_CHECK, _extract(pipeline), load, publish])


def _via_storage_to_bigquery(pipeline: Pipeline, table: Table) -> TaskConfigs:
    where = {"warehouse": warehouse(pipeline.destination)}
    check = (
        "check",
        "operators.bigquery.BigQueryCheckNewRowsOperator",
        "Reads the watermark from `_dagforge_state` in the dataset and decides whether there is anything new.",
        where,
    )
    load = (
        "load",
        "operators.bigquery.BigQueryLoadOperator",
        "Loads the parts the manifest lists into a BigQuery staging table with the mapped schema (a load job).",
        {**where, "stage": _stage_block(pipeline)},
    )
    publish = (
        "publish",
        "operators.bigquery.BigQueryPublishOperator",
        "MERGE (incremental) or replace (full) plus the watermark, in one BigQuery transaction.",
        {**where, "stage": _stage_block(pipeline)},
    )
    tasks = _chain(table, _table_load(pipeline, table).to_dict(), [check, _extract(pipeline), load, publish])
    first = tasks[step_id("check", table)]
    # after the dataset branch, whichever way it went
    first["dependencies"] = [CREATE_DATASET, DATASET_EXISTS]
    first["trigger_rule"] = "none_failed_min_one_success"
    return tasks


CHECK_DATASET, CREATE_DATASET, DATASET_EXISTS = "check_dataset", "create_dataset", "dataset_exists"


def with_dataset_branch(build: BuildFn) -> BuildFn:
    """The DAG starts by checking the dataset: create it when missing, go on when present."""

    def with_branch(pipeline: Pipeline) -> tuple[GroupConfigs, TaskConfigs]:
        where = warehouse(pipeline.destination)
        groups, tasks = build(pipeline)
        head: TaskConfigs = {
            CHECK_DATASET: {
                "operator": "operators.bigquery.BigQueryDatasetBranchOperator",
                "warehouse": where,
                "create_task_id": CREATE_DATASET,
                "exists_task_id": DATASET_EXISTS,
                "doc_md": "Looks the dataset up and follows `create_dataset` when it is missing, "
                "`dataset_exists` when it is there.",
            },
            CREATE_DATASET: {
                "operator": "operators.bigquery.BigQueryCreateDatasetOperator",
                "warehouse": where,
                "dependencies": [CHECK_DATASET],
                "doc_md": "Creates the dataset (runs only when it was missing).",
            },
            DATASET_EXISTS: {
                "operator": "airflow.providers.standard.operators.empty.EmptyOperator",
                "dependencies": [CHECK_DATASET],
                "doc_md": "The dataset is there already (runs only then).",
            },
        }
        return groups, {**head, **tasks}

    return with_branch


def _generate_to_postgres(pipeline: Pipeline) -> tuple[GroupConfigs, TaskConfigs]:
    """One task, one transaction: every table of a run appears together or not at all."""
    destination = pipeline.destination
    task = {
        "operator": "operators.generate.GenerateRowsOperator",
        "pipeline": pipeline.id,
        "destination": {"connection": destination.connection, "schema": destination.options.get("schema", "public")},
        "locale": pipeline.source.options.get("locale"),
        "seed": pipeline.source.options.get("seed"),
        "tables": [dict(table.spec) for table in pipeline.tables],
        "doc_md": "Appends generated rows to "
        + ", ".join(f"`{t.name}`" for t in pipeline.tables)
        + " in one transaction (parents first).",
    }
    return {}, {"generate_rows": task}


SHAPES: dict[tuple[str, str | None, str], Shape] = {
    ("postgres", None, "postgres"): Shape("postgres_to_postgres", per_table(_postgres_to_postgres)),
    ("postgres", "s3", "postgres"): Shape("postgres_s3_postgres", per_table(_via_storage_to_postgres)),
    ("postgres", "gcs", "postgres"): Shape("postgres_gcs_postgres", per_table(_via_storage_to_postgres)),
    ("postgres", "gcs", "bigquery"): Shape(
        "postgres_gcs_bigquery", with_dataset_branch(per_table(_via_storage_to_bigquery))
    ),
    ("http", "s3", "postgres"): Shape("http_s3_postgres", per_table(_via_storage_to_postgres), reloadable=True),
    ("http", "gcs", "postgres"): Shape("http_gcs_postgres", per_table(_via_storage_to_postgres), reloadable=True),
    ("http", "gcs", "bigquery"): Shape("http_gcs_bigquery", with_dataset_branch(per_table(_via_storage_to_bigquery))),
    ("generate", None, "postgres"): Shape(
        "generate_to_postgres",
        _generate_to_postgres,
        generated_table_section,
        final_task=lambda table: "generate_rows",
        reloadable=False,
    ),
}
"""(source kind, stage kind or None, destination kind) → shape."""
