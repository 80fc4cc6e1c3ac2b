"""The integration suite's fixtures: most live in tests/conftest.py (shared with the fault suite);
``loads`` (one table load through each Postgres shape) in tests/integration/loads.py; ``world``
(a source schema, a bucket and a BigQuery dataset per test) here."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dagforge.devservices.gcp import PROJECT, GcpEmulators
from tests.conftest import REPO_ROOT, SEED_DIR, Sandbox, table_fingerprint
from tests.integration.loads import loads

__all__ = ["REPO_ROOT", "SEED_DIR", "Sandbox", "loads", "table_fingerprint", "world"]


@pytest.fixture
def world(sandbox: Sandbox, gcp: GcpEmulators) -> dict[str, Any]:
    """A source schema, a fresh bucket and a fresh dataset for this test."""
    from dagforge.bigquery import load as bq
    from dagforge.stage.gcs_store import GCSStore

    sandbox.connect("source").execute("CREATE SCHEMA src")
    suffix = uuid.uuid4().hex[:10]
    client = gcp.bigquery_client()
    dataset = bq.Dataset(PROJECT, f"d_{suffix}", "US")
    bq.create_dataset(client, dataset)
    return {
        "source": sandbox.connect("source"),
        "client": client,
        "dataset": dataset,
        "store": GCSStore(gcp.storage_client(), f"b-{suffix}"),
    }
