"""Postgres column types → BigQuery column types, one documented table.

:data:`TYPE_MAP` is the single source: :func:`bigquery_type` reads it, the README's table is
generated from it (``python -m dagforge.bigquery.types``) and the tests walk every row of it.
Values arrive unchanged (see :mod:`dagforge.stage.encodings`): decimals keep every digit,
timestamps their instant, JSON stays JSON, STRING columns hold Postgres's output text. What a type
cannot hold (each row's "refused") fails the extract before anything is staged, naming the column
and the value (:mod:`dagforge.bigquery.guards`); the only conversion is a NULL array → empty array.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

NUMERIC_MAX_SCALE, NUMERIC_MAX_INTEGER_DIGITS = 9, 29
BIGNUMERIC_MAX_SCALE, BIGNUMERIC_MAX_INTEGER_DIGITS = 38, 38


@dataclass(frozen=True)
class BigQueryType:
    """A BigQuery column type: ``field_type`` (standard SQL name), mode and decimal parameters."""

    field_type: str
    mode: str = "NULLABLE"
    precision: int | None = None
    scale: int | None = None

    def field(self, name: str) -> dict[str, Any]:
        """The column as a BigQuery REST ``TableFieldSchema``."""
        data: dict[str, Any] = {"name": name, "type": self.field_type, "mode": self.mode}
        if self.precision is not None:
            data["precision"] = str(self.precision)
            data["scale"] = str(self.scale or 0)
        return data

    @property
    def sql(self) -> str:
        """As written in DDL, e.g. ``ARRAY<NUMERIC(12, 2)>``."""
        base = self.field_type
        if self.precision is not None:
            base += f"({self.precision}, {self.scale or 0})"
        return f"ARRAY<{base}>" if self.mode == "REPEATED" else base


@dataclass(frozen=True)
class TypeRow:
    postgres: str
    """The Postgres types this row covers, as the docs show them."""
    bigquery: str
    note: str
    examples: tuple[str, ...]
    """``format_type()`` texts this row covers; the tests map and round-trip each of them."""


_RANGE = "0001-01-01 to 9999-12-31"
_REFUSED_DATES = "refused: BC, ±infinity, years after 9999"

TYPE_MAP: tuple[TypeRow, ...] = (
    TypeRow("smallint, integer, bigint", "INT64", "exact", ("smallint", "integer", "bigint")),
    TypeRow(
        "numeric(p,s) with s ≤ 9 and p - s ≤ 29",
        "NUMERIC(p, s)",
        "every digit kept; BigQuery enforces the same precision and scale; refused: NaN, ±Infinity",
        ("numeric(38,9)", "numeric(12,2)", "numeric(10,0)"),
    ),
    TypeRow(
        "numeric(p,s) beyond that, with s ≤ 38 and p - s ≤ 38",
        "BIGNUMERIC(p, s)",
        "every digit kept; refused: NaN, ±Infinity",
        ("numeric(38,0)", "numeric(40,20)"),
    ),
    TypeRow(
        "numeric (no precision)",
        "BIGNUMERIC",
        "every digit kept; refused (never rounded): NaN, ±Infinity, abs(value) ≥ 10^38, more than 38 decimal places",
        ("numeric",),
    ),
    TypeRow(
        "real, double precision",
        "FLOAT64",
        "the value Postgres prints (real: its shortest text, e.g. 1.5e-10), NaN, ±Infinity and -0 kept",
        ("real", "double precision"),
    ),
    TypeRow("boolean", "BOOL", "exact", ("boolean",)),
    TypeRow(
        "text, character varying(n), character(n), uuid",
        "STRING",
        "Postgres's output text: character(n) keeps its padding; uuid as its canonical text",
        ("text", "character varying(20)", "character varying", "character(3)", "uuid"),
    ),
    TypeRow("date", "DATE", f"{_RANGE}; {_REFUSED_DATES}", ("date",)),
    TypeRow(
        "timestamp [(p)] [without time zone]",
        "DATETIME",
        f"wall-clock time, as stored, {_RANGE}; {_REFUSED_DATES}",
        ("timestamp without time zone", "timestamp(3) without time zone"),
    ),
    TypeRow(
        "timestamp [(p)] with time zone",
        "TIMESTAMP",
        f"the same instant (sent as UTC), {_RANGE} UTC; {_REFUSED_DATES} (in UTC)",
        ("timestamp with time zone", "timestamp(0) with time zone"),
    ),
    TypeRow(
        "time [(p)] [without time zone]",
        "TIME",
        "refused: 24:00:00 (BigQuery's TIME ends at 23:59:59.999999)",
        ("time without time zone",),
    ),
    TypeRow(
        "json, jsonb",
        "JSON",
        "the same JSON value (BigQuery normalizes whitespace and key order; json's duplicate keys: the last "
        "wins, as in jsonb); "
        "refused: a number neither INT64, UINT64 nor a FLOAT64 that prints back the same (e.g. 2^64, "
        "0.10000000000000000555), which BigQuery would round or reject; through JSON lines, a top-level JSON null "
        "(it would load as NULL; Parquet keeps it)",
        ("json", "jsonb"),
    ),
    TypeRow("bytea", "BYTES", "exact", ("bytea",)),
    TypeRow(
        "T[] (an array of a type above)",
        "the type of T, mode REPEATED",
        "elements as in T's row; converted: a NULL array loads as an empty array (BigQuery has no NULL arrays); "
        "refused: NULL elements, arrays of arrays (multi-dimensional), an element T's row refuses",
        ("integer[]", "text[]", "numeric(12,2)[]", "date[]"),
    ),
    TypeRow(
        "numeric(p,s) beyond BIGNUMERIC, time with time zone, interval, money, inet, cidr, xml, bit, ranges, "
        "geometric types, enums, composites, anything else (a domain maps as its base type: the Postgres type map "
        "resolves it first)",
        "STRING",
        "Postgres's own output text, exact (inet without an added /32; xml as Postgres prints it, which drops a "
        "declaration that only restates version 1.0 and the encoding)",
        ("numeric(60,50)", "time with time zone", "interval", "inet"),
    ),
)

_NUMERIC = re.compile(r"^numeric\((\d+)(?:,(\d+))?\)$")


def bigquery_type(type_sql: str) -> BigQueryType:
    """The BigQuery column type for a Postgres ``format_type()`` text."""
    text = type_sql.strip().lower().replace(", ", ",")
    if text.endswith("[]"):
        element = bigquery_type(text[:-2])
        return BigQueryType(element.field_type, "REPEATED", element.precision, element.scale)
    simple = {
        "smallint": "INT64",
        "integer": "INT64",
        "bigint": "INT64",
        "real": "FLOAT64",
        "double precision": "FLOAT64",
        "boolean": "BOOL",
        "date": "DATE",
        "bytea": "BYTES",
        "json": "JSON",
        "jsonb": "JSON",
        "numeric": "BIGNUMERIC",
    }
    if text in simple:
        return BigQueryType(simple[text])
    if match := _NUMERIC.match(text):
        precision, scale = int(match.group(1)), int(match.group(2) or 0)
        if scale <= NUMERIC_MAX_SCALE and precision - scale <= NUMERIC_MAX_INTEGER_DIGITS:
            return BigQueryType("NUMERIC", precision=precision, scale=scale)
        if scale <= BIGNUMERIC_MAX_SCALE and precision - scale <= BIGNUMERIC_MAX_INTEGER_DIGITS:
            return BigQueryType("BIGNUMERIC", precision=precision, scale=scale)
        return BigQueryType("STRING")
    for pattern, field_type in _TEMPORAL:
        if pattern.match(text):
            return BigQueryType(field_type)
    return BigQueryType("STRING")


_TEMPORAL = (
    (re.compile(r"^timestamp(\(\d\))? without time zone$"), "DATETIME"),
    (re.compile(r"^timestamp(\(\d\))? with time zone$"), "TIMESTAMP"),
    (re.compile(r"^time(\(\d\))? without time zone$"), "TIME"),
)


def markdown_table() -> str:
    """The type map as the README shows it."""
    lines = ["| Postgres | BigQuery | notes |", "|---|---|---|"]
    lines += [f"| {row.postgres} | {row.bigquery} | {row.note} |" for row in TYPE_MAP]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
