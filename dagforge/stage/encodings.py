"""How each column travels through a stage file, per destination.

A :class:`Codec` says how the export ``SELECT`` reads a column, what Arrow's CSV reader parses it
into, what type it has in a Parquet file and, for types the CSV reader cannot parse, how its text
becomes that type. The ``postgres`` encoding keeps every value exact for a Postgres destination
(anything without an exact Arrow type travels as Postgres's own text). The ``bigquery`` encoding
writes each column as the type BigQuery loads it into (:mod:`dagforge.bigquery.types`), and its
JSON lines are built by Postgres itself (:func:`ndjson_line`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from dagforge.bigquery.guards import guarded, refused_value
from dagforge.bigquery.types import BigQueryType, bigquery_type
from dagforge.sql.postgres import ident, literal
from dagforge.sql.types import export_expression

Converter = Callable[[pa.Array], pa.Array]


@dataclass(frozen=True)
class Codec:
    select: str
    """The export SELECT's expression (``AS`` the column's name)."""
    parse_type: pa.DataType
    """What Arrow's CSV reader parses the exported text into."""
    file_type: pa.DataType
    """The column's type in a Parquet file."""
    convert: Converter | None = None
    """parse_type → file_type, when they differ."""


class Encoding:
    name = ""

    def codec(self, name: str, type_sql: str) -> Codec:
        raise NotImplementedError

    def ndjson_value(self, name: str, type_sql: str) -> str:
        """SQL for the column's JSON text in a JSON line (never NULL: ``null`` instead)."""
        raise NotImplementedError

    def refused_value(self, error: Exception) -> Exception | None:
        """The terminal error for a value this encoding's export guards refused (None: not one of theirs)."""
        return None


# ---- Postgres destinations ------------------------------------------------------------------

# The stage file is a transport: a column is typed only where every value its Postgres type holds
# survives Arrow both ways (NaN, ±Infinity, -0, denormals, the integer extremes). Anything else
# (BC and infinite dates, NaN or 1000-digit numerics, …) travels as Postgres's own text.
_ARROW_EXACT: dict[str, pa.DataType] = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
}


def arrow_type(type_sql: str) -> pa.DataType:
    """Parquet column type for a (destination) Postgres type: text unless Arrow's type is exact."""
    return _ARROW_EXACT.get(type_sql, pa.string())


