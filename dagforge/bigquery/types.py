"""Postgres column types → BigQuery column types, one documented table.

:data:`TYPE_MAP` is the single source: :func:`bigquery_type` reads it, the README's table is
generated from it (``python -m dagforge.bigquery.types``) and the tests walk every row of it.
Values keep their meaning on the way (see :mod:`dagforge.stage.encodings`): decimals keep every
digit, timestamps their instant, JSON stays JSON.
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


TYPE_MAP: tuple[TypeRow, ...] = (
    TypeRow("smallint, integer, bigint", "INT64", "", ("smallint", "integer", "bigint")),
    TypeRow(
        "numeric(p,s) with s ≤ 9 and p - s ≤ 29",
        "NUMERIC(p, s)",
        "every digit kept; BigQuery enforces the same precision and scale",
        ("numeric(38,9)", "numeric(12,2)", "numeric(10,0)"),
    ),
    TypeRow(
        "numeric(p,s) beyond that, with s ≤ 38 and p - s ≤ 38",
        "BIGNUMERIC(p, s)",
        "every digit kept",
        ("numeric(38,0)", "numeric(40,20)"),
    ),
    TypeRow(
        "numeric (no precision)",
        "BIGNUMERIC",
        "a value with more than 38 decimal places fails the extract instead of being rounded",
        ("numeric",),
    ),
    TypeRow("real, double precision", "FLOAT64", "", ("real", "double precision")),
    TypeRow("boolean", "BOOL", "", ("boolean",)),
    TypeRow(
        "text, character varying(n), character(n), uuid",
        "STRING",
        "character(n) keeps its padding; uuid as its canonical text",
        ("text", "character varying(20)", "character varying", "character(3)", "uuid"),
    ),
    TypeRow("date", "DATE", "", ("date",)),
    TypeRow(
        "timestamp [(p)] [without time zone]",
        "DATETIME",
        "wall-clock time, as stored",
        ("timestamp without time zone", "timestamp(3) without time zone"),
    ),
    TypeRow(
        "timestamp [(p)] with time zone",
        "TIMESTAMP",
        "the same instant (sent as UTC)",
        ("timestamp with time zone", "timestamp(0) with time zone"),
    ),
    TypeRow("time [(p)] [without time zone]", "TIME", "", ("time without time zone",)),
    TypeRow("json, jsonb", "JSON", "", ("json", "jsonb")),
    TypeRow("bytea", "BYTES", "", ("bytea",)),
    TypeRow(
        "T[] (an array of a type above)",
        "the type of T, mode REPEATED",
        "a NULL array loads as an empty array; BigQuery refuses NULL elements and arrays of arrays",
        ("integer[]", "text[]", "numeric(12,2)[]", "date[]"),
    ),
    TypeRow(
        "numeric(p,s) beyond BIGNUMERIC, time with time zone, interval, money, inet, enums, anything else",
        "STRING",
        "Postgres's own text form, exact",
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
