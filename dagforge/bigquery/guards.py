"""Values BigQuery cannot hold, refused inside the export ``SELECT`` before anything is staged.

Each guarded column's expression becomes ``CASE WHEN <out of range> THEN <refusal> ELSE … END``.
The refusal casts a text naming the column, the reason and the value to ``integer``, which fails
with that text in the error message: the read stays one scan, in the read-only snapshot, with no
function created in the source. :func:`refused_value` turns that error back into
:class:`UnholdableValue`, a terminal error (no retry makes BigQuery hold a BC date).
"""

from __future__ import annotations

import psycopg

from dagforge.bigquery.types import BigQueryType
from dagforge.errors import TerminalError
from dagforge.sql.postgres import literal

MARKER = "dagforge: BigQuery cannot hold"
_SEP = "\x1f"  # never in a column name or a reason; the value comes last, so it may hold anything
VALUE_CHARS = 200
"""How much of a refused value's text the error shows."""


class UnholdableValue(TerminalError):
    """A source value that BigQuery's column type cannot hold; nothing was staged or published."""

    def __init__(self, column: str, value: str, reason: str):
        super().__init__(f"column {column!r}: BigQuery cannot hold the value {value}: {reason}")
        self.column, self.value, self.reason = column, value, reason


def refused_value(error: psycopg.Error) -> UnholdableValue | None:
    """The :class:`UnholdableValue` a guard raised, or None for any other error."""
    message = error.diag.message_primary or str(error)  # str: an error the COPY relay reported
    start = message.find(MARKER + _SEP)
    if start < 0:
        return None
    text = message[start + len(MARKER) + 1 :].removesuffix('"')
    column, reason, value = text.split(_SEP, 2)
    return UnholdableValue(column, value, reason)


def _refusal(name: str, value_sql: str, reason: str) -> str:
    half = VALUE_CHARS // 2  # both ends: a long number's digits or a long array's last element
    shown = (
        f"CASE WHEN length({value_sql}) <= {VALUE_CHARS} THEN {value_sql} "
        f"ELSE left({value_sql}, {half}) || '…' || right({value_sql}, {half}) END"
    )
    return f"(({literal(_SEP.join((MARKER, name, reason, '')))} || {shown})::integer)::text"


def _text(x: str) -> str:
    return f"concat({x})"


_MAX_FLOAT, _MIN_FLOAT = "1.7976931348623157e308", "5e-324"
# A JSON number BigQuery keeps exactly: an INT64 or UINT64 integer, or a FLOAT64 that prints back
# as the same number (CASE keeps float8 from seeing a number outside its range).
_EXACT_JSON_NUMBER = (
    "(v = trunc(v) AND v BETWEEN -9223372036854775808 AND 18446744073709551615) OR CASE WHEN v = 0 THEN true "
    f"WHEN abs(v) > {_MAX_FLOAT} OR abs(v) < {_MIN_FLOAT} THEN false ELSE v::float8::text::numeric = v END"
)
_WIDE_JSON_NUMBERS = (
    "(SELECT w.v::text FROM jsonb_path_query({x}::jsonb, 'strict $.**') AS j(doc), LATERAL (SELECT CASE "
    f"WHEN jsonb_typeof(j.doc) = 'number' THEN j.doc::numeric END) AS w(v) WHERE NOT ({_EXACT_JSON_NUMBER}) LIMIT 1)"
)

# BigQuery type → (condition on {x}, why), for values the type cannot hold.
_SCALAR_CHECKS: dict[str, tuple[str, str]] = {
    "DATE": (
        "{x} NOT BETWEEN '0001-01-01' AND '9999-12-31'",
        "BigQuery DATE holds 0001-01-01 to 9999-12-31 (no BC dates, no infinity)",
    ),
    "DATETIME": (
        "{x} NOT BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'",
        "BigQuery DATETIME holds 0001-01-01 to 9999-12-31 (no BC dates, no infinity)",
    ),
    "TIMESTAMP": (
        "{x} NOT BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'",
        "BigQuery TIMESTAMP holds 0001-01-01 to 9999-12-31 UTC (no BC dates, no infinity)",
    ),
    "TIME": ("{x} > '23:59:59.999999'", "BigQuery TIME ends at 23:59:59.999999 (no 24:00:00)"),
    "NUMERIC": ("{x} IN ('NaN', 'Infinity', '-Infinity')", "BigQuery NUMERIC holds no NaN or infinity"),
    "BIGNUMERIC": (
        "{x} IN ('NaN', 'Infinity', '-Infinity') OR abs({x}) >= 1e38 OR {x} <> round({x}, 38)",
        "BigQuery BIGNUMERIC holds no NaN or infinity, at most 38 integer digits and 38 decimal places",
    ),
    "JSON": (  # a number of 15 digits or fewer is exact as FLOAT64: only a longer run of [0-9.] needs a look
        f"CASE WHEN {{x}}::jsonb::text ~ '[0-9.]{{{{16}}}}' THEN {_WIDE_JSON_NUMBERS} IS NOT NULL ELSE false END",
        "BigQuery JSON holds numbers as INT64, UINT64 or FLOAT64; this one would be rounded",
    ),
}
_VALUE_OF: dict[str, str] = {"JSON": _WIDE_JSON_NUMBERS}
"""What a refusal shows for a type, when not the whole value."""


def _scalar_checks(x: str, field_type: str) -> list[tuple[str, str, str]]:
    if field_type not in _SCALAR_CHECKS:
        return []
    condition, reason = _SCALAR_CHECKS[field_type]
    shown = _VALUE_OF.get(field_type, _text("{x}"))
    return [(condition.format(x=x), shown.format(x=x), reason)]


def _array_checks(x: str, field_type: str) -> list[tuple[str, str, str]]:
    checks = [
        (f"array_ndims({x}) > 1", _text(x), "BigQuery has no arrays of arrays"),
        (f"num_nulls(VARIADIC {x}) > 0", _text(x), "BigQuery arrays hold no NULL elements"),
    ]
    for condition, shown, reason in _scalar_checks("e", field_type):
        bad = f"(SELECT {shown} FROM unnest({x}) AS u(e) WHERE {condition} LIMIT 1)"
        checks.append((f"{bad} IS NOT NULL", f"{bad} || ' in ' || {_text(x)}", reason))
    return checks


_JSON_NULL = (
    "jsonb_typeof({x}::jsonb) = 'null'",
    "a JSON null loads as SQL NULL through JSON lines (BigQuery's loader reads null as NULL); Parquet keeps it",
)


def guarded(name: str, column: str, bq: BigQueryType, text_expression: str, *, json_lines: bool = False) -> str:
    """``text_expression`` (text), or a refusal naming ``name`` for a value ``bq`` cannot hold."""
    checks = (_array_checks if bq.mode == "REPEATED" else _scalar_checks)(column, bq.field_type)
    if json_lines and bq.field_type == "JSON" and bq.mode != "REPEATED":
        checks.append((_JSON_NULL[0].format(x=column), _text(column), _JSON_NULL[1]))
    if not checks:
        return text_expression
    whens = " ".join(f"WHEN {cond} THEN {_refusal(name, shown, reason)}" for cond, shown, reason in checks)
    return f"CASE {whens} ELSE {text_expression} END"
