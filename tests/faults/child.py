"""One load step in a process of its own, as an Airflow task process runs it, so a test can kill it
with SIGKILL at the moment it chooses. ``python -m tests.faults.child '<json spec>'`` prints the
step's result as one JSON line; the spec names the step (:data:`STEPS`) and what it needs:
``load`` (TableLoad.to_dict), ``source`` and ``target`` DSNs, ``run_id``, ``window`` or ``staged``,
and for object storage ``store`` (``kind``, ``bucket``, ``endpoint`` for S3), ``format``,
``rows_per_part``, ``encoding``; for BigQuery ``dataset`` (project, dataset, location); for a file
source ``http`` (``base`` URL, ``backoff``) and ``run`` (the run's data interval, :class:`RunInfo`).

The steps call the same functions as the operators, with the same retry composition (staging
rebuilt from the window, files extracted again), on plain connections instead of Airflow hooks.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from dagforge.contracts import RunInfo, Source, Staged, Window
from dagforge.loadspec import TableLoad
from dagforge.sources.postgres import PostgresSource
from dagforge.stage.extract_load import ObjectStore, extract, load_staged, read_manifest, run_prefix, with_extract_again
from dagforge.transfer import postgres_load


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, application_name="dagforge-fault-child")


def _store(spec: dict[str, Any]) -> ObjectStore:
    store = spec["store"]
    if store["kind"] == "s3":
        import boto3

        from dagforge.stage.s3_store import S3Store

        client = boto3.client("s3", endpoint_url=store["endpoint"], aws_access_key_id="x", aws_secret_access_key="x",
                              region_name="us-east-1")  # fmt: skip
        return S3Store(client, store["bucket"])
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from dagforge.stage.gcs_store import GCSStore

    return GCSStore(storage.Client(project="test", credentials=AnonymousCredentials()), store["bucket"])


class Step:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.load = TableLoad.from_dict(spec["load"])
        self.run_id = spec["run_id"]
        self.staging = self.load.staging_table(self.run_id)

    def source(self) -> psycopg.Connection:
        return _connect(self.spec["source"])

    @contextlib.contextmanager
    def open_source(self) -> Iterator[Source]:
        """The step's source kind: Postgres on the source DSN, or HTTP files at ``http.base``."""
        if self.load.source_kind == "http":
            from dagforge.sources.http import HttpEndpoint, HttpSource

            http = self.spec["http"]
            source = HttpSource(HttpEndpoint(http["base"]), backoff=http.get("backoff", 0.01))
            try:
                yield source
            finally:
                source.close()
            return
        with self.source() as conn:
            yield PostgresSource(conn)

    @property
    def run(self) -> RunInfo:
        return RunInfo(**self.spec.get("run", {"run_id": self.run_id}))

    def target(self) -> psycopg.Connection:
        return _connect(self.spec["target"])

    def window(self) -> Window:
        return Window.from_dict(self.spec["window"])

    def staged(self) -> Staged:
        return Staged.from_dict(self.spec["staged"])

    # ---- object storage ----
    @property
    def prefix(self) -> str:
        return run_prefix("raw", self.load, self.run_id)

    def extract(self, window: Window) -> Any:
        spec = self.spec
        with self.open_source() as source:
            return extract(source, self.load, window, _store(spec), self.prefix,
                           spec.get("format", "parquet"),
                           self.run_id, rows_per_part=spec.get("rows_per_part", 500_000),
                           encoding=spec.get("encoding", "postgres"))  # fmt: skip

    def load_from_store(self, target: psycopg.Connection, window: Window) -> Staged:
        store = _store(self.spec)
        return with_extract_again(
            lambda: load_staged(target, self.load, store, self.prefix, self.staging),
            lambda: self.extract(window),
            self.load.source.table,
        )

    # ---- BigQuery ----
    def bigquery(self) -> tuple[Any, Any]:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        from dagforge.bigquery import load as bq

        ds = bq.Dataset.from_dict(self.spec["dataset"])
        options = ClientOptions(api_endpoint=self.spec["bigquery_endpoint"])
        client = bigquery.Client(project=ds.project, credentials=AnonymousCredentials(), client_options=options)
        return client, ds

    def bigquery_staging(self, window: Window) -> Staged:
        from dagforge.bigquery import load as bq

        client, ds = self.bigquery()
        store = _store(self.spec)

        def load_parts() -> Staged:
            manifest = read_manifest(store, self.prefix)
            return bq.load_staging(client, ds, self.load, manifest, self.staging, self.run_id)

        return with_extract_again(load_parts, lambda: self.extract(window), self.load.source.table)


