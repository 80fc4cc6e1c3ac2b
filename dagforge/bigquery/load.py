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

from dagforge.bigquery import checks, drift, sql
from dagforge.bigquery.sql import Dataset
from dagforge.bigquery.types import BigQueryType, bigquery_type
from dagforge.contracts import (
    FILE_STATE_FIELDS,
    Manifest,
    ObjectMissing,
    PublishOutcome,
    Staged,
    StagingLost,
    TableState,
)
from dagforge.drift import Resolution, SchemaChangeRefused, resolve
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.spec.model import DELETED_AT, FILES_TABLE, INTERVAL_COLUMN, Deletes, LoadMode

log = logging.getLogger(__name__)

STATE_TABLE = "_dagforge_state"
STAGING_LIFETIME = dt.timedelta(days=1)
"""Staging tables left behind by a failed run expire by themselves."""
SOURCE_FORMATS = {"parquet": bigquery.SourceFormat.PARQUET, "jsonl": bigquery.SourceFormat.NEWLINE_DELIMITED_JSON}


SchemaChanged = SchemaChangeRefused
"""The name this module raised before the drift policies (docs/decisions/0007)."""

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


def schema_for(columns: list[dict[str, Any]]) -> list[bigquery.SchemaField]:
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
    missing = [(name, kind) for name, kind, _ in sql.STATE_COLUMNS if name not in have]
    for name, kind in missing:
        statement = f"ALTER TABLE {ds.table_sql(STATE_TABLE)} ADD COLUMN IF NOT EXISTS {sql.ident(name)} {kind}"
        client.query(statement, location=ds.location).result()
    if missing:
        wanted = [drift.Column(f.name, _field_type(f)) for f in table.schema]
        wanted += [drift.Column(name, BigQueryType(kind)) for name, kind in missing]
        sync_catalog(client, ds.table_id(STATE_TABLE), wanted)


def ensure_files_table(client: bigquery.Client, ds: Dataset) -> None:
    """Create ``_dagforge_files`` (file sources: which file each interval loaded) when missing."""
    fields = [bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in sql.FILES_COLUMNS]
    client.create_table(bigquery.Table(ds.table_id(FILES_TABLE), schema=fields), exists_ok=True)


def read_state(client: bigquery.Client, ds: Dataset, load: TableLoad, interval: str | None = None) -> TableState:
    """The table's state; with ``interval`` (a file source), also the file that interval loaded."""
    try:
        table = client.get_table(ds.table_id(STATE_TABLE))
    except NotFound:
        return TableState()
    if "key_digest" not in {field.name for field in table.schema}:  # written by an older version
        ensure_state_table(client, ds)
    query = sql.read_state(ds.table_sql(STATE_TABLE), load.pipeline, load.destination.table)
    rows = list(client.query(query, location=ds.location).result())
    state = TableState(*rows[0][:3]) if rows else TableState()
    if interval is None:
        return state
    try:
        client.get_table(ds.table_id(FILES_TABLE))
    except NotFound:
        return state
    query = sql.read_file(ds.table_sql(FILES_TABLE), load.pipeline, load.destination.table, interval)
    found = list(client.query(query, location=ds.location).result())
    return dataclasses.replace(state, file=dict(zip(FILE_STATE_FIELDS, found[0], strict=True)) if found else None)


def load_staging(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    manifest: Manifest,
    staging_table: str,
    run_id: str,
    progress: Callable[..., None] = log.info,
) -> Staged:
    """The manifest's parts → a staging table (replaced, typed by the map), verified by row count.

    A manifest with a key set (incremental deletes) also fills the key table beside it.
    """
    what = f"{load.pipeline}.{load.destination.table}, run {run_id}"

    def load_parts(parts: list[dict[str, Any]], columns: list[dict[str, Any]], table: str) -> int:
        step, kind = ("load", "staging") if table == staging_table else ("load_keys", "key set")
        return _load_parts(client, ds, manifest, parts, columns, table, job_id(ds, load, run_id, step),
                           f"dagforge {kind} for {what}", progress)  # fmt: skip

    return manifest.load_into(staging_table, load_parts, f"{ds.table_id(staging_table)}: the manifest")


