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

import pyarrow as pa
import pyarrow.compute as pc

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


# What ``to_json()`` gives for an array element of each type, back as the element's Python value.
_ELEMENT_PARSERS: dict[str, Callable[[Any], Any]] = {
    "DATE": dt.date.fromisoformat,
    "DATETIME": dt.datetime.fromisoformat,
    "TIMESTAMP": dt.datetime.fromisoformat,
    "TIME": dt.time.fromisoformat,
    "NUMERIC": Decimal,
    "BIGNUMERIC": Decimal,
    "BYTES": lambda text: bytes.fromhex(text[2:]),
    "JSON": lambda value: json.dumps(value, ensure_ascii=False),
    "STRING": lambda value: value if isinstance(value, str) else json.dumps(value),
}


def _json_to_list(element: BigQueryType, element_type: pa.DataType) -> Converter:
    parse = _ELEMENT_PARSERS.get(element.field_type, lambda value: value)

    def convert(texts: pa.Array) -> pa.Array:
        values = []
        for text in texts.to_pylist():
            items = json.loads(text, parse_float=Decimal) if text is not None else None
            values.append(None if items is None else [None if v is None else parse(v) for v in items])
        storage_type = element_type.storage_type if isinstance(element_type, pa.ExtensionType) else element_type
        return pa.array(values, pa.list_(storage_type))

    return convert


def _hex_to_binary(texts: pa.Array) -> pa.Array:
    return pa.array([None if t is None else bytes.fromhex(t) for t in texts.to_pylist()], pa.binary())


def _text_to_json(texts: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(pa.json_(), texts.cast(pa.string()))


def _text_to_decimal(file_type: pa.DataType) -> Converter:
    return lambda texts: pc.cast(texts, file_type)  # raises rather than rounds away digits


def _direct(column: str, file_type: pa.DataType) -> Codec:
    return Codec(column, file_type, file_type)


def _decimal(column: str, file_type: pa.DataType) -> Codec:
    if isinstance(file_type, pa.Decimal256Type):  # the CSV reader parses decimal128 only
        return Codec(column, pa.string(), file_type, _text_to_decimal(file_type))
    return _direct(column, file_type)


# BigQuery type → how a column of it is exported and parsed (anything else: as is).
_CODECS: dict[str, Callable[[str, pa.DataType], Codec]] = {
    "NUMERIC": _decimal,
    "BIGNUMERIC": _decimal,
    "BYTES": lambda column, t: Codec(f"encode({column}, 'hex') AS {column}", pa.string(), t, _hex_to_binary),
    "JSON": lambda column, t: Codec(column, pa.string(), t, _text_to_json),
    "STRING": lambda column, t: Codec(f"{column}::text AS {column}", pa.string(), t),  # any type, as text
}


class BigQueryEncoding(Encoding):
    name = "bigquery"

    def codec(self, name: str, type_sql: str) -> Codec:
        bq = bigquery_type(type_sql)
        column = ident(name)
        file_type = _file_type(bq)
        if bq.mode == "REPEATED":
            storage = file_type.storage_type if isinstance(file_type, pa.ExtensionType) else file_type
            convert = _json_to_list(bq, file_type)
            return Codec(f"to_json({column})::text AS {column}", pa.string(), pa.list_(storage), convert)
        if bq.field_type == "TIMESTAMP":  # sent as UTC, whatever the session's time zone
            return Codec(f"{utc_iso(name)} AS {column}", file_type, file_type)
        return _CODECS.get(bq.field_type, _direct)(column, file_type)

    def ndjson_value(self, name: str, type_sql: str) -> str:
        """The JSON text (never NULL) BigQuery's JSON loader reads as this column's type, made by Postgres."""
        bq = bigquery_type(type_sql)
        column = ident(name)
        if bq.mode == "REPEATED":
            value = f"to_json({column})"
        else:
            value = _NDJSON_VALUE.get(bq.field_type, "to_json({column}::text)").format(column=column, utc=utc_iso(name))
        return f"COALESCE(({value})::text, 'null')"


# to_json keeps a float's shortest text (jsonb would expand 1e308 to 309 digits); decimals travel
# as strings, so no digit is lost; bytes as base64, as BigQuery's JSON loader reads them.
_NDJSON_VALUE = {
    "INT64": "to_json({column}::text)",  # beyond ±2^53 BigQuery asks for strings
    "FLOAT64": "to_json({column})",
    "BOOL": "to_json({column})",
    "NUMERIC": "to_json({column}::text)",
    "BIGNUMERIC": "to_json({column}::text)",
    "DATE": "to_json({column}::text)",
    "DATETIME": "to_json(to_char({column}, 'YYYY-MM-DD HH24:MI:SS.US'))",
    "TIMESTAMP": "to_json({utc})",
    "TIME": "to_json({column}::text)",
    "JSON": "{column}::jsonb",
    "BYTES": "to_json(translate(encode({column}, 'base64'), E'\\n', ''))",
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
