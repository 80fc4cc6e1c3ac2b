"""Any source → GCS → BigQuery: the dataset branch, the check, the staging load, the MERGE publish
and SQL transforms. The steps themselves live in :mod:`dagforge.bigquery.load`; these operators
get a client from the Airflow connection and report progress in the task log.

``warehouse`` is the destination block: ``connection`` (``google_cloud_platform``), ``project``,
``dataset``, ``location``. An emulator is configuration (``BIGQUERY_EMULATOR_HOST``), not code.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator

from dagforge.bigquery.sql import Dataset
from dagforge.contracts import Staged, Window
from dagforge.stage.extract_load import read_manifest, with_extract_again
from operators.base import SqlTransformOperator, TableLoadOperator, fail_fast_on_terminal_errors
from operators.sources import open_source, run_info
from operators.stage import _StageOperator

# Google's client libraries are imported when a task runs, not when the DAG file is parsed: every
# task process parses every DAG, and they cost about 2 s of CPU per parse.


def terminal_errors() -> tuple[type[Exception], ...]:
    """BigQuery errors no retry fixes: invalid SQL or data, missing tables (403s may be rate limits: retried)."""
    from google.api_core.exceptions import BadRequest, NotFound

    return (BadRequest, NotFound)


def bq() -> Any:
    """:mod:`dagforge.bigquery.load` (imports google-cloud-bigquery)."""
    from dagforge.bigquery import load

    return load


def bigquery_client(warehouse: dict[str, Any]) -> Any:
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    hook = BigQueryHook(gcp_conn_id=warehouse["connection"], location=warehouse.get("location"))
    return hook.get_client(project_id=warehouse["project"], location=warehouse.get("location"))


class _WarehouseMixin:
    # each operator takes ``warehouse`` in its own __init__: a mixin __init__ that took it was tried
    # and Airflow's operator metaclass still rejected it ("Invalid arguments were passed")
    warehouse: dict[str, Any]

    @property
    def dataset(self) -> Dataset:
        return Dataset.from_dict(self.warehouse)


class BigQueryDatasetBranchOperator(_WarehouseMixin, BaseBranchOperator):
    """Follows ``create_task_id`` when the dataset is missing, ``exists_task_id`` when it is there."""

    ui_color = "#fdf6e3"

    def __init__(self, *, warehouse: dict[str, Any], create_task_id: str, exists_task_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse
        self.create_task_id = create_task_id
        self.exists_task_id = exists_task_id

    def choose_branch(self, context: Any) -> str:
        ds = self.dataset
        if bq().dataset_exists(bigquery_client(self.warehouse), ds):
            self.log.info("dataset %s.%s exists", ds.project, ds.dataset)
            return self.exists_task_id
        self.log.info("dataset %s.%s is missing: creating it", ds.project, ds.dataset)
        return self.create_task_id


class BigQueryCreateDatasetOperator(_WarehouseMixin, BaseOperator):
    """Creates the dataset (in ``location``); one created meanwhile by another run is fine."""

    def __init__(self, *, warehouse: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse

    def execute(self, context: Any) -> None:
        ds = self.dataset
        with fail_fast_on_terminal_errors(*terminal_errors()):
            bq().create_dataset(bigquery_client(self.warehouse), ds)
        self.log.info("created dataset %s.%s (location %s)", ds.project, ds.dataset, ds.location or "default")


class BigQueryCheckNewRowsOperator(_WarehouseMixin, TableLoadOperator):
    """Reads the watermark from ``_dagforge_state`` in the dataset and decides what the load reads."""

    ui_color = "#fdf6e3"

    def __init__(self, *, warehouse: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        client = bigquery_client(self.warehouse)
        with fail_fast_on_terminal_errors(*terminal_errors()), open_source(load, self.log.info) as source:
            window = source.decide(load, lambda interval=None: bq().read_state(client, self.dataset, load, interval),
                                   run_info(context), force_full=self.force_full(context))  # fmt: skip
        self.log.info("%s: %s", load.source.label, window.reason)
        return window.to_dict()


class _BigQueryStageOperator(_WarehouseMixin, _StageOperator):
    def load_staging(self, staging: str, window: Window, context: Any) -> Staged:
        """The manifest's parts into ``staging``; extracted again first when the manifest or a part is gone."""
        load, store = self.table_load, self.store()
        client = bigquery_client(self.warehouse)

        def load_parts() -> Staged:
            manifest = read_manifest(store, self.key_prefix(context))
            return bq().load_staging(client, self.dataset, load, manifest, staging, context["run_id"], self.log.info)

        return with_extract_again(load_parts, self.extract_again(store, window, context),
                                  load.source.label)  # fmt: skip


class BigQueryLoadOperator(_BigQueryStageOperator):
    """Loads the parts the manifest lists into a staging table with the mapped schema (a load job),
    and the key set beside it when the table deletes incrementally."""

    def __init__(self, *, warehouse: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse

    def execute(self, context: Any) -> dict[str, Any]:
        load = self.table_load
        extracted = self.upstream_result(context)
        staging = load.staging_table(context["run_id"])
        with fail_fast_on_terminal_errors(*terminal_errors()):
            staged = self.load_staging(staging, Window.from_dict(extracted["window"]), context)
        self.log.info("loaded %d rows into %s", staged.rows, self.dataset.table_id(staging))
        return staged.to_dict()


class BigQueryPublishOperator(_BigQueryStageOperator):
    """MERGE (incremental) or replace (full), the table's deletes and the watermark, in one
    transaction, after the table's ``on_schema_change`` policy; drops staging.

    A staging table (or key set) that is gone (expired, dropped) or incomplete is loaded again
    first. A refused schema change fails at once, nothing written; a failed reconciliation or
    ``checks:`` entry fails the task after the commit (both terminal: a retry changes nothing).
    """

    ui_color = "#e6f4ea"

    def __init__(self, *, warehouse: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse

    def execute(self, context: Any) -> int:
        load = self.table_load
        staged = Staged.from_dict(self.upstream_result(context))
        with fail_fast_on_terminal_errors(*terminal_errors()):
            outcome = bq().publish(
                bigquery_client(self.warehouse), self.dataset, load, staged, context["run_id"], self.log.info,
                restage=lambda: self.load_staging(staged.staging_table, staged.source_window, context),
            )  # fmt: skip
        self.log.info("%s: %s", self.dataset.table_id(load.destination.table), outcome.reason)
        return outcome.rows


class BigQueryTransformOperator(_WarehouseMixin, SqlTransformOperator):
    """Runs one SQL file as a BigQuery script job.

    The template sees (besides what every transform sees, :class:`SqlTransformOperator`):
    ``pipeline``, ``project``, ``dataset`` and ``tables`` (table name → quoted
    ```project.dataset.table```). The job id is fixed per run and transform, so a retry re-attaches.
    """

    def __init__(self, *, warehouse: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse

    def execute(self, context: Any) -> None:
        sql = self.rendered(context)
        label = (self.template_context["pipeline"], "transform", self.name)
        client, location = bigquery_client(self.warehouse), self.warehouse.get("location")
        with fail_fast_on_terminal_errors(*terminal_errors()):
            bq().run_job(
                client,
                bq().job_id_for(self.dataset, label, context["run_id"]),
                lambda job_id: client.query(sql, job_id=job_id, location=location, job_retry=None),
                location,
                self.log.info,
            )
