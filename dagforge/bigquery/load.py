"""The BigQuery side of a table load, on a ``google.cloud.bigquery.Client``.

1. :func:`read_state` gives the check step the table's watermark and lookback digest (``_dagforge_state``).
2. :func:`load_staging` loads the parts a manifest lists into a staging table, with the schema
   mapped from the Postgres catalog (never autodetected), and checks the row count.
3. :func:`publish` runs one script: ``MERGE`` on the primary key (incremental) or delete and
   insert (full), and the state row, in one transaction, by the ordering rules of
   docs/decisions/0008 (written into the statements); then drops staging.

Every job has an id made of the pipeline, table, step and run (:func:`job_id`): a retried task
finds its job and waits for it instead of submitting it again (:func:`run_job`). A publish's id
also carries the staging's ``stage_id``, so a publish retried after its COMMIT re-attaches to the
finished job (a no-op), while a run whose tables were cleared and loaded again publishes anew.
BigQuery serializes transactions on one table itself: the one that loses a conflict is aborted
("concurrent update"), and :func:`run_job` submits it again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from google.api_core.exceptions import Conflict, GoogleAPICallError, NotFound
from google.cloud import bigquery

from dagforge.bigquery import sql
from dagforge.bigquery.sql import Dataset
from dagforge.bigquery.types import BigQueryType, bigquery_type
from dagforge.contracts import ObjectMissing, PublishOutcome, Staged, StagingLost, TableState
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import Manifest

log = logging.getLogger(__name__)

STATE_TABLE = "_dagforge_state"
STAGING_LIFETIME = dt.timedelta(days=1)
"""Staging tables left behind by a failed run expire by themselves."""
SOURCE_FORMATS = {"parquet": bigquery.SourceFormat.PARQUET, "jsonl": bigquery.SourceFormat.NEWLINE_DELIMITED_JSON}


CONCURRENT_ATTEMPTS = 8
"""How often a job aborted by a concurrent transaction on the same table is submitted again."""


def dataset_exists(client: bigquery.Client, ds: Dataset) -> bool:
    try:
        client.get_dataset(f"{ds.project}.{ds.dataset}")
    except NotFound:
        return False
    return True


def create_dataset(client: bigquery.Client, ds: Dataset) -> None:
    """Create the dataset; one created meanwhile (another run, another DAG) is fine."""
    dataset = bigquery.Dataset(f"{ds.project}.{ds.dataset}")
    if ds.location:  # unset: BigQuery's default location (sending null is an error to some servers)
        dataset.location = ds.location
    client.create_dataset(dataset, exists_ok=True)


def job_id(ds: Dataset, load: TableLoad, run_id: str, step: str) -> str:
    """A table step's job id: the same for the same destination table, pipeline, step and run."""
    return job_id_for(ds, (load.pipeline, load.destination.table, step), run_id)


def publish_job_id(ds: Dataset, load: TableLoad, run_id: str, staged: Staged) -> str:
    """A publish's job id: fixed for one staging (``stage_id``) of one run, so a retry re-attaches."""
    return job_id_for(ds, (load.pipeline, load.destination.table, "publish"), f"{run_id}|{staged.stage_id}")


def job_id_for(ds: Dataset, label: tuple[str, ...], run_id: str) -> str:
    """``dagforge_<label…>_<hash>``: letters, digits and ``_`` only, fixed for the same label and run.

    Job ids are unique per project, so the dataset is part of the hash: two deployments (or tests)
    that run the same pipeline into different datasets never share a job.
    """
    digest = hashlib.sha1("|".join((ds.project, ds.dataset, *label, run_id)).encode()).hexdigest()[:16]
    return "_".join(("dagforge", *label, digest))


