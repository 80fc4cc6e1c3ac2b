"""`dagforge run FILE` runs the pipeline once through dag.test() and reports task states."""

import os
import subprocess
import sys

import pytest

from tests.integration.conftest import Sandbox, table_fingerprint

pytestmark = pytest.mark.integration


def test_dagforge_run_loads_the_table(sales_sandbox: Sandbox) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagforge.cli", "run", str(sales_sandbox.pipelines_dir / "sales_pg_to_pg.yml")],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"},
        timeout=300,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "success  customers.publish_customers" in result.stdout
    assert ": success" in result.stdout.splitlines()[-1]
    source, target = sales_sandbox.connect("source"), sales_sandbox.connect("target")
    assert table_fingerprint(target, "reporting.customers") == table_fingerprint(source, "public.customers")


def test_dagforge_run_refuses_an_invalid_file(sandbox: Sandbox) -> None:
    path = sandbox.write_pipeline("bad.yml", "pipeline: bad\n")
    result = subprocess.run(
        [sys.executable, "-m", "dagforge.cli", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "bad.yml:1:1: <file>: missing required key 'source'" in result.stdout
