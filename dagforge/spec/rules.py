"""Cross-field rules the JSON Schema cannot express.

Each rule is a small function over the raw (merged) data that yields ``(key_path, message)``.
Rules run even when the schema found errors, so they read defensively: a rule never assumes a
key exists or has the right type. Add a rule by decorating it with :func:`rule`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from croniter import croniter

from dagforge.generate.tables import check_generated_tables
from dagforge.spec.yaml_source import KeyPath

Finding = tuple[KeyPath, str]
Rule = Callable[[dict[str, Any], Path], Iterator[Finding]]
RULES: list[Rule] = []

SCHEDULE_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"}
)


def rule(func: Rule) -> Rule:
    RULES.append(func)
    return func


def check_rules(data: Any, file: Path) -> list[Finding]:
    if not isinstance(data, dict):
        return []
    findings: list[Finding] = []
    for check in RULES:
        try:
            findings.extend(check(data, file))
        except Exception as exc:  # a rule bug must not turn into a traceback for the user
            findings.append(((), f"internal error in rule {check.__name__}: {exc!r} (please report it)"))
    return findings


def _is_generated(data: dict[str, Any]) -> bool:
    source = data.get("source")
    return isinstance(source, dict) and source.get("kind") == "generate"


def _copied_tables(data: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Tables read from a source (not generated), where mode, cursor and lookback apply."""
    if not _is_generated(data):
        yield from _tables(data)


def _tables(data: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    tables = data.get("tables")
    if isinstance(tables, list):
        for index, table in enumerate(tables):
            if isinstance(table, dict):
                yield index, table


@rule
def incremental_needs_cursor_and_key(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for index, table in _copied_tables(data):
        if table.get("mode") != "incremental":
            continue
        path = ("tables", index, "mode")
        if "cursor" not in table:
            yield (
                path,
                (
                    "mode 'incremental' needs 'cursor': the column that grows on insert and update "
                    "(e.g. cursor: updated_at); or use mode: full"
                ),
            )
        if "primary_key" not in table:
            yield path, "mode 'incremental' needs 'primary_key': the columns the upsert matches rows on"


STAGE_FORMATS_BY_DESTINATION = {"bigquery": ("parquet", "jsonl")}
"""Destination kind → the stage formats it can read (others read every format)."""


@rule
def stage_format_fits_destination(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    stage, destination = data.get("stage"), data.get("destination")
    if not isinstance(stage, dict) or not isinstance(destination, dict):
        return
    readable = STAGE_FORMATS_BY_DESTINATION.get(destination.get("kind"))
    fmt = stage.get("format", "parquet")
    if readable and fmt not in readable:
        yield (
            ("stage", "format"),
            f"a {destination['kind']} destination loads {' or '.join(readable)} files, not {fmt!r} "
            "(csv cannot carry arrays, JSON or bytes as BigQuery types)",
        )


@rule
def generated_tables_are_consistent(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    if _is_generated(data) and isinstance(data.get("tables"), list):
        yield from check_generated_tables(data["tables"])


@rule
def lookback_needs_incremental(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for index, table in _copied_tables(data):
        if "lookback" in table and table.get("mode", "full") != "incremental":
            yield ("tables", index, "lookback"), "'lookback' only applies to mode: incremental"


@rule
def table_names_unique(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for key, label in (("name", "table name"), ("target", "destination table")):
        seen: set[str] = set()
        for index, table in _tables(data):
            value = table.get(key, table.get("name")) if key == "target" else table.get(key)
            if not isinstance(value, str):
                continue
            if value in seen:
                yield ("tables", index, key if key in table else "name"), f"{label} {value!r} appears twice"
            seen.add(value)


@rule
def selected_columns_cover_keys(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for index, table in _copied_tables(data):
        columns = table.get("columns")
        if not isinstance(columns, list):
            continue
        needed = [table.get("cursor"), *(table.get("primary_key") or [])]
        for column in needed:
            if isinstance(column, str) and column not in columns:
                yield (
                    ("tables", index, "columns"),
                    f"'columns' must include {column!r} (cursor or primary key)",
                )


@rule
def schedule_is_valid(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    schedule = data.get("schedule")
    if not isinstance(schedule, str):
        return
    if schedule.startswith("@"):
        if schedule not in SCHEDULE_PRESETS:
            yield (
                ("schedule",),
                f"unknown preset {schedule!r}; use one of {', '.join(sorted(SCHEDULE_PRESETS))}",
            )
    elif not croniter.is_valid(schedule):
        yield ("schedule",), f"{schedule!r} is neither a cron expression nor a preset such as @daily"


@rule
def transforms_are_consistent(data: dict[str, Any], file: Path) -> Iterator[Finding]:
    transforms = data.get("transform")
    if not isinstance(transforms, list):
        return
    known = {t.get("name") for _, t in _tables(data)}
    graph: dict[str, list[str]] = {}
    for index, item in enumerate(transforms):
        if not isinstance(item, dict):
            continue
        known.add(item.get("name"))
        sql = item.get("sql")
        if isinstance(sql, str) and not (file.parent / sql).is_file():
            yield ("transform", index, "sql"), f"SQL file {sql!r} not found next to {file.name}"
    for index, item in enumerate(transforms):
        if isinstance(item, dict) and isinstance(item.get("depends_on"), list):
            graph[item.get("name")] = item["depends_on"]
            for dep_index, dep in enumerate(item["depends_on"]):
                if dep not in known:
                    yield (
                        ("transform", index, "depends_on", dep_index),
                        f"{dep!r} is not a table or transform here",
                    )
    cycle = _find_cycle(graph)
    if cycle:
        yield ("transform",), "transforms depend on each other in a cycle: " + " -> ".join(cycle)


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: Counter[str] = Counter()  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if state[node] == 1:
            return [*stack[stack.index(node) :], node]
        if state[node] == 2:
            return None
        state[node] = 1
        for dep in graph.get(node, []):
            found = visit(dep, [*stack, node])
            if found:
                return found
        state[node] = 2
        return None

    for start in graph:
        found = visit(start, [])
        if found:
            return found
    return None