def run_job(
    client: bigquery.Client,
    base_id: str,
    submit: Callable[[str], Any],
    location: str | None,
    progress: Callable[..., None] = log.info,
) -> Any:
    """Wait for the job ``base_id``: the one a previous attempt started, or a new one.

    A job that already failed cannot run again under its id, so the next attempt takes
    ``<base_id>_2``, ``_3``, …; a job that is running or done is waited for, never repeated.
    """
    attempt = 1
    while True:
        current = base_id if attempt == 1 else f"{base_id}_{attempt}"
        try:
            job = client.get_job(current, location=location)
        except NotFound:
            try:
                job = submit(current)
                progress("submitted job %s", current)
            except Conflict:  # another attempt submitted it a moment ago
                job = client.get_job(current, location=location)
                progress("re-attached to job %s", current)
        else:
            if job.state == "DONE" and job.error_result:
                progress("job %s failed before (%s); submitting it again", current, job.error_result.get("message"))
                attempt += 1
                continue
            progress("re-attached to job %s (%s), not submitting it again", current, job.state)
        try:
            job.result()
        except GoogleAPICallError as exc:
            if not concurrent_update(exc) or attempt >= CONCURRENT_ATTEMPTS:
                raise
            progress("job %s lost to a concurrent transaction on the same table; submitting it again", current)
            time.sleep(min(2**attempt, 30))
            attempt += 1
            continue
        return job


def concurrent_update(exc: Exception) -> bool:
    """BigQuery aborted the job because another transaction changed the same table first."""
    return "concurrent update" in str(exc).lower()


def schema_for(columns: list[dict[str, str]]) -> list[bigquery.SchemaField]:
    """Manifest columns (name, Postgres type) → BigQuery schema, by :data:`~dagforge.bigquery.types.TYPE_MAP`."""
    return [bigquery.SchemaField.from_api_repr(bigquery_type(c["type_sql"]).field(c["name"])) for c in columns]


def _count(client: bigquery.Client, ds: Dataset, table: str) -> int:
    rows = list(client.query(sql.count_rows(ds.table_sql(table)), location=ds.location).result())
    return int(rows[0][0])


def ensure_state_table(client: bigquery.Client, ds: Dataset) -> None:
    """Create ``_dagforge_state`` when missing; add the columns an older state table lacks."""
    fields = [bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in sql.STATE_COLUMNS]
    table = client.create_table(bigquery.Table(ds.table_id(STATE_TABLE), schema=fields), exists_ok=True)
    have = {field.name for field in table.schema}
    for name, kind, _ in sql.STATE_COLUMNS:
        if name not in have:
            statement = f"ALTER TABLE {ds.table_sql(STATE_TABLE)} ADD COLUMN IF NOT EXISTS {sql.ident(name)} {kind}"
            client.query(statement, location=ds.location).result()


def read_state(client: bigquery.Client, ds: Dataset, load: TableLoad) -> TableState:
    try:
        table = client.get_table(ds.table_id(STATE_TABLE))
    except NotFound:
        return TableState()
    if "zone_digest" not in {field.name for field in table.schema}:  # written by an older version
        ensure_state_table(client, ds)
    query = sql.read_state(ds.table_sql(STATE_TABLE), load.pipeline, load.destination.table)
    rows = list(client.query(query, location=ds.location).result())
    return TableState(rows[0][0], rows[0][1]) if rows else TableState()