def _load_parts(
    client: bigquery.Client,
    ds: Dataset,
    manifest: Manifest,
    parts: list[dict[str, Any]],
    columns: list[dict[str, Any]],
    table_name: str,
    base_id: str,
    description: str,
    progress: Callable[..., None],
) -> int:
    """``parts`` → the (expiring) table ``table_name`` by one load job; how many rows it holds."""
    schema = schema_for(columns)
    table = bigquery.Table(ds.table_id(table_name), schema=schema)
    table.expires = dt.datetime.now(dt.UTC) + STAGING_LIFETIME
    table.description = description
    table = client.create_table(table, exists_ok=True)
    # the table's creation time is part of the job id: a retry re-attaches to the job that filled
    # this table, while a table dropped since (published, expired) is filled by a new job
    incarnation = f"_{int(table.created.timestamp() * 1000)}" if table.created else ""
    uris = [part["uri"] for part in parts]
    if uris:
        config = _load_config(schema, manifest.format)

        def submit(current: str) -> Any:
            return client.load_table_from_uri(
                uris, ds.table_id(table_name), job_config=config, job_id=current, location=ds.location
            )

        size_mb = sum(part.get("bytes", 0) for part in parts) / 1e6
        progress("loading %d part(s), %.1f MB, %d rows from %s into %s", len(uris), size_mb,
                 sum(part["rows"] for part in parts), uris[0].rsplit("/", 1)[0] + "/",
                 ds.table_id(table_name))  # fmt: skip
        try:
            job = run_job(client, base_id + incarnation, submit, ds.location, progress)
        except NotFound as exc:  # a part the manifest lists is not in the bucket
            raise ObjectMissing(f"loading {ds.table_id(table_name)}: {exc}") from exc
        if getattr(job, "output_rows", None) is not None:  # WRITE_TRUNCATE: the table holds the job's rows
            return int(job.output_rows)
    return _count(client, ds, table_name)


def _load_config(schema: list[bigquery.SchemaField], file_format: str) -> bigquery.LoadJobConfig:
    config = bigquery.LoadJobConfig(
        schema=schema,
        source_format=SOURCE_FORMATS[file_format],
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
    )
    if file_format == "parquet":
        config.parquet_options = bigquery.ParquetOptions()
        config.parquet_options.enable_list_inference = True  # lists are REPEATED, not list.element
        # decimals wider than NUMERIC (38, 9) go to BIGNUMERIC columns instead of failing the load
        config.decimal_target_types = ["NUMERIC", "BIGNUMERIC", "STRING"]
    return config


def publish(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    progress: Callable[..., None] = log.info,
    restage: Callable[[], Staged] | None = None,
) -> PublishOutcome:
    """Staging → final table and the state row in one transaction; then staging is dropped, the
    destination is reconciled with the source and the table's ``checks:`` run (docs/decisions/0007).

    Staging (or its key set) that is gone or incomplete is rebuilt by ``restage`` first (same
    ``stage_id``). A failed check raises :class:`~dagforge.reconcile.ChecksFailed` after the commit.
    """
    base = publish_job_id(ds, load, run_id, staged)
    submitted: list[str] = []  # job ids this attempt submitted: none means an earlier attempt published

    def run_publish(staged: Staged) -> None:
        def submit(current: str) -> Any:
            job = _submit_publish(client, ds, load, staged, run_id, current, progress)
            submitted.append(current)
            return job

        run_job(client, base, submit, ds.location, progress)

    try:
        run_publish(staged)
    except StagingLost as lost:
        if restage is None:
            raise TerminalError(f"{lost}; clear the load task to load again") from lost
        progress("%s: loading it again from the window the check step decided", lost)
        _drop_staging(client, ds, staged)  # a new incarnation, a new load
        staged = dataclasses.replace(restage(), stage_id=staged.stage_id)
        run_publish(staged)
    _drop_staging(client, ds, staged)
    target = client.get_table(ds.table_id(load.destination.table))
    verdict = checks.after_publish(
        client, ds, load, staged, run_id, STATE_TABLE, {f.name for f in target.schema}, bool(submitted), progress,
        too_old=_too_old(ds, load, staged),
    )  # fmt: skip
    if not verdict.applied:
        return PublishOutcome(0, False, f"not applied: a newer snapshot is published already; this "
                              f"{staged.load_mode} one is from {staged.snapshot_at}")  # fmt: skip
    if verdict.record is not None:
        _record_reconciliation(client, ds, load, staged, run_id, verdict.record)
    if verdict.failure is not None:
        raise verdict.failure
    if LoadMode(staged.load_mode) is LoadMode.INTERVAL:
        return PublishOutcome(staged.rows, True, f"replaced interval {staged.interval} with {staged.rows} staged rows")
    return PublishOutcome(staged.rows, True, f"{staged.load_mode} publish of {staged.rows} staged rows applied")


def _record_reconciliation(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    text: str,
) -> None:
    """The reconciliation's results into the state row (a job of its own, after the publish's commit;
    its progress goes to this module's log, the task log has the results already)."""
    statement = sql.record_reconciliation(ds.table_sql(STATE_TABLE), load.pipeline, load.destination.table,
                                          staged.snapshot_at, text)  # fmt: skip
    label = (load.pipeline, load.destination.table, "reconcile")
    submit = lambda current: client.query(statement, job_id=current, location=ds.location, job_retry=None)  # noqa: E731
    run_job(client, job_id_for(ds, label, f"{run_id}|{staged.stage_id}"), submit, ds.location, log.info)


