"""Transforms of two runs at once (a backfill at its default concurrency) creating the same schema
and tables: the one that loses the catalog race runs again instead of failing its task."""

from __future__ import annotations

import threading

import pytest

from dagforge.transform import run_postgres_transform
from tests.conftest import Sandbox, run_concurrently

pytestmark = pytest.mark.integration

SQL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.{table} (id int PRIMARY KEY);
DELETE FROM {schema}.{table};
INSERT INTO {schema}.{table} SELECT generate_series(1, 10);
"""


def test_transforms_racing_to_create_one_schema_all_succeed(sandbox: Sandbox) -> None:
    for round_ in range(8):
        schema = f"dwh_{round_}"
        start = threading.Barrier(4)
        conns = [sandbox.connect("target") for _ in range(4)]

        def transform(conn, table: str, schema: str = schema, start: threading.Barrier = start) -> None:
            start.wait()
            run_postgres_transform(conn, f"p.{table}", SQL.format(schema=schema, table=table))  # a lock per transform

        calls = [lambda c=c, i=i: transform(c, f"t{i % 2}") for i, c in enumerate(conns)]
        assert run_concurrently(calls) == []
        target = sandbox.connect("target")
        for table in ("t0", "t1"):
            assert target.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0] == 10
