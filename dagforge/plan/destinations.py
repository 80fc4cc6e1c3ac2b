"""What the plan needs to know per destination kind: where tables live and how transforms run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagforge.bigquery import sql as bigquery_sql
from dagforge.spec.model import Endpoint, Pipeline
from dagforge.sql.postgres import qualified


@dataclass(frozen=True)
class DestinationKind:
    namespace: Callable[[Endpoint], str]
    """The schema (Postgres) or dataset (BigQuery) the tables are loaded into."""
    transform_operator: str
    transform_arguments: Callable[[Pipeline], dict[str, Any]]
    """Operator arguments shared by every transform task (connection, template context)."""
    doc: str
    """Where a transform runs, for its task doc."""
    dbt_profile: Callable[[Endpoint], dict[str, Any]] = lambda endpoint: {}
    """What a dbt profile needs of the destination beyond its connection and schema (:mod:`dagforge.plan.dbt`)."""


def _postgres_transforms(pipeline: Pipeline) -> dict[str, Any]:
    schema = postgres_namespace(pipeline.destination)
    return {
        "connection": pipeline.destination.connection,
        "template_context": {
            "pipeline": pipeline.id,
            "schema": schema,
            "tables": {t.name: qualified(schema, t.target) for t in pipeline.tables},
        },
    }


def postgres_namespace(endpoint: Endpoint) -> str:
    return endpoint.options.get("schema", "public")


def warehouse(endpoint: Endpoint) -> dict[str, Any]:
    """A BigQuery destination block as the operators take it."""
    options = endpoint.options
    return {
        "connection": endpoint.connection,
        "project": options["project"],
        "dataset": options["dataset"],
        "location": options.get("location"),
    }


def _bigquery_transforms(pipeline: Pipeline) -> dict[str, Any]:
    options = pipeline.destination.options
    project, dataset = options["project"], options["dataset"]
    return {
        "warehouse": warehouse(pipeline.destination),
        "template_context": {
            "pipeline": pipeline.id,
            "project": project,
            "dataset": dataset,
            "tables": {t.name: bigquery_sql.table(project, dataset, t.target) for t in pipeline.tables},
        },
    }


DESTINATIONS: dict[str, DestinationKind] = {
    "postgres": DestinationKind(
        postgres_namespace,
        "operators.postgres.PostgresTransformOperator",
        _postgres_transforms,
        "in the destination, in one transaction",
    ),
    "bigquery": DestinationKind(
        lambda endpoint: endpoint.options["dataset"],
        "operators.bigquery.BigQueryTransformOperator",
        _bigquery_transforms,
        "in BigQuery as one script job",
        lambda endpoint: {k: endpoint.options[k] for k in ("project", "location") if endpoint.options.get(k)},
    ),
}
"""destination.kind → how the plan treats it."""