def _drop_staging(client: bigquery.Client, ds: Dataset, staged: Staged) -> None:
    for name in (staged.staging_table, staged.key_table):
        if name:
            client.delete_table(ds.table_id(name), not_found_ok=True)


def _too_old(ds: Dataset, load: TableLoad, staged: Staged) -> str:
    """The guard of rule 2 (docs/decisions/0008): a newer snapshot was published than this staging's
    (file sources under ``interval``/``append``: a newer read of the same interval, or for
    ``append`` the same file appended by another staging)."""
    if not staged.per_interval:
        state = ds.table_sql(STATE_TABLE)
        return sql.newer_snapshot(state, load.pipeline, load.destination.table, staged.load_mode, staged.snapshot_at)
    files, table, interval = ds.table_sql(FILES_TABLE), load.destination.table, staged.interval or ""
    newer = sql.newer_file(files, load.pipeline, table, interval, staged.snapshot_at)
    sha256 = (staged.source or {}).get("sha256")
    if LoadMode(staged.load_mode) is LoadMode.APPEND and sha256:
        return f"({newer} OR {sql.same_file_appended(files, load.pipeline, table, interval, sha256, staged.stage_id)})"
    return newer


def _submit_publish(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    job_id_now: str,
    progress: Callable[..., None],
) -> Any:
    staging = _staged_table(client, ds, staged.staging_table, staged.rows, "the load step wrote")
    if load.stages_keys(staged.load_mode):
        if not staged.key_table:
            raise StagingLost(f"{ds.table_id(staged.staging_table)} was staged without the source's key set")
        _staged_table(client, ds, staged.key_table, staged.key_rows or 0, "the key set held")
    staged_columns = [drift.Column(f.name, _field_type(f)) for f in staging.schema]
    soft = load.deletes_for(staged.load_mode) is Deletes.SOFT
    target_id = ds.table_id(load.destination.table)
    try:
        target = client.get_table(target_id)
    except NotFound:
        progress("creating %s with the mapped column types", target_id)
        schema = list(staging.schema)
        if soft:
            schema.append(bigquery.SchemaField(DELETED_AT, "TIMESTAMP"))
        target = bigquery.Table(target_id, schema=schema)
        target.description = f"loaded by dagforge pipeline {load.pipeline}"
        client.create_table(target, exists_ok=True)
        resolution, casts = Resolution(write=tuple(staged.columns)), {}
    else:
        resolution, casts = follow_schema(client, ds, load, target, staged_columns, soft, progress)
    ensure_state_table(client, ds)
    if staged.interval is not None:
        ensure_files_table(client, ds)
    types = {c.name: c.kind.field_type for c in staged_columns}
    flag_type = types.get(load.deleted_flag or "")
    script = publish_script(
        ds, load, staged, run_id, types.get(load.cursor or ""), resolution=resolution, casts=casts, flag_type=flag_type
    )
    return client.query(script, job_id=job_id_now, location=ds.location, job_retry=None)


def _staged_table(client: bigquery.Client, ds: Dataset, name: str, rows: int, wrote: str) -> Any:
    """A staging (or key) table that must hold ``rows`` rows; :class:`StagingLost` when it is gone or does not."""
    table_id = ds.table_id(name)
    try:
        table = client.get_table(table_id)
    except NotFound as exc:
        raise StagingLost(f"staging table {table_id} is gone (dropped, or expired)") from exc
    found = _count(client, ds, name)
    if found != rows:
        raise StagingLost(f"{table_id} holds {found} rows, {wrote} {rows}")
    return table


def follow_schema(
    client: bigquery.Client,
    ds: Dataset,
    load: TableLoad,
    target: Any,
    staged: list[drift.Column],
    soft: bool,
    progress: Callable[..., None],
) -> tuple[Resolution, dict[str, str]]:
    """The table's ``on_schema_change`` policy applied to the target, before anything is written.

    Raises :class:`~dagforge.drift.SchemaChangeRefused` (nothing changed) when the policy refuses;
    otherwise adds, widens and relaxes columns (and adds ``_dagforge_deleted_at`` for soft deletes)
    and returns the resolution and the casts the publish writes with.
    """
    columns = [drift.Column(f.name, _field_type(f)) for f in target.schema]
    resolution = resolve(
        load.on_schema_change, drift.type_texts(columns), drift.type_texts(staged), widens=drift.bigquery_widens,
        primary_key=load.primary_key, table=target.full_table_id.replace(":", "."),
    )  # fmt: skip
    for note in resolution.notes:
        progress("%s", note)
    table_sql = ds.table_sql(load.destination.table)
    statements = drift.ddl(table_sql, resolution, columns, staged)
    if soft:
        statements += drift.soft_delete_ddl(table_sql, {c.name: c for c in columns})
    if resolution.add:
        progress("adding column(s) %s to %s", ", ".join(c.column for c in resolution.add), target.full_table_id)
    for statement in statements:
        client.query(statement, location=ds.location).result()
    sync_catalog(client, ds.table_id(load.destination.table), drift.followed_schema(columns, resolution, staged, soft))
    return resolution, drift.casts(resolution, columns, staged)


