"""The column types a file source may declare, one documented table.

Users declare a file's columns in YAML as ``name: type``. :data:`FILE_TYPES` is the single source
of what they may write: :func:`declared_type` reads it, the README's table is generated from it
(``python -m dagforge.sources.file_types``) and the tests walk every row of it. Each type maps to

* the Postgres type as ``format_type()`` prints it (``numeric(12,2)``, ``timestamp with time zone``):
  the portable column type the rest of dagforge uses (the BigQuery type map reads these texts);
* the Arrow type the file's values are parsed into (:mod:`dagforge.sources.file_formats`).

Spelling is forgiving: any case, any whitespace (``Numeric( 12, 2 )``), and Postgres's own names
(``int4``, ``character varying(20)``, ``timestamp with time zone``) are accepted too, so the output
of ``format_type()`` can be pasted as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

DECIMAL128_MAX_PRECISION, DECIMAL256_MAX_PRECISION = 38, 76


@dataclass(frozen=True)
class FileType:
    """One declared column type, resolved."""

    name: str
    """Canonical spelling, as a user may write it: ``integer``, ``numeric(12,2)``, ``varchar(20)``."""
    type_sql: str
    """The Postgres type as ``format_type()`` prints it: ``character varying(20)``."""
    arrow: pa.DataType
    """What values are parsed into."""


Resolve = Callable[[tuple[int, ...]], FileType]
"""Builds the :class:`FileType` of a row from the written type's arguments (``(12, 2)``, ``()``)."""


@dataclass(frozen=True)
class FileTypeRow:
    """One row of :data:`FILE_TYPES`: the spellings of one type, its Postgres and Arrow types."""

    written: str
    """What users may write, as the docs show it."""
    postgres: str
    """The Postgres type (``format_type()`` text), as the docs show it."""
    parsed_as: str
    """The Arrow type values are parsed into, as the docs show it."""
    note: str
    names: tuple[str, ...]
    """Accepted names without arguments, lower case, single spaces; the first is canonical."""
    arities: tuple[int, ...]
    """How many arguments may follow the name: ``(0,)`` none, ``(1, 2)`` for ``numeric(p[,s])``."""
    resolve: Resolve


def _fixed(name: str, type_sql: str, arrow: pa.DataType) -> Resolve:
    """A type without arguments: always the same :class:`FileType`."""
    file_type = FileType(name, type_sql, arrow)
    return lambda _args: file_type


def _numeric(args: tuple[int, ...]) -> FileType:
    """``numeric(p)`` / ``numeric(p,s)``: an exact decimal, decimal128 up to 38 digits, then decimal256."""
    precision, scale = args[0], args[1] if len(args) > 1 else 0
    if not 1 <= precision <= DECIMAL256_MAX_PRECISION:
        raise ValueError(
            f"numeric precision must be 1 to {DECIMAL256_MAX_PRECISION}, not {precision}: "
            "write plain numeric to keep any number of digits"
        )
    if scale > precision:
        raise ValueError(f"numeric scale {scale} is larger than its precision {precision}")
    decimal = pa.decimal128 if precision <= DECIMAL128_MAX_PRECISION else pa.decimal256
    spelled = f"numeric({precision},{scale})"
    return FileType(spelled, spelled, decimal(precision, scale))


def _varchar(args: tuple[int, ...]) -> FileType:
    """``varchar(n)`` (at most n characters) or ``varchar`` (any length)."""
    if not args:
        return FileType("varchar", "character varying", pa.string())
    if args[0] < 1:
        raise ValueError(f"varchar length must be at least 1, not {args[0]}")
    return FileType(f"varchar({args[0]})", f"character varying({args[0]})", pa.string())


_UTC_NOTE = "values with an offset (+02:00, Z) are converted to UTC; values without one are read as UTC"