def utc_iso(name: str) -> str:
    """A timestamptz as ISO 8601 UTC with ``Z``, so every reader parses the zone."""
    return f"""to_char({ident(name)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def select_expression(name: str, type_sql: str) -> str:
    """How a column leaves Postgres for a Postgres destination: its own text, exact."""
    return export_expression(name, type_sql)


class PostgresEncoding(Encoding):
    name = "postgres"

    def codec(self, name: str, type_sql: str) -> Codec:
        arrow = arrow_type(type_sql)
        return Codec(select_expression(name, type_sql), arrow, arrow)

    def ndjson_value(self, name: str, type_sql: str) -> str:
        """Every value as Postgres prints it, as a JSON string (what the load copies back)."""
        return f"COALESCE(to_json({ident(name)}::text)::text, 'null')"  # xml::text: the stored document


# ---- BigQuery destinations ------------------------------------------------------------------
# Every value leaves Postgres as text that names it exactly (STRING columns as the type's output
# function prints it), inside a guard that refuses what BigQuery cannot hold (:mod:`~dagforge.
# bigquery.guards`). Arrays leave as a JSON array of their elements' texts (or JSON values, for
# JSON lines), built in Postgres. The extract pins DateStyle, extra_float_digits and the like, so
# ``::text`` is ISO and floats print exactly.

_SCALAR_ARROW: dict[str, pa.DataType] = {
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
    "JSON": pa.json_(),
    "BYTES": pa.binary(),
}

BIGNUMERIC_DEFAULT = (76, 38)
"""BIGNUMERIC without parameters holds 38 digits after the point."""


def _decimal_type(bq: BigQueryType) -> pa.DataType:
    precision, scale = (bq.precision, bq.scale or 0) if bq.precision is not None else BIGNUMERIC_DEFAULT
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _file_type(bq: BigQueryType) -> pa.DataType:
    if bq.field_type in ("NUMERIC", "BIGNUMERIC"):
        return _decimal_type(bq)
    return _SCALAR_ARROW[bq.field_type]


def bigquery_utc_iso(x: str) -> str:
    """A timestamptz expression as ISO 8601 UTC with ``Z`` (years 1 to 9999: the guard refuses the rest)."""
    return f"""to_char({x} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _output_text(x: str) -> str:
    """The type's output function's text (``::text`` would strip character(n) and add inet's /32).

    ``concat``, not ``format('%s', …)``: an incremental export carries query parameters, where ``%``
    is a placeholder; ``num_nulls``, not ``IS NULL``: a composite of NULL fields IS NULL but is a value.
    """
    return f"CASE WHEN num_nulls({x}) = 0 THEN concat({x}) END"


# BigQuery type → the text a value of it leaves Postgres as (Parquet path; anything else: ``::text``).
_TEXT: dict[str, Callable[[str], str]] = {
    "STRING": _output_text,
    "BYTES": lambda x: f"encode({x}, 'hex')",
    "TIMESTAMP": bigquery_utc_iso,
    "JSON": lambda x: f"{x}::jsonb::text",  # as JSON lines: json's duplicate keys resolved by Postgres (last wins)
}


def _text_of(field_type: str, x: str) -> str:
    return _TEXT.get(field_type, lambda v: f"{v}::text")(x)


# Arrays whose elements' ``::text`` is their text above (and, in JSON lines, the JSON string BigQuery
# reads): one cast of the whole array, three times faster than one subquery per row.
_ARRAY_CAST = {"INT64", "NUMERIC", "BIGNUMERIC", "DATE", "DATETIME", "TIME"}
_ARRAY_CAST_PARQUET = _ARRAY_CAST | {"FLOAT64", "BOOL"}


def _elements(column: str, element_sql: str, cast: bool = False) -> str:
    """A JSON array of ``element_sql`` (over ``e``) for each element in order; NULL for a NULL array."""
    if cast:
        return f"array_to_json({column}::text[])::text"
    agg = f"SELECT json_agg({element_sql} ORDER BY i) FROM unnest({column}) WITH ORDINALITY AS u(e, i)"
    return f"CASE WHEN {column} IS NOT NULL THEN COALESCE(({agg}), '[]')::text END"


# What an array element's text (see _TEXT) becomes in Python.
_ELEMENT_PARSERS: dict[str, Callable[[str], Any]] = {
    "INT64": int,
    "FLOAT64": float,  # reads NaN, Infinity, -Infinity and -0 as Postgres prints them
    "BOOL": lambda text: text == "true",
    "DATE": dt.date.fromisoformat,
    "DATETIME": dt.datetime.fromisoformat,
    "TIMESTAMP": dt.datetime.fromisoformat,
    "TIME": dt.time.fromisoformat,
    "NUMERIC": Decimal,
    "BIGNUMERIC": Decimal,
    "BYTES": bytes.fromhex,
}


def _json_to_list(element: BigQueryType, element_type: pa.DataType) -> Converter:
    parse = _ELEMENT_PARSERS.get(element.field_type, str)
    storage_type = element_type.storage_type if isinstance(element_type, pa.BaseExtensionType) else element_type

    def convert(texts: pa.Array) -> pa.Array:
        values = [None if text is None else [parse(v) for v in json.loads(text)] for text in texts.to_pylist()]
        return pa.array(values, pa.list_(storage_type))

    return convert


def _hex_to_binary(texts: pa.Array) -> pa.Array:
    return pa.array([None if t is None else bytes.fromhex(t) for t in texts.to_pylist()], pa.binary())


def _text_to_json(texts: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(pa.json_(), texts.cast(pa.string()))


def _text_to_decimal(file_type: pa.DataType) -> Converter:
    return lambda texts: pc.cast(texts, file_type)  # raises rather than rounds away digits


def _parsed(file_type: pa.DataType) -> tuple[pa.DataType, Converter | None]:
    """What the CSV reader parses a column into, and how that becomes ``file_type``."""
    if isinstance(file_type, pa.Decimal256Type):  # the CSV reader parses decimal128 only
        return pa.string(), _text_to_decimal(file_type)
    if file_type == pa.binary():
        return pa.string(), _hex_to_binary
    if isinstance(file_type, pa.JsonType):
        return pa.string(), _text_to_json
    return file_type, None


class BigQueryEncoding(Encoding):
    name = "bigquery"

    def refused_value(self, error: Exception) -> Exception | None:
        return refused_value(error) if isinstance(error, psycopg.Error) else None

    def codec(self, name: str, type_sql: str) -> Codec:
        bq = bigquery_type(type_sql)
        column = ident(name)
        file_type = _file_type(bq)
        if bq.mode == "REPEATED":
            storage = file_type.storage_type if isinstance(file_type, pa.BaseExtensionType) else file_type
            text = _elements(column, _text_of(bq.field_type, "e"), bq.field_type in _ARRAY_CAST_PARQUET)
            select = guarded(name, column, bq, text)
            return Codec(f"{select} AS {column}", pa.string(), pa.list_(storage), _json_to_list(bq, file_type))
        if bq.field_type in ("INT64", "FLOAT64", "BOOL"):  # Postgres's own CSV text, nothing to refuse
            return Codec(column, file_type, file_type)
        parse_type, convert = _parsed(file_type)
        select = guarded(name, column, bq, _text_of(bq.field_type, column))
        return Codec(f"{select} AS {column}", parse_type, file_type, convert)

    def ndjson_value(self, name: str, type_sql: str) -> str:
        """The JSON text (never NULL) BigQuery's JSON loader reads as this column's type, made by Postgres."""
        bq = bigquery_type(type_sql)
        column = ident(name)
        template = _NDJSON_VALUE.get(bq.field_type, "to_json({text})")
        if bq.mode == "REPEATED":
            element = template.format(x="e", text=_output_text("e"), utc=bigquery_utc_iso("e"))
            value = _elements(column, element, bq.field_type in _ARRAY_CAST)
        else:
            value = template.format(x=column, text=_output_text(column), utc=bigquery_utc_iso(column))
        return guarded(name, column, bq, f"COALESCE(({value})::text, 'null')", json_lines=True)


# to_json keeps a float's shortest text (jsonb would expand 1e308 to 309 digits) and writes NaN and
# ±Infinity as the strings BigQuery reads; decimals and INT64 travel as strings (beyond ±2^53
# BigQuery asks for strings), so no digit is lost; bytes as base64, as BigQuery's JSON loader reads them.
_NDJSON_VALUE = {
    "INT64": "to_json({x}::text)",
    "FLOAT64": "CASE WHEN {x}::text = '-0' THEN '-0.0'::json ELSE to_json({x}) END",  # -0 would read as 0
    "BOOL": "to_json({x})",
    "NUMERIC": "to_json({x}::text)",
    "BIGNUMERIC": "to_json({x}::text)",
    "DATE": "to_json({x}::text)",
    "DATETIME": "to_json(to_char({x}, 'YYYY-MM-DD HH24:MI:SS.US'))",
    "TIMESTAMP": "to_json({utc})",
    "TIME": "to_json({x}::text)",
    "JSON": "{x}::jsonb",
    "BYTES": "to_json(translate(encode({x}, 'base64'), E'\\n', ''))",
}


def ndjson_line(encoding: Encoding, columns: list[tuple[str, str]]) -> str:
    """One JSON object per row as text, keys the column names in table order."""
    if not columns:
        return "'{}'"
    pieces = [
        literal(("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ")
        + " || "
        + encoding.ndjson_value(name, type_sql)
        for i, (name, type_sql) in enumerate(columns)
    ]
    return " || ".join(pieces) + " || '}'"


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (PostgresEncoding(), BigQueryEncoding())}
"""Encoding name (the destination kind it serves) → encoding."""