def load_staging(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    manifest: Manifest,
    staging_table: str,
    run_id: str,
    progress: Callable[..., None] = log.info,
) -> Staged:
    """The manifest's parts → a staging table (replaced, typed by the map), verified by row count."""
    schema = schema_for(manifest.columns)
    table = bigquery.Table(ds.table_id(staging_table), schema=schema)
    table.expires = dt.datetime.now(dt.UTC) + STAGING_LIFETIME
    table.description = f"dagforge staging for {load.pipeline}.{load.destination.table}, run {run_id}"
    table = client.create_table(table, exists_ok=True)
    # the staging table's creation time is part of the job id: a retry re-attaches to the job that
    # filled this table, while a table dropped since (published, expired) is filled by a new job
    incarnation = f"_{int(table.created.timestamp() * 1000)}" if table.created else ""
    uris = [part["uri"] for part in manifest.parts]
    if uris:
        config = bigquery.LoadJobConfig(
            schema=schema,
            source_format=SOURCE_FORMATS[manifest.format],
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        if manifest.format == "parquet":
            config.parquet_options = bigquery.ParquetOptions()
            config.parquet_options.enable_list_inference = True  # lists are REPEATED, not list.element
            # decimals wider than NUMERIC (38, 9) go to BIGNUMERIC columns instead of failing the load
            config.decimal_target_types = ["NUMERIC", "BIGNUMERIC", "STRING"]

        def submit(current: str) -> Any:
            return client.load_table_from_uri(
                uris, ds.table_id(staging_table), job_config=config, job_id=current, location=ds.location
            )

        size_mb = sum(part.get("bytes", 0) for part in manifest.parts) / 1e6
        progress("loading %d part(s), %.1f MB, %d rows from %s into %s", len(uris), size_mb, manifest.rows,
                 uris[0].rsplit("/", 1)[0] + "/", ds.table_id(staging_table))  # fmt: skip
        try:
            run_job(client, job_id(ds, load, run_id, "load") + incarnation, submit, ds.location, progress)
        except NotFound as exc:  # a part the manifest lists is not in the bucket
            raise ObjectMissing(f"loading {ds.table_id(staging_table)}: {exc}") from exc
    loaded = _count(client, ds, staging_table)
    if loaded != manifest.rows:
        raise StagingLost(f"{ds.table_id(staging_table)} holds {loaded} rows but the manifest lists {manifest.rows}")
    names = [c["name"] for c in manifest.columns]
    return Staged.of(staging_table, loaded, names, manifest.source_window, manifest.snapshot)


def publish(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    progress: Callable[..., None] = log.info,
    restage: Callable[[], Staged] | None = None,
) -> PublishOutcome:
    """Staging → final table and the state row in one transaction; then staging is dropped.

    Staging that is gone or incomplete is rebuilt by ``restage`` first (same ``stage_id``).
    """
    base = publish_job_id(ds, load, run_id, staged)

    def run_publish(staged: Staged) -> None:
        submit = lambda current: _submit_publish(client, ds, load, staged, run_id, current, progress)  # noqa: E731
        run_job(client, base, submit, ds.location, progress)

    try:
        run_publish(staged)
    except StagingLost as lost:
        if restage is None:
            raise TerminalError(f"{lost}; clear the load task to load again") from lost
        progress("%s: loading it again from the window the check step decided", lost)
        client.delete_table(ds.table_id(staged.staging_table), not_found_ok=True)  # a new incarnation, a new load
        staged = dataclasses.replace(restage(), stage_id=staged.stage_id)
        run_publish(staged)
    client.delete_table(ds.table_id(staged.staging_table), not_found_ok=True)
    # read for the log only: the same guard inside the transaction decided
    if next(iter(client.query(f"SELECT {_too_old(ds, load, staged)}", location=ds.location).result()))[0]:
        return PublishOutcome(0, False, f"not applied: a newer snapshot is published already; this "
                              f"{staged.load_mode} one is from {staged.snapshot_at}")  # fmt: skip
    return PublishOutcome(staged.rows, True, f"{staged.load_mode} publish of {staged.rows} staged rows applied")


def _too_old(ds: Dataset, load: TableLoad, staged: Staged) -> str:
    """The guard of rule 2 (docs/decisions/0008): a newer snapshot was published than this staging's."""
    state = ds.table_sql(STATE_TABLE)
    return sql.newer_snapshot(state, load.pipeline, load.destination.table, staged.load_mode, staged.snapshot_at)


def _submit_publish(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    job_id_now: str,
    progress: Callable[..., None],
) -> Any:
    staging_id = ds.table_id(staged.staging_table)
    target_id = ds.table_id(load.destination.table)
    try:
        staging = client.get_table(staging_id)
    except NotFound as exc:
        raise StagingLost(f"staging table {staging_id} is gone (dropped, or expired)") from exc
    found = _count(client, ds, staged.staging_table)
    if found != staged.rows:
        raise StagingLost(f"{staging_id} holds {found} rows, the load step wrote {staged.rows}")
    try:
        target = client.get_table(target_id)
    except NotFound:
        progress("creating %s with the mapped column types", target_id)
        target = bigquery.Table(target_id, schema=staging.schema)
        target.description = f"loaded by dagforge pipeline {load.pipeline}"
        client.create_table(target, exists_ok=True)
    else:
        follow_new_columns(client, target, staging.schema, ds.location, progress)
    ensure_state_table(client, ds)
    cursor_type = next((_field_type(f).field_type for f in staging.schema if f.name == load.cursor), None)
    script = publish_script(ds, load, staged, run_id, cursor_type)
    return client.query(script, job_id=job_id_now, location=ds.location, job_retry=None)


STANDARD_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
"""The REST API's legacy type names → standard SQL names."""


class SchemaChanged(TerminalError):
    """The source changed a column's type: BigQuery cannot follow that by itself."""


def follow_new_columns(
    client: bigquery.Client,
    target: Any,
    staged: list[bigquery.SchemaField],
    location: str | None,
    progress: Callable[..., None],
) -> None:
    """Columns the source gained are added to the target (NULL in existing rows); a column whose
    type changed stops the publish with the columns named (nothing is applied)."""
    existing = {field.name: _field_type(field) for field in target.schema}
    changed = [
        f"{field.name}: {old.field_type} {old.mode} → {new.field_type} {new.mode}"
        for field in staged
        if field.name in existing
        and ((old := existing[field.name]).field_type, old.mode) != ((new := _field_type(field)).field_type, new.mode)
    ]
    if changed:
        raise SchemaChanged(
            f"{target.full_table_id}: the source changed column types ({'; '.join(changed)}); BigQuery cannot "
            "convert them in place: migrate the table (or drop it and trigger with full_refresh), then clear this task"
        )
    added = [field for field in staged if field.name not in existing]
    if added:
        progress("adding column(s) %s to %s", ", ".join(f.name for f in added), target.full_table_id)
        columns = [(f.name, _field_type(f)) for f in added]
        table_sql = sql.ident(f"{target.project}.{target.dataset_id}.{target.table_id}")
        for statement in sql.add_columns(table_sql, columns):
            client.query(statement, location=location).result()


def _field_type(field: bigquery.SchemaField) -> BigQueryType:
    precision = int(field.precision) if field.precision is not None else None
    scale = int(field.scale) if field.scale is not None else None
    return BigQueryType(
        STANDARD_NAMES.get(field.field_type, field.field_type), field.mode or "NULLABLE", precision, scale
    )


def publish_script(ds: Dataset, load: TableLoad, staged: Staged, run_id: str, cursor_type: str | None = None) -> str:
    """The publish transaction; every statement carries the ordering rules (docs/decisions/0008)."""
    target, staging = ds.table_sql(load.destination.table), ds.table_sql(staged.staging_table)
    state_table = ds.table_sql(STATE_TABLE)
    full = staged.load_mode == LoadMode.FULL.value
    too_old = _too_old(ds, load, staged)
    if full:
        apply = sql.replace_all(target, staging, staged.columns, too_old)
    else:
        apply = [sql.merge_upsert(target, staging, staged.columns, load.primary_key, load.cursor, too_old)]
    state = sql.write_state(
        state_table,
        pipeline=load.pipeline,
        table_name=load.destination.table,
        cursor=load.cursor,
        cursor_type=cursor_type if load.cursor else None,
        watermark=staged.watermark if load.cursor else None,
        full=full,
        mode=load.mode.value,
        rows=staged.rows,
        run_id=run_id,
        snapshot_at=staged.snapshot_at,
        zone_digest=staged.zone_digest,
        skip_if=too_old,
    )
    return sql.transaction([*apply, state])
