"""Markdown the Airflow UI shows for a pipeline: the DAG doc and task group tooltips."""

from __future__ import annotations

from dagforge.spec.model import LoadMode, Pipeline, Table


def _endpoint_line(label: str, kind: str, connection: str | None, where: str | None) -> str:
    place = f", `{where}`" if where else ""
    return f"- **{label}:** {kind} (connection `{connection}`{place})"


def _table_row(table: Table) -> str:
    key = ", ".join(table.primary_key) or "—"
    cursor = table.cursor or "—"
    lookback = str(table.lookback) if table.lookback is not None else "—"
    return f"| `{table.name}` | `{table.target}` | {table.mode.value} | {cursor} | {lookback} | {key} |"


def dag_doc(pipeline: Pipeline, shape: str) -> str:
    source, destination = pipeline.source, pipeline.destination
    lines = [
        f"# {pipeline.id}",
        "",
        *([pipeline.description, ""] if pipeline.description else []),
        f"Defined in `{pipeline.file}` ({shape}). Edit the YAML, not this DAG.",
        "",
        _endpoint_line("Source", source.kind, source.connection, source.options.get("schema")),
        _endpoint_line("Destination", destination.kind, destination.connection, destination.options.get("schema")),
        "",
        "| table | destination | mode | cursor | lookback | primary key |",
        "|---|---|---|---|---|---|",
        *(_table_row(t) for t in pipeline.tables),
    ]
    return "\n".join(lines) + "\n"


def group_tooltip(pipeline: Pipeline, table: Table) -> str:
    if table.mode is LoadMode.INCREMENTAL:
        how = f"incremental on {table.cursor}, upsert by {', '.join(table.primary_key)}"
    else:
        how = "full replace"
    return f"{table.name} → {table.target}: {how}"