FILE_TYPES: tuple[FileTypeRow, ...] = (
    FileTypeRow(
        "smallint", "smallint", "int16", "-32768 to 32767; anything else is a bad row",
        ("smallint", "int2"), (0,), _fixed("smallint", "smallint", pa.int16()),
    ),
    FileTypeRow(
        "integer, int", "integer", "int32", "-2147483648 to 2147483647",
        ("integer", "int", "int4"), (0,), _fixed("integer", "integer", pa.int32()),
    ),
    FileTypeRow(
        "bigint", "bigint", "int64", "64-bit integers",
        ("bigint", "int8"), (0,), _fixed("bigint", "bigint", pa.int64()),
    ),
    FileTypeRow(
        "real", "real", "float32", "single precision; NaN, Infinity, -Infinity accepted",
        ("real", "float4"), (0,), _fixed("real", "real", pa.float32()),
    ),
    FileTypeRow(
        "double precision, double, float", "double precision", "float64", "NaN, Infinity, -Infinity accepted",
        ("double precision", "double", "float", "float8"), (0,),
        _fixed("double precision", "double precision", pa.float64()),
    ),
    FileTypeRow(
        "numeric(p,s), numeric(p)", "numeric(p,s)", "decimal128(p,s), decimal256(p,s) above 38 digits",
        "exact; p up to 76; numeric(p) is numeric(p,0); a value with more decimals than s, or more digits than p, "
        "is a bad row (never rounded); NaN and Infinity are bad rows",
        ("numeric", "decimal"), (1, 2), _numeric,
    ),
    FileTypeRow(
        "numeric", "numeric", "string",
        "any number of digits, kept as written (surrounding spaces trimmed); NaN and Infinity are bad rows",
        ("numeric", "decimal"), (0,), _fixed("numeric", "numeric", pa.string()),
    ),
    FileTypeRow(
        "text, string", "text", "string", "any text",
        ("text", "string"), (0,), _fixed("text", "text", pa.string()),
    ),
    FileTypeRow(
        "varchar(n)", "character varying(n)", "string", "a value longer than n characters is a bad row",
        ("varchar", "character varying"), (0, 1), _varchar,
    ),
    FileTypeRow(
        "boolean, bool", "boolean", "bool", "true/false, t/f, 1/0, yes/no in any case",
        ("boolean", "bool"), (0,), _fixed("boolean", "boolean", pa.bool_()),
    ),
    FileTypeRow(
        "date", "date", "date32", "ISO 8601 (2024-03-31) or the CSV source's date_formats",
        ("date",), (0,), _fixed("date", "date", pa.date32()),
    ),
    FileTypeRow(
        "timestamp", "timestamp without time zone", "timestamp[us]",
        "wall-clock time, ISO 8601 or the CSV source's timestamp_formats; a value with an offset is a bad row",
        ("timestamp", "timestamp without time zone"), (0,),
        _fixed("timestamp", "timestamp without time zone", pa.timestamp("us")),
    ),
    FileTypeRow(
        "timestamptz", "timestamp with time zone", "timestamp[us, tz=UTC]", _UTC_NOTE,
        ("timestamptz", "timestamp with time zone"), (0,),
        _fixed("timestamptz", "timestamp with time zone", pa.timestamp("us", "UTC")),
    ),
    FileTypeRow(
        "time", "time without time zone", "time64[us]", "ISO 8601 (13:45, 13:45:30.25)",
        ("time", "time without time zone"), (0,), _fixed("time", "time without time zone", pa.time64("us")),
    ),
    FileTypeRow(
        "json, jsonb", "jsonb", "string", "the JSON text; a value that is not JSON is a bad row",
        ("jsonb", "json"), (0,), _fixed("jsonb", "jsonb", pa.string()),
    ),
)  # fmt: skip

_SPELLING = re.compile(r"^(?P<name>[a-z][a-z0-9 ]*?)\s*(?:\((?P<args>[\d\s,]*)\))?$")


def _normalized(text: str) -> tuple[str, tuple[int, ...]] | None:
    """``' Numeric( 12, 2 )'`` → ``('numeric', (12, 2))``; None when it is not a type's shape."""
    match = _SPELLING.match(" ".join(text.lower().split()))
    if not match:
        return None
    args = match.group("args")
    if args is None:
        return match.group("name"), ()
    parts = [part.strip() for part in args.split(",")]
    if not all(part.isdigit() for part in parts):
        return None
    return match.group("name"), tuple(int(part) for part in parts)


def accepted_names() -> str:
    """Every type a user may write, for error messages: ``integer (int), …``."""
    return ", ".join(row.written for row in FILE_TYPES)


def declared_type(text: str) -> FileType:
    """The :class:`FileType` a user wrote as ``text``; ValueError listing the accepted names if unknown."""
    shape = _normalized(text) if isinstance(text, str) else None
    if shape is not None:
        name, args = shape
        for row in FILE_TYPES:
            if name in row.names and len(args) in row.arities:
                return row.resolve(args)
    raise ValueError(f"unknown column type {text!r}: write one of {accepted_names()}")


def markdown_table() -> str:
    """The declared types as the README shows them."""
    lines = ["| written | Postgres | parsed as (Arrow) | notes |", "|---|---|---|---|"]
    lines += [f"| {row.written} | {row.postgres} | {row.parsed_as} | {row.note} |" for row in FILE_TYPES]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
