"""Test-wide settings and the shared real services.

Airflow reads its configuration once, at first import, so the environment is set here, before any
test module can import it: a throwaway AIRFLOW_HOME, this repo's loader, no examples, no telemetry.
Below it, the session-wide servers (two PostgreSQL servers, S3, the GCP emulators) and the
per-test sandbox that the integration and fault suites share."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from dagforge.devservices.gcp import GcpEmulators, running_gcp
from dagforge.devservices.postgres import PostgresServer, running_postgres
from dagforge.devservices.s3 import S3Server, running_s3
from dagforge.devservices.stack import SEED_DIR
from dagforge.localrun import RunResult, prepare_airflow_env, run_pipeline
from dagforge.sql.postgres import fingerprint

# nothing imported above imports Airflow: the environment below is set before anything does

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ["AIRFLOW_HOME"] = os.environ.get("DAGFORGE_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="dagforge-af-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY"] = "False"
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"
os.environ["DO_NOT_TRACK"] = "1"  # dbt's anonymous usage stats, and Cosmos' too
os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)

# ---- real services, started once per session and shared by the integration and fault suites ----


@pytest.fixture(scope="session")
def pg_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    base = tmp_path_factory.mktemp("pg")
    with running_postgres("source", base) as source, running_postgres("target", base) as target:
        yield source, target


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def gcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcpEmulators]:
    """The GCS and BigQuery emulators, found by Google's clients through the environment."""
    base = tmp_path_factory.mktemp("gcp")
    with running_gcp(base, base) as emulators:
        saved = {name: os.environ.get(name) for name in emulators.environment()}
        os.environ.update(emulators.environment())
        try:
            yield emulators
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="session")
def airflow_db() -> None:
    prepare_airflow_env(Path(os.environ["AIRFLOW_HOME"]))


@dataclass
class Sandbox:
    """One test's world: a database on each server, connections, and a pipelines folder."""

    source_server: PostgresServer
    target_server: PostgresServer
    database: str
    pipelines_dir: Path
    connections: list[psycopg.Connection] = field(default_factory=list)

    def connect(self, which: str) -> psycopg.Connection:
        server = self.source_server if which == "source" else self.target_server
        conn = psycopg.connect(server.dsn(self.database), autocommit=True)
        self.connections.append(conn)
        return conn

    def write_pipeline(self, name: str, text: str) -> Path:
        path = self.pipelines_dir / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, dag_id: str, **kwargs) -> RunResult:
        return run_pipeline(dag_id, **kwargs)


@pytest.fixture
def sandbox(pg_servers, airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    source, target = pg_servers
    database = f"t_{uuid.uuid4().hex[:12]}"
    source.create_database(database)
    target.create_database(database)
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    monkeypatch.setenv("DAGFORGE_PIPELINES_DIR", str(pipelines))
    monkeypatch.setenv("AIRFLOW_CONN_SALES_SRC", source.airflow_conn_uri(database))
    monkeypatch.setenv("AIRFLOW_CONN_SALES_DWH", target.airflow_conn_uri(database))
    box = Sandbox(source, target, database, pipelines)
    yield box
    for conn in box.connections:
        conn.close()


@pytest.fixture
def examples_folder(tmp_path: Path) -> Path:
    """``tmp_path/pipelines`` with defaults.yml, two example pipelines (one with transforms) and their SQL
    and dbt project."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name in ("defaults.yml", "sales_pg_to_pg.yml", "flights_to_dwh.yml"):
        shutil.copy(REPO_ROOT / "pipelines" / name, folder / name)
    shutil.copytree(REPO_ROOT / "pipelines" / "transforms", folder / "transforms")
    shutil.copytree(REPO_ROOT / "pipelines" / "dbt" / "flights", folder / "dbt" / "flights")
    return folder


@pytest.fixture
def sales_sandbox(sandbox: Sandbox) -> Sandbox:
    """The sandbox with the example pipeline files and the seeded sales source."""
    for name in ("defaults.yml", "sales_pg_to_pg.yml"):
        shutil.copy(REPO_ROOT / "pipelines" / name, sandbox.pipelines_dir / name)
    sandbox.connect("source").execute((SEED_DIR / "sales.sql").read_text())
    return sandbox


def table_fingerprint(conn: psycopg.Connection, qualified_table: str) -> tuple[int, str | None]:
    """Row count and an md5 over every column of every row, independent of physical order."""
    return conn.execute(fingerprint(qualified_table)).fetchone()


def run_concurrently(calls: list, timeout: float = 120) -> list[BaseException]:
    """Start every call in a thread of its own at once, join them; the exceptions they raised."""
    import threading

    errors: list[BaseException] = []

    def guarded(call) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), f"a call was still running after {timeout:.0f} s"
    return errors


def wait_until(check, timeout: float, what: str, every: float = 0.005):
    """Poll ``check`` until it returns something truthy (returned); AssertionError after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def without_dbt(text: str) -> str:
    """A pipeline file's text without its dbt project (``transform.dbt``, as the examples write it):
    for tests of the loads, which run a DAG several times (each dbt model is a task of seconds; dbt
    has tests of its own). Text, not a YAML round trip: PyYAML would read ``on:`` as ``true``."""
    kept: list[str] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        if lines[index].rstrip() == "  dbt:":
            while kept and kept[-1].startswith("  #"):  # its comment
                kept.pop()
            index += 1
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
                index += 1
            continue
        kept.append(lines[index])
        index += 1
    return re.sub(r"^transform:\n(?=\S|\Z)", "", "".join(kept), flags=re.M)
