"""Cross-field rules the JSON Schema cannot express.

Each rule is a small function over the raw (merged) data that yields ``(key_path, message)``.
Rules run even when the schema found errors, so they read defensively: a rule never assumes a
key exists or has the right type. Add a rule by decorating it with :func:`rule`.
"""

from __future__ import annotations

import difflib
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
def deletes_are_consistent(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for index, table in _copied_tables(data):
        mode, deletes, flag = table.get("mode", "full"), table.get("deletes"), table.get("deleted_flag")
        keyed = bool(table.get("primary_key"))
        if deletes in ("soft", "none") and mode == "full" and not keyed:
            yield (
                ("tables", index, "deletes"),
                f"deletes: {deletes} in mode full keeps rows the source no longer has, so it matches rows by "
                "'primary_key': add one, or use deletes: hard (replace the table)",
            )
        if deletes in ("hard", "soft") and mode == "incremental" and not keyed:
            yield (
                ("tables", index, "deletes"),
                f"deletes: {deletes} compares the source's keys with the destination's: add 'primary_key'",
            )
        if flag is None:
            continue
        if mode != "incremental":
            yield (
                ("tables", index, "deleted_flag"),
                "'deleted_flag' applies to mode: incremental (a full load sees every row; use deletes: soft)",
            )
        if deletes == "none":
            yield (
                ("tables", index, "deleted_flag"),
                "'deleted_flag' marks rows to delete, but deletes: none keeps them: use deletes: hard or soft",
            )
        if flag in (table.get("primary_key") or []) or flag == table.get("cursor"):
            yield ("tables", index, "deleted_flag"), f"'deleted_flag' {flag!r} cannot be the cursor or a key column"


@rule
def named_columns_are_selected(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    """deleted_flag and the columns of checks must be among 'columns' when the table selects some."""
    for index, table in _copied_tables(data):
        columns = table.get("columns")
        if not isinstance(columns, list):
            continue
        flag = table.get("deleted_flag")
        if isinstance(flag, str) and flag not in columns:
            yield ("tables", index, "deleted_flag"), f"'columns' must include the deleted_flag {flag!r}"
        for number, check in enumerate(table.get("checks") or []):
            for kind in ("not_null", "unique"):
                named = check.get(kind) if isinstance(check, dict) else None
                for position, column in enumerate(named if isinstance(named, list) else []):
                    if isinstance(column, str) and column not in columns:
                        yield (
                            ("tables", index, "checks", number, kind, position),
                            f"{column!r} is not among the table's 'columns'"
                            + _did_you_mean(column, [c for c in columns if isinstance(c, str)]),
                        )


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


CHECK_KINDS = ("min_rows", "not_null", "unique")


@rule
def one_kind_per_check(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    for index, table in _tables(data):
        checks = table.get("checks")
        for number, check in enumerate(checks if isinstance(checks, list) else []):
            if not isinstance(check, dict):
                continue
            kinds = [k for k in CHECK_KINDS if k in check]
            if len(kinds) != 1:
                found = f"it has {' and '.join(kinds)}" if kinds else "it has none"
                yield (
                    ("tables", index, "checks", number),
                    f"a check needs exactly one of {', '.join(CHECK_KINDS)} ({found}); write one check per item",
                )


@rule
def copy_keys_only_on_copied_tables(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    if not _is_generated(data):
        return
    for index, table in _tables(data):
        for key in ("deletes", "deleted_flag", "checks", "on_schema_change"):
            if key in table:
                yield ("tables", index, key), f"'{key}' applies to tables copied from a source, not generated ones"


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


def _sql_transforms(data: dict[str, Any]) -> tuple[Any, KeyPath]:
    """The SQL transforms as written (the list, or the ``sql`` of the mapping form) and their key path."""
    transforms = data.get("transform")
    if isinstance(transforms, dict):
        return transforms.get("sql"), ("transform", "sql")
    return transforms, ("transform",)


@rule
def transforms_are_consistent(data: dict[str, Any], file: Path) -> Iterator[Finding]:
    transforms, at = _sql_transforms(data)
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
            yield (*at, index, "sql"), f"SQL file {sql!r} not found next to {file.name}"
    for index, item in enumerate(transforms):
        if isinstance(item, dict) and isinstance(item.get("depends_on"), list):
            graph[item.get("name")] = item["depends_on"]
            for dep_index, dep in enumerate(item["depends_on"]):
                if dep not in known:
                    yield (*at, index, "depends_on", dep_index), f"{dep!r} is not a table or transform here"
    cycle = _find_cycle(graph)
    if cycle:
        yield at, "transforms depend on each other in a cycle: " + " -> ".join(cycle)


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


def _is_http(data: dict[str, Any]) -> bool:
    source = data.get("source")
    return isinstance(source, dict) and source.get("kind") == "http"


@rule
def http_source_stages_parquet(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    """A file source writes typed Parquet parts into object storage: a stage block, format parquet."""
    if not _is_http(data):
        return
    stage = data.get("stage")
    if not isinstance(stage, dict):
        yield (
            ("source", "kind"),
            (
                "an http source stages its files in object storage first: add a stage block "
                "(kind: gcs or s3, connection, bucket)"
            ),
        )
    elif stage.get("format", "parquet") != "parquet":
        yield ("stage", "format"), f"an http source writes typed parquet parts, not {stage.get('format')!r}"


@rule
def file_tables_are_consistent(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    """URL templates use known names, the format is known, every column type exists, keys are columns."""
    if not _is_http(data):
        return
    from dagforge.plan.shapes import file_format
    from dagforge.sources.http_urls import template_problems

    for index, table in _tables(data):
        url = table.get("url")
        if isinstance(url, str):
            for problem in template_problems(url):
                yield ("tables", index, "url"), problem
            if "format" not in table and file_format(table) is None:
                yield (
                    ("tables", index, "url"),
                    (
                        "the URL's ending does not say the file's format: "
                        "add format: csv, csv.gz, parquet, jsonl or jsonl.gz"
                    ),
                )
        fmt = file_format(table) if isinstance(url, str) else None
        if "csv" in table and fmt is not None and not fmt.startswith("csv"):
            yield ("tables", index, "csv"), f"csv options apply to csv files, and this one is {fmt}"
        columns = table.get("columns")
        if isinstance(columns, dict):
            yield from _column_types(index, columns)
            for position, key in enumerate(table.get("primary_key") or []):
                if isinstance(key, str) and key not in columns:
                    yield (
                        ("tables", index, "primary_key", position),
                        (f"{key!r} is not among the table's columns" + _did_you_mean(key, list(columns))),
                    )


def _column_types(index: int, columns: dict[str, Any]) -> Iterator[Finding]:
    from dagforge.sources.file_types import declared_type
    from dagforge.spec.model import INTERVAL_COLUMN

    for name, text in columns.items():
        if name == INTERVAL_COLUMN or name.startswith("_dagforge_"):
            yield ("tables", index, "columns", name), f"{name!r} is a name dagforge writes itself: rename the column"
        if isinstance(text, str):
            try:
                declared_type(text)
            except ValueError as exc:
                yield ("tables", index, "columns", name), str(exc)


@rule
def chunks_are_consistent(data: dict[str, Any], _file: Path) -> Iterator[Finding]:
    """``chunks:`` splits a full Postgres → Postgres load by ranges of one integer column."""
    source, destination = data.get("source"), data.get("destination")
    direct = (
        isinstance(source, dict)
        and source.get("kind") == "postgres"
        and isinstance(destination, dict)
        and destination.get("kind") == "postgres"
        and "stage" not in data
    )
    for index, table in _tables(data):
        chunks = table.get("chunks")
        if not isinstance(chunks, dict):
            continue
        where = ("tables", index, "chunks")
        if not direct:
            yield where, "chunks: only Postgres → Postgres loads without a stage are split into chunks (for now)"
        if table.get("mode", "full") != "full":
            yield (
                (*where[:2], "mode"),
                "chunks: needs mode: full (an incremental load reads one snapshot, its watermark from it)",
            )
        if ("count" in chunks) == ("size" in chunks):
            yield where, "chunks: give either count (how many chunks) or size (key values per chunk), one of them"
        by, key = chunks.get("by"), table.get("primary_key") or []
        if by is None and len(key) != 1:
            yield where, "chunks: name the integer column to split by ('by'); the primary key is not one column"
        columns = table.get("columns")
        if isinstance(by, str) and isinstance(columns, list) and by not in columns:
            yield (*where, "by"), f"'columns' must include the chunks' column {by!r}"


@rule
def dbt_project_is_consistent(data: dict[str, Any], file: Path) -> Iterator[Finding]:
    """The dbt project exists and reads, its selected models' sources are this pipeline's tables
    (or say ``meta: {dagforge: external}``), and ``select``/``exclude`` name models it has."""
    transform = data.get("transform")
    dbt = transform.get("dbt") if isinstance(transform, dict) else None
    if not isinstance(dbt, dict) or not isinstance(dbt.get("project"), str):
        return
    from dagforge.dbt.project import DbtProjectError, load_project

    at = ("transform", "dbt")
    try:
        project = load_project((file.parent / dbt["project"]).resolve())
        for key in ("select", "exclude"):
            terms = dbt.get(key)
            for index, term in enumerate(terms if isinstance(terms, list) else []):
                if isinstance(term, str) and term.strip("+") not in project.models:
                    hint = _did_you_mean(term.strip("+"), list(project.models))
                    yield (*at, key, index), f"no model {term.strip('+')!r} in dbt project {project.name!r}{hint}"
        selected = project.select(*(dbt.get(k) or [] for k in ("select", "exclude")))
    except DbtProjectError as exc:
        yield (*at, "project"), f"dbt project {dbt['project']!r}: {exc}"
        return
    except KeyError:
        return  # an unknown model in select/exclude: reported above
    yield from _dbt_sources(data, project, selected, at)
    if any(t.get("name") == DBT_GROUP for _, t in _tables(data)):
        yield at, f"a table named {DBT_GROUP!r} clashes with the dbt models' task group; rename the table's task"


DBT_GROUP = "dbt"
"""The task group of a pipeline's dbt models."""


def _dbt_sources(data: dict[str, Any], project: Any, selected: list[str], at: KeyPath) -> Iterator[Finding]:
    tables = {t.get("target", t.get("name")) for _, t in _tables(data)}
    for name in selected:
        model = project.models[name]
        for call in model.sources:
            where = project.label(model.path, call.line)
            source = project.sources.get(call.names)
            if source is None:
                named = f"source({call.names[0]!r}, {call.names[1]!r})"
                yield (*at, "project"), f"{where}: {named} is not declared in a sources: block of the project"
            elif not source.external and source.identifier not in tables:
                known = ", ".join(sorted(tables)) or "none"
                yield (
                    (*at, "project"),
                    (
                        f"{where}: source({call.names[0]!r}, {call.names[1]!r}) is not a table this pipeline loads "
                        f"({known}); load it here, or mark it meta: {{dagforge: external}} in {source.where}"
                    ),
                )
