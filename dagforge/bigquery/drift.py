"""Schema drift at a BigQuery destination: column types as BigQuery texts, which changes widen, and
the DDL that applies a :class:`~dagforge.drift.Resolution` (pure functions, no client).

Types compare as their DDL text (``INT64``, ``NUMERIC(12, 2)``, ``ARRAY<STRING>``); the mode
(``REQUIRED``) is not part of the type. A type widens when ``ALTER COLUMN … SET DATA TYPE`` can
make the change and every value stays the same: ``NUMERIC(p, s)`` to one with at least as many
integer digits and decimals, ``INT64`` to a ``NUMERIC`` with at least 19 integer digits. Changes
into ``BIGNUMERIC`` are refused (not applied in place): the emulator the tests run against
stores every value of a column changed that way as NULL, so the change could not be verified;
docs/decisions/0007-bigquery-destination.md says what to do instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagforge.bigquery import sql
from dagforge.bigquery.types import NUMERIC_MAX_SCALE, BigQueryType
from dagforge.drift import Resolution
from dagforge.spec.model import DELETED_AT

STANDARD_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
"""The REST API's legacy type names → standard SQL names."""

NUMERIC_DEFAULT = (38, NUMERIC_MAX_SCALE)
"""An unparameterized NUMERIC holds what NUMERIC(38, 9) holds."""
INT64_DIGITS = 19

_TYPE = re.compile(r"^(?P<array>ARRAY<)?(?P<base>[A-Z0-9]+)(?:\((?P<p>\d+),\s*(?P<s>\d+)\))?>?$")


@dataclass(frozen=True)
class Column:
    """A table's column as the drift comparison sees it."""

    name: str
    kind: BigQueryType

    @property
    def type_sql(self) -> str:
        return self.kind.sql

    @property
    def required(self) -> bool:
        return self.kind.mode == "REQUIRED"


def column_type(field_type: str, mode: str | None, precision: int | None, scale: int | None) -> BigQueryType:
    """A schema field's type in standard SQL names (``REQUIRED`` stays in the mode)."""
    return BigQueryType(STANDARD_NAMES.get(field_type, field_type), mode or "NULLABLE", precision, scale)


def bigquery_widens(old: str, new: str) -> bool:
    """True when a column of type ``old`` can become ``new`` in place, keeping every value."""
    a, b = _TYPE.match(old.strip().upper()), _TYPE.match(new.strip().upper())
    if not a or not b or bool(a.group("array")) != bool(b.group("array")):
        return False
    if (a.group("base"), a.group("p"), a.group("s")) == (b.group("base"), b.group("p"), b.group("s")):
        return True
    if a.group("array") or b.group("base") != "NUMERIC":  # arrays and BIGNUMERIC do not change in place
        return False
    new_p, new_s = _digits(b)
    if a.group("base") == "INT64":
        return new_p - new_s >= INT64_DIGITS
    if a.group("base") == "NUMERIC":
        old_p, old_s = _digits(a)
        return new_s >= old_s and new_p - new_s >= old_p - old_s
    return False


def _digits(match: re.Match[str]) -> tuple[int, int]:
    if match.group("p") is None:
        return NUMERIC_DEFAULT
    return int(match.group("p")), int(match.group("s"))


def type_texts(columns: Sequence[Column]) -> dict[str, str]:
    """name → type text, the input of :func:`dagforge.drift.resolve`."""
    return {c.name: c.type_sql for c in columns}


def ddl(table_sql: str, resolution: Resolution, target: Sequence[Column], staged: Sequence[Column]) -> list[str]:
    """The statements that make the target follow ``resolution``: add, widen, make dropped columns nullable.

    Each one re-runnable (a retry after a partial run applies the rest); none runs inside the
    publish transaction (BigQuery runs no DDL on permanent tables there).
    """
    by_name = {c.name: c for c in staged}
    required = {c.name for c in target if c.required}
    added = [(c.column, by_name[c.column].kind) for c in resolution.add]
    statements = sql.add_columns(table_sql, [(name, _nullable(kind)) for name, kind in added])
    statements += [sql.widen_column(table_sql, c.column, by_name[c.column].type_sql) for c in resolution.widen]
    statements += [sql.drop_not_null(table_sql, name) for name in resolution.null_fill if name in required]
    return statements


def casts(resolution: Resolution, target: Sequence[Column], staged: Sequence[Column]) -> dict[str, str]:
    """Written columns whose staged type is not the target's (kept wider, or ``ignore``): cast to the target's."""
    widened = {c.column for c in resolution.widen}
    theirs = {c.name: c.type_sql for c in target}
    return {
        c.name: theirs[c.name]
        for c in staged
        if c.name in resolution.write and c.name in theirs and c.name not in widened and theirs[c.name] != c.type_sql
    }


def followed_schema(
    target: Sequence[Column], resolution: Resolution, staged: Sequence[Column], soft_deletes: bool
) -> list[Column]:
    """The target's columns once the DDL of :func:`ddl` (and the soft-delete column) applied."""
    by_name = {c.name: c for c in staged}
    widened = {c.column for c in resolution.widen}
    columns = []
    for column in target:
        kind = column.kind
        if column.name in widened:
            kind = BigQueryType(by_name[column.name].kind.field_type, kind.mode, *_params(by_name[column.name].kind))
        if column.name in resolution.null_fill and column.required:
            kind = BigQueryType(kind.field_type, "NULLABLE", kind.precision, kind.scale)
        columns.append(Column(column.name, kind))
    have = {c.name for c in columns}
    columns += [Column(c.column, _nullable(by_name[c.column].kind)) for c in resolution.add if c.column not in have]
    if soft_deletes and DELETED_AT not in have:
        columns.append(Column(DELETED_AT, BigQueryType("TIMESTAMP")))
    return columns


def _params(kind: BigQueryType) -> tuple[int | None, int | None]:
    return kind.precision, kind.scale


def _nullable(kind: BigQueryType) -> BigQueryType:
    return kind if kind.mode != "REQUIRED" else BigQueryType(kind.field_type, "NULLABLE", kind.precision, kind.scale)


def soft_delete_ddl(table_sql: str, target: Mapping[str, Column]) -> list[str]:
    """``_dagforge_deleted_at`` for a table that soft-deletes and does not have it yet."""
    if DELETED_AT in target:
        return []
    return sql.add_columns(table_sql, [(DELETED_AT, BigQueryType("TIMESTAMP"))])
