"""The fault suite's tools: load steps in killable child processes, waits with deadlines, and the
checks every fault ends with (the table equals its source, no duplicate keys, no staging left,
the watermark at the source's newest cursor). Servers come from tests/conftest.py (shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.conftest import REPO_ROOT, Sandbox, table_fingerprint, wait_until

CHILD_TIMEOUT_S = 120


@dataclass
class Child:
    """One step running in its own process (``tests.faults.child``)."""

    process: subprocess.Popen
    step: str

    @classmethod
    def start(cls, spec: dict[str, Any]) -> Child:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.child", json.dumps(spec, default=str)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        return cls(process, spec["step"])

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost node does: no cleanup, no rollback from the client."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def result(self, timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
        """The step's result; AssertionError with its stderr when it failed."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.step} did not finish within {timeout:.0f} s") from None
        assert self.process.returncode == 0, f"{self.step} failed:\n{err[-3000:]}"
        self.stderr = err
        return json.loads(out.strip().splitlines()[-1])

    def failure(self, timeout: float = CHILD_TIMEOUT_S) -> str:
        """The step's stderr; AssertionError when it succeeded."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode != 0, f"{self.step} succeeded, a failure was expected: {out}"
        return err


def run_step(spec: dict[str, Any], timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
    return Child.start(spec).result(timeout)


def query_one(dsn: str, sql: str, params: Any = None) -> Any:
    """One value, on a fresh connection (servers restart in these tests; cached connections break)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        return row[0] if row else None


def child_backends(dsn: str) -> int:
    return query_one(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dagforge-fault-child' AND pid <> 0"
    )


def wait_for_no_child_backends(box: Sandbox, timeout: float = 30) -> None:
    """Until the servers noticed the killed client and rolled its transactions back."""
    for server in (box.source_server, box.target_server):
        dsn = server.dsn(box.database)
        wait_until(lambda dsn=dsn: child_backends(dsn) == 0, timeout, "the killed step's sessions to end", 0.05)


def target_state(box: Sandbox, table: str) -> tuple:
    """(fingerprint, watermark) of a destination table: what a fault must leave as it was."""
    with psycopg.connect(box.target_server.dsn(box.database), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"dst.{table}",)).fetchone()[0]
        fingerprint = table_fingerprint(conn, f"dst.{table}") if exists else None
        row = conn.execute(
            "SELECT watermark FROM dst._dagforge_state WHERE table_name = %s", (table,)
        ).fetchone() if conn.execute("SELECT to_regclass('dst._dagforge_state')").fetchone()[0] else None  # fmt: skip
    return fingerprint, row[0] if row else None


def assert_converged(box: Sandbox, table: str, cursor: str | None, key: str = "id") -> None:
    """The destination table equals its source; no duplicate keys; no staging table left; the
    watermark (as the cursor's type) equals the source's newest cursor value."""
    source_dsn, target_dsn = box.source_server.dsn(box.database), box.target_server.dsn(box.database)
    with psycopg.connect(source_dsn, autocommit=True) as source, psycopg.connect(target_dsn, autocommit=True) as target:
        assert table_fingerprint(target, f"dst.{table}") == table_fingerprint(source, f"src.{table}")
        rows, keys = target.execute(f"SELECT count(*), count(DISTINCT {key}) FROM dst.{table}").fetchone()
        assert rows == keys
        staging = target.execute(
            "SELECT array_agg(tablename) FROM pg_tables "
            "WHERE tablename LIKE '\\_dagforge\\_stg%' OR tablename LIKE '\\_dagforge\\_key%'"
        )
        assert staging.fetchone()[0] is None
        if cursor:
            newest = source.execute(f"SELECT max({cursor}) FROM src.{table}").fetchone()[0]
            cursor_type = source.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = %s", (f"src.{table}", cursor)
            ).fetchone()[0]  # fmt: skip
            watermark = target.execute(
                f"SELECT watermark::{cursor_type} FROM dst._dagforge_state WHERE table_name = %s", (table,)
            ).fetchone()[0]
            assert watermark == newest