def _check(step: Step) -> dict:
    with step.open_source() as source, step.target() as target:
        return postgres_load.decide_window(
            source, target, step.load, force_full=step.spec.get("force_full", False), run=step.run
        ).to_dict()


def _split(step: Step) -> dict:
    """The chunk windows of ``chunks:`` for the check's window (what the chunked check pushes)."""
    with step.source() as source:
        return {"chunks": [w.to_dict() for w in PostgresSource(source).split(step.load, step.window())]}


def _stage(step: Step) -> dict:
    with step.source() as source, step.target() as target:
        return postgres_load.stage(PostgresSource(source), target, step.load, step.window(), step.staging)[0].to_dict()


def _publish(step: Step) -> dict:
    staged = step.staged()
    with step.target() as target:

        def restage() -> Staged:
            with step.source() as source:
                return postgres_load.restage_direct(PostgresSource(source), target, step.load, staged)

        return vars(postgres_load.publish(target, step.load, staged, step.run_id, restage))


def _extract(step: Step) -> dict:
    manifest = step.extract(step.window())
    return {"rows": manifest.rows, "parts": len(manifest.parts), "window": step.spec["window"]}


def _load(step: Step) -> dict:
    with step.target() as target:
        return step.load_from_store(target, step.window()).to_dict()


def _publish_from_store(step: Step) -> dict:
    staged = step.staged()
    with step.target() as target:
        outcome = postgres_load.publish(
            target, step.load, staged, step.run_id, lambda: step.load_from_store(target, staged.source_window)
        )
        return vars(outcome)


def _bigquery_load(step: Step) -> dict:
    return step.bigquery_staging(step.window()).to_dict()


def _bigquery_publish(step: Step) -> dict:
    from dagforge.bigquery import load as bq

    client, ds = step.bigquery()
    staged = step.staged()
    outcome = bq.publish(client, ds, step.load, staged, step.run_id,
                         restage=lambda: step.bigquery_staging(staged.source_window))  # fmt: skip
    return vars(outcome)


def _run_direct(step: Step) -> dict:
    """A whole run of one Postgres → Postgres table: check, stage, publish (each retried once on a
    transient error, as Airflow's retries would)."""
    window = Window.from_dict(_retried(lambda: _check(step)))
    if not window.new_rows:
        return {"skipped": True}
    staged = _retried(lambda: _stage(Step({**step.spec, "window": window.to_dict()})))
    return _retried(lambda: _publish(Step({**step.spec, "staged": staged})))


def _run_store(step: Step) -> dict:
    """A whole run of one table through object storage: check, extract, load, publish."""
    window = Window.from_dict(_retried(lambda: _check(step)))
    if not window.new_rows:
        return {"skipped": True}
    with_window = Step({**step.spec, "window": window.to_dict()})
    _retried(lambda: _extract(with_window))
    staged = _retried(lambda: _load(with_window))
    return _retried(lambda: _publish_from_store(Step({**step.spec, "staged": staged})))


def _retried(fn: Callable[[], dict], attempts: int = 3) -> dict:
    for attempt in range(attempts):
        try:
            return fn()
        except psycopg.OperationalError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


STEPS: dict[str, Callable[[Step], dict]] = {
    "check": _check,
    "split": _split,
    "stage": _stage,
    "publish": _publish,
    "extract": _extract,
    "load": _load,
    "publish_from_store": _publish_from_store,
    "bigquery_load": _bigquery_load,
    "bigquery_publish": _bigquery_publish,
    "run_direct": _run_direct,
    "run_store": _run_store,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = STEPS[spec["step"]](Step(spec))
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
