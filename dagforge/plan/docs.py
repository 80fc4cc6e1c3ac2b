"""Markdown the Airflow UI shows for a pipeline: the DAG doc and task group tooltips."""

from __future__ import annotations

from collections.abc import Callable

from dagforge.spec.model import Endpoint, LoadMode, Pipeline, Table

TableSection = Callable[[Pipeline], list[str]]


def _endpoint_line(label: str, endpoint: Endpoint) -> str:
    details = [f"connection `{endpoint.connection}`"] if endpoint.connection else []
    details += [
        f"`{endpoint.options[key]}`"
        for key in ("project", "dataset", "location", "schema", "locale")
        if key in endpoint.options
    ]
    return f"- **{label}:** {endpoint.kind}" + (f" ({', '.join(details)})" if details else "")


def load_table_section(pipeline: Pipeline) -> list[str]:
    """Tables copied from a source: mode, cursor, lookback, key."""

    def row(table: Table) -> str:
        key = ", ".join(table.primary_key) or "—"
        if "url" in table.spec:  # a file table: its URL where a cursor would be
            url = str(table.spec["url"]).replace("|", "\\|")
            return f"| `{table.name}` | `{table.target}` | {table.mode.value} | `{url}` | — | {key} |"
        lookback = str(table.lookback) if table.lookback is not None else "—"
        return (
            f"| `{table.name}` | `{table.target}` | {table.mode.value} | {table.cursor or '—'} | {lookback} | {key} |"
        )

    return [
        "| table | destination | mode | "
        + ("url" if pipeline.source.kind == "http" else "cursor")
        + " | lookback | primary key |",
        "|---|---|---|---|---|---|",
        *(row(t) for t in pipeline.tables),
    ]


def generated_table_section(pipeline: Pipeline) -> list[str]:
    """Generated tables: rows per run and how each column is made."""

    def row(table: Table) -> str:
        rows = table.spec["rows_per_run"]
        count = f"{rows['min']} to {rows['max']}" if isinstance(rows, dict) else str(rows)
        columns = ", ".join(f"{name} ({_generator_label(spec)})" for name, spec in table.spec["columns"].items())
        return f"| `{table.name}` | {count} | {columns} |"

    return ["| table | rows per run | columns |", "|---|---|---|", *(row(t) for t in pipeline.tables)]


def _generator_label(spec: dict) -> str:
    for kind in ("faker", "reference", "choice", "range", "template", "sequence"):
        if kind in spec:
            return f"{kind}: {spec[kind]}" if kind in ("faker", "reference") else kind
    return "?"


def _file_link(pipeline: Pipeline) -> str:
    if pipeline.source_url:
        return f"[`{pipeline.file}`]({pipeline.source_url}{pipeline.file})"
    return f"`{pipeline.file}`"


def dag_doc(pipeline: Pipeline, shape: str, tables: TableSection = load_table_section) -> str:
    lines = [
        f"# {pipeline.id}",
        "",
        *([pipeline.description, ""] if pipeline.description else []),
        f"Defined in {_file_link(pipeline)} ({shape}). Edit the YAML, not this DAG.",
        "",
        _endpoint_line("Source", pipeline.source),
        _endpoint_line("Destination", pipeline.destination),
        "",
        *tables(pipeline),
    ]
    return "\n".join(lines) + "\n"


def group_tooltip(pipeline: Pipeline, table: Table) -> str:
    how = {
        LoadMode.INCREMENTAL: f"incremental on {table.cursor}, upsert by {', '.join(table.primary_key)}",
        LoadMode.INTERVAL: "one file per interval, replacing that interval's rows",
        LoadMode.APPEND: "one file per interval, appended",
    }.get(table.mode, "full replace")
    if "url" in table.spec:
        how += f", from {table.spec['url']}"
    extras = []
    if table.deletes is not None or table.deleted_flag:
        flag = f" by {table.deleted_flag}" if table.deleted_flag else ""
        extras.append(f"deletes {(table.deletes.value if table.deletes else 'soft')}{flag}")
    if table.on_schema_change.value != "evolve":
        extras.append(f"schema changes: {table.on_schema_change.value}")
    if table.checks:
        extras.append(f"{len(table.checks)} check(s)")
    return f"{table.name} → {table.target}: {how}" + "".join(f"; {e}" for e in extras)
