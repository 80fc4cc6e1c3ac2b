"""Drive one table load at a Postgres destination through any Postgres shape: direct, or staged in
S3 as Parquet, CSV or JSON lines. The step functions the operators call, on plain connections."""

from __future__ import annotations

import uuid

import pytest

from dagforge.contracts import PublishOutcome, Staged
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import extract, load_staged, run_prefix
from dagforge.stage.s3_store import S3Store
from dagforge.transfer import postgres_load
from tests.conftest import Sandbox

POSTGRES_SHAPES = ("direct", "parquet", "csv", "jsonl")
"""Every way rows reach a Postgres destination: a direct COPY, or each stage format through S3."""


def make_load(table: str, mode: LoadMode = LoadMode.INCREMENTAL, **extra) -> TableLoad:
    if mode is LoadMode.INCREMENTAL:
        extra.setdefault("cursor", "updated_at")
    return TableLoad("p", TableRef("src", "src", table), TableRef("dst", "dst", table), mode, ("id",), **extra)


class Loads:
    """check → stage (or extract → load) → publish for one shape, on the sandbox's two servers."""

    def __init__(self, box: Sandbox, shape: str, store: S3Store | None):
        self.box, self.shape, self.store = box, shape, store

    def stage(self, load: TableLoad, run_id: str) -> Staged | None:
        """The check and stage steps; None when the check finds nothing new."""
        source, target = self.box.connect("source"), self.box.connect("target")
        window = postgres_load.decide_window(PostgresSource(source), target, load)
        if not window.new_rows:
            return None
        if self.store is None:
            staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table(run_id))
            return staged
        prefix = run_prefix("raw", load, run_id)
        extract(PostgresSource(source), load, window, self.store, prefix, self.shape, run_id)
        return load_staged(target, load, self.store, prefix, load.staging_table(run_id))

    def publish(self, load: TableLoad, staged: Staged, run_id: str) -> PublishOutcome:
        return postgres_load.publish(self.box.connect("target"), load, staged, run_id)

    def run(self, load: TableLoad, run_id: str | None = None) -> PublishOutcome | None:
        run_id = run_id or f"manual__{uuid.uuid4().hex[:8]}"
        staged = self.stage(load, run_id)
        return self.publish(load, staged, run_id) if staged else None


@pytest.fixture(params=POSTGRES_SHAPES)
def loads(request: pytest.FixtureRequest, sandbox: Sandbox) -> Loads:
    store = None
    if request.param != "direct":
        store = S3Store(request.getfixturevalue("s3_server").client(), f"b-{uuid.uuid4().hex[:10]}")
    sandbox.connect("source").execute("CREATE SCHEMA src")
    return Loads(sandbox, request.param, store)