def sync_catalog(client: bigquery.Client, table_id: str, wanted: list[drift.Column]) -> None:
    """Make the table's schema (the API's view) show what the DDL did, keeping every other field property.

    BigQuery shows DDL changes there already (nothing is sent); the emulator changes only the data.
    """
    table = client.get_table(table_id)
    have = {f.name: f for f in table.schema}
    fields, changed = [], False
    for column in wanted:
        field = have.pop(column.name, None)
        if field is not None and _field_type(field) == column.kind:
            fields.append(field)
        else:
            fields.append(bigquery.SchemaField.from_api_repr(column.kind.field(column.name)))
            changed = True
    if changed:
        table.schema = [*fields, *have.values()]
        client.update_table(table, ["schema"])


def _field_type(field: bigquery.SchemaField) -> BigQueryType:
    precision = int(field.precision) if field.precision is not None else None
    scale = int(field.scale) if field.scale is not None else None
    return drift.column_type(field.field_type, field.mode, precision, scale)


def publish_script(
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    cursor_type: str | None = None,
    *,
    resolution: Resolution | None = None,
    casts: dict[str, str] | None = None,
    flag_type: str | None = None,
) -> str:
    """The publish transaction; every statement carries the ordering rules (docs/decisions/0008)."""
    resolution = resolution or Resolution(write=tuple(staged.columns))
    full = staged.load_mode == LoadMode.FULL.value
    too_old = _too_old(ds, load, staged)
    apply = apply_statements(ds, load, staged, resolution, casts or {}, flag_type, too_old)
    state = sql.write_state(
        ds.table_sql(STATE_TABLE),
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
        schema_changes=resolution.record(),
        key_digest=staged.key_digest,
        knows_deletes=load.deletes_for(staged.load_mode) is not Deletes.NONE,
    )
    statements = [*apply, state]
    if staged.interval is not None:
        record = staged.file_record(load.pipeline, load.destination.table, run_id)
        statements.append(sql.write_file(ds.table_sql(FILES_TABLE), record, too_old))
    return sql.transaction(statements)


def apply_statements(
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    resolution: Resolution,
    casts: dict[str, str],
    flag_type: str | None,
    too_old: str,
) -> list[str]:
    """The data statements of a publish: replace, or upsert plus the deletes of the table's mode."""
    target, staging = ds.table_sql(load.destination.table), ds.table_sql(staged.staging_table)
    if staged.per_interval:  # a file source: replace the interval's rows, or add them
        insert = sql.insert_all(target, staging, list(resolution.write), too_old, casts)
        if LoadMode(staged.load_mode) is LoadMode.APPEND:
            return [insert]
        return [sql.delete_interval(target, INTERVAL_COLUMN, staged.interval or "", too_old), insert]
    full = staged.load_mode == LoadMode.FULL.value
    deletes = load.deletes_for(staged.load_mode)
    flagged = sql.flag_set("S", load.deleted_flag, flag_type) if load.deleted_flag and flag_type else None
    write = list(resolution.write)
    if full and deletes is Deletes.HARD:
        keep = f"NOT ({flagged})" if flagged else None
        return sql.replace_all(target, staging, write, too_old, casts=casts, keep_if=keep)
    deleted_at = sql.timestamp(staged.snapshot_at)
    soft_delete = None
    if deletes is Deletes.SOFT:
        soft_delete = sql.flagged_soft_delete(flagged, deleted_at) if flagged else sql.SoftDelete()
    merge = sql.merge_upsert(
        target, staging, write, load.primary_key, None if full else load.cursor, too_old, casts=casts,
        null_fill=resolution.null_fill, soft_delete=soft_delete,
        delete_flagged=flagged if deletes is Deletes.HARD else None,
    )  # fmt: skip
    keys = staging if full else (ds.table_sql(staged.key_table) if staged.key_table else None)
    if keys is None or deletes is Deletes.NONE or (full and deletes is not Deletes.SOFT):
        return [merge]
    # key-set deletes yield to any newer snapshot (rule 2): its key set is the newer truth
    state = ds.table_sql(STATE_TABLE)
    newer = sql.newer_snapshot(state, load.pipeline, load.destination.table, "full", staged.snapshot_at)
    if deletes is Deletes.HARD:
        return [merge, sql.delete_missing(target, keys, load.primary_key, newer)]
    return [merge, sql.mark_missing(target, keys, load.primary_key, deleted_at, newer)]
