"""The local stand-ins for the examples' services, with every connection the examples use set as
``AIRFLOW_CONN_*``: a source and a warehouse PostgreSQL server, an S3 server (for MinIO), GCS and
BigQuery emulators (for Google Cloud; ``STORAGE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST``
set too) and a webhook (for Slack). Used by ``make demo``, ``make airflow`` and the end-to-end test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dagforge.catalog import REPO_ROOT, Entry
from dagforge.devservices import tripdata
from dagforge.devservices.compare import (
    Comparison,
    bigquery_interval_counts,
    compare_bigquery,
    compare_files,
    compare_postgres,
)
from dagforge.devservices.gcp import GcpEmulators, running_gcp
from dagforge.devservices.http_files import FileServer
from dagforge.devservices.postgres import PostgresServer, running_postgres
from dagforge.devservices.s3 import S3Server, running_s3
from dagforge.devservices.webhook import WebhookReceiver, running_webhook
from dagforge.loadspec import TableLoad

SEED_DIR = REPO_ROOT / "compose" / "seed"
SOURCE_DB, WAREHOUSE_DB = "shop", "warehouse"
DATABASE_CONNECTIONS = {
    "sales_src": ("source", SOURCE_DB),
    "sales_dwh": ("warehouse", WAREHOUSE_DB),
    "library_db": ("source", SOURCE_DB),
    "library_dwh": ("warehouse", WAREHOUSE_DB),
    "flights_db": ("source", SOURCE_DB),
    "flights_dwh": ("warehouse", WAREHOUSE_DB),
    "olist_db": ("source", SOURCE_DB),
}
"""Connection id → (server, database); the same ids as compose/.env.example."""


@dataclass
class LocalStack:
    servers: dict[str, PostgresServer]
    s3: S3Server
    gcp: GcpEmulators
    slack: WebhookReceiver
    files: FileServer
    """Trip files over HTTP (the ``tlc_files`` connection): :data:`TRIP_MONTHS`."""

    def connect(self, conn_id: str) -> psycopg.Connection:
        role, database = DATABASE_CONNECTIONS[conn_id]
        return psycopg.connect(self.servers[role].dsn(database), autocommit=True)

    def compare(self, entry: Entry, load: TableLoad) -> Comparison:
        """A loaded table against its source, by the pipeline's destination kind."""
        assert entry.pipeline is not None
        destination = entry.pipeline.destination
        if load.source_kind == "http":  # a file table: each month it holds against that month's file
            from dagforge.spec.model import INTERVAL_COLUMN

            project = destination.options["project"]
            counts = bigquery_interval_counts(self.gcp.bigquery_client(project), project, load, INTERVAL_COLUMN)
            return compare_files(load, self.files.root, counts)
        with self.connect(load.source.connection) as source:
            if destination.kind == "bigquery":
                project = destination.options["project"]
                return compare_bigquery(source, self.gcp.bigquery_client(project), project, load)
            with self.connect(load.destination.connection) as target:
                return compare_postgres(source, target, load)

    def run_sql_files(self, files: list[Path]) -> None:
        with psycopg.connect(self.servers["source"].dsn(SOURCE_DB), autocommit=True) as conn:
            for file in files:
                print(f"seeding source from {file.relative_to(REPO_ROOT)}")
                conn.execute(file.read_text(encoding="utf-8"))

    def seed(self) -> None:
        self.run_sql_files(sorted(SEED_DIR.glob("*.sql")))

    def apply_changes(self) -> None:
        self.run_sql_files(sorted((SEED_DIR / "changes").glob("*.sql")))


TRIP_MONTHS = ((2024, 1, 3000), (2024, 2, 2500), (2024, 3, 2800))
"""(year, month, rows) of the trip files the stack serves."""


def serve_trip_files(stack: ExitStack, folder: Path) -> FileServer:
    folder.mkdir(parents=True, exist_ok=True)
    for year, month, rows in TRIP_MONTHS:
        tripdata.write_month(folder, year, month, rows)
    server = stack.enter_context(FileServer(folder))
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "schema": "http"}
    os.environ["AIRFLOW_CONN_TLC_FILES"] = json.dumps(conn)
    return server


@contextmanager
def local_stack(workdir: Path) -> Iterator[LocalStack]:
    """Start everything, create the databases, set the connections; stop everything at the end."""
    with ExitStack() as stack:
        servers = {role: stack.enter_context(running_postgres(role, workdir)) for role in ("source", "warehouse")}
        s3 = stack.enter_context(running_s3(workdir))
        gcp = stack.enter_context(running_gcp(workdir / "gcp", workdir))
        slack = stack.enter_context(running_webhook())
        for conn_id, (role, database) in DATABASE_CONNECTIONS.items():
            servers[role].create_database(database)
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = servers[role].airflow_conn_uri(database)
        os.environ["AIRFLOW_CONN_MINIO"] = s3.airflow_conn_uri()
        os.environ["AIRFLOW_CONN_SLACK_ALERTS"] = slack.airflow_conn_uri()
        os.environ["AIRFLOW_CONN_GCP"] = gcp.airflow_conn_uri()
        os.environ.update(gcp.environment())
        files = serve_trip_files(stack, workdir / "trip-files")
        yield LocalStack(servers, s3, gcp, slack, files)
