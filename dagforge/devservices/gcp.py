"""Google Cloud stand-ins on 127.0.0.1: a GCS emulator and a BigQuery emulator sharing its files.

Both run from their own virtualenv (``make install`` builds ``.venv-emulators`` from
``requirements-emulators.txt``; their pins clash with Airflow's). Clients find them through
configuration only, the variables Google's libraries read: ``STORAGE_EMULATOR_HOST`` and
``BIGQUERY_EMULATOR_HOST`` (:meth:`GcpEmulators.environment`), with an anonymous
``google_cloud_platform`` connection (:meth:`GcpEmulators.airflow_conn_uri`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagforge.catalog import REPO_ROOT
from dagforge.devservices.process import ChildServer, free_port, start_http_server

PROJECT = "dagforge-local"
"""The project id the examples use; the emulator serves any."""


def emulators_bin() -> Path:
    venv = Path(os.environ.get("DAGFORGE_EMULATORS_VENV", REPO_ROOT / ".venv-emulators"))
    binary = venv / "bin"
    if not (binary / "bqemulator").exists():
        raise RuntimeError(f"no GCP emulators in {venv}: run `make install` (it builds that virtualenv)")
    return binary


@dataclass
class GcpEmulators:
    gcs: ChildServer
    bigquery: ChildServer
    data_dir: Path

    def environment(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.gcs.url, "BIGQUERY_EMULATOR_HOST": self.bigquery.url}

    def airflow_conn_uri(self, project: str = PROJECT) -> str:
        """A ``google_cloud_platform`` connection with anonymous credentials (JSON form)."""
        extra = {"is_anonymous": True, "project": project}
        return json.dumps({"conn_type": "google_cloud_platform", "extra": extra})

    def bigquery_client(self, project: str = PROJECT):
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        options = ClientOptions(api_endpoint=self.bigquery.url)
        return bigquery.Client(project=project, credentials=AnonymousCredentials(), client_options=options)

    def storage_client(self, project: str = PROJECT):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.gcs.url}
        )

    def stop(self) -> None:
        self.bigquery.stop()
        self.gcs.stop()


def start_gcp(workdir: Path, log_dir: Path | None = None) -> GcpEmulators:
    """Start both emulators (about 5 s); BigQuery reads ``gs://`` URIs from the GCS emulator's files."""
    binary = emulators_bin()
    data_dir = workdir / "gcs"
    home = workdir / "bigquery-home"
    bigquery_data = workdir / "bigquery-data"
    bigquery_data.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    gcs_port, bq_port, grpc_port = free_port(), free_port(), free_port()
    gcs = start_http_server(
        "gcs",
        [
            str(binary / "gcp-storage-emulator"),
            "-d",
            str(data_dir),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(gcs_port),
        ],
        gcs_port,
        log_dir=log_dir,
    )
    # bqemulator insists on DuckDB's spatial extension; install the wheel's copy under its HOME
    # (nothing may download at run time)
    env = {**os.environ, "HOME": str(home), "BQEMU_GCS_LOCAL_ROOT": str(data_dir / ".cloudstorage")}
    subprocess.run(
        [
            str(binary / "python"),
            "-c",
            "import duckdb, duckdb_extensions as e; e.import_extension('spatial', con=duckdb.connect())",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        bigquery = start_http_server(
            "bigquery",
            [str(binary / "bqemulator"), "start", "--rest-host", "127.0.0.1", "--rest-port", str(bq_port),
             "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port), "--project", PROJECT, "--log-level", "warning",
             # durable, as BigQuery is: a restarted emulator keeps its datasets and tables
             "--persistent", "--data-dir", str(bigquery_data)],
            bq_port,
            probe_path=f"/bigquery/v2/projects/{PROJECT}/datasets",
            log_dir=log_dir,
            env=env,
        )  # fmt: skip
    except BaseException:
        gcs.stop()
        raise
    return GcpEmulators(gcs, bigquery, data_dir)


@contextmanager
def running_gcp(workdir: Path, log_dir: Path | None = None) -> Iterator[GcpEmulators]:
    emulators = start_gcp(workdir, log_dir)
    try:
        yield emulators
    finally:
        emulators.stop()
