"""Postgres column types → the column types of a Postgres destination, one documented table.

:data:`TYPE_MAP` is the single source: :func:`portable_type` implements it, the README's table is
generated from it (``python -m dagforge.sql.types``) and the tests walk every example of it.
User-defined types travel as portable types (docs/decisions/0009): the destination never needs
the source's enums, domains or composites. Values always travel as Postgres's own text (or, on
the direct path, its binary form when that is exact: :func:`binary_copy_exact`).

A column's type is described as a *chain* of :class:`TypeNode` (what
:func:`dagforge.sql.postgres.describe_columns` returns): the column's type first, then for a
domain its base type, for an array its element type, down to a type that is neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dagforge.sql.postgres import ident

ARRAY, BASE, COMPOSITE, DOMAIN, ENUM, RANGE, MULTIRANGE = "a", "b", "c", "d", "e", "r", "m"
"""TypeNode kinds: ``pg_type.typtype``, except ``a`` for an array type."""

OBJECT_REFERENCES = frozenset(
    {"regclass", "regcollation", "regconfig", "regdictionary", "regnamespace", "regoper", "regoperator",
     "regproc", "regprocedure", "regrole", "regtype"}
)  # fmt: skip
"""Built-in types whose values name the source's catalog objects: they travel as their text."""

BINARY_INEXACT = frozenset({"xml", "aclitem"})
"""Built-in types whose binary COPY form is not their value: xml's drops (or, with another client
encoding, adds) the ``<?xml …?>`` declaration; aclitem has none."""


@dataclass(frozen=True)
class TypeNode:
    kind: str
    """:data:`ARRAY`, :data:`DOMAIN`, or another ``pg_type.typtype``."""
    name: str
    """``format_type()`` of the type with its typmod, e.g. ``numeric(10,2)`` or ``public.mood``."""
    builtin: bool
    """Part of Postgres itself (oid below 16384), not from an extension or a user."""

    @classmethod
    def from_row(cls, row: Sequence) -> TypeNode:
        kind, builtin, name = row
        return cls(kind, name, builtin)


def portable_type(chain: Sequence[TypeNode]) -> str:
    """The destination column type for a source column whose type is ``chain``."""
    head, rest = chain[0], chain[1:]
    if head.kind == DOMAIN:
        return portable_type(rest)
    if head.kind == ARRAY:
        element = portable_type(rest)
        # an array of arrays (of a domain over an array) has no Postgres type: its elements' text
        return "text[]" if element.endswith("[]") else element + "[]"
    if head.builtin and head.kind in (BASE, RANGE, MULTIRANGE) and head.name not in OBJECT_REFERENCES:
        return head.name
    return "text"


def binary_copy_exact(chain: Sequence[TypeNode]) -> bool:
    """True when a binary COPY of the column into its :func:`portable_type` keeps every value.

    Binary input needs the very same type on both sides, so only built-in types that are not
    converted; and only those whose binary form is their value (not :data:`BINARY_INEXACT`).
    """
    same_type = portable_type(chain) == chain[0].name
    return same_type and all(node.builtin and node.name not in BINARY_INEXACT for node in chain)


# xml's output function rewrites the ``<?xml …?>`` declaration (drops a version-only one, and the
# encoding); its cast to text is the stored document, which the destination's xml input keeps as is.
_EXPORT_CASTS = {"xml": "text", "xml[]": "text[]"}


def export_expression(name: str, destination_type: str) -> str:
    """How a column leaves the source for a Postgres destination: itself, or its exact text."""
    cast = _EXPORT_CASTS.get(destination_type)
    return f"{ident(name)}::{cast} AS {ident(name)}" if cast else ident(name)


# ---- the table --------------------------------------------------------------------------------


def b(name: str) -> TypeNode:
    """A built-in base type."""
    return TypeNode(BASE, name, True)


def arr(element: TypeNode) -> TypeNode:
    return TypeNode(ARRAY, element.name + "[]", element.builtin)


@dataclass(frozen=True)
class Example:
    chain: tuple[TypeNode, ...]
    destination: str

    @classmethod
    def same(cls, name: str) -> Example:
        """A built-in type that arrives as itself."""
        return cls((b(name),), name)

    @classmethod
    def array(cls, *chain: TypeNode, destination: str) -> Example:
        return cls((arr(chain[0]), *chain), destination)


@dataclass(frozen=True)
class TypeRow:
    postgres: str
    """The Postgres types this row covers, as the docs show them."""
    destination: str
    fidelity: str
    """``exact`` (same type, same values) or ``converted`` (another type, the same text)."""
    note: str
    examples: tuple[Example, ...]
    """Source chains this row covers and what each maps to; the tests map every one of them."""


_ENUM, _COMPOSITE = TypeNode(ENUM, "mood", False), TypeNode(COMPOSITE, "app.address", False)
_PRICE = (TypeNode(DOMAIN, "app.price", False), b("numeric(10,2)"))
_INTS = (TypeNode(DOMAIN, "app.int_list", False), arr(b("integer")), b("integer"))

TYPE_MAP: tuple[TypeRow, ...] = (
    TypeRow(
        "smallint, integer, bigint, real, double precision, boolean",
        "the same type",
        "exact",
        "every value, NaN, ±Infinity and -0 included; typed (int, float, bool) in Parquet stage files",
        tuple(Example.same(t) for t in ("smallint", "integer", "bigint", "real", "double precision", "boolean")),
    ),
    TypeRow(
        "numeric, numeric(p,s), money",
        "the same type",
        "exact",
        "every digit, NaN and ±Infinity; as text in stage files (Arrow decimals hold neither NaN nor 1000 digits)",
        (Example.same("numeric"), Example.same("numeric(12,2)"), Example.same("money")),
    ),
    TypeRow(
        'text, character varying(n), character(n), "char", name',
        "the same type",
        "exact",
        "character(n) keeps its padding; any size (one row may be larger than a stage block)",
        tuple(Example.same(t) for t in ("text", "character varying(20)", "character(5)", '"char"', "name")),
    ),
    TypeRow(
        "date, timestamp [(p)] [with time zone], time [(p)] [with time zone], interval",
        "the same type",
        "exact",
        "BC dates, ±infinity, 294276 AD, 24:00:00 and microseconds; as Postgres's text in stage files",
        tuple(
            Example.same(t)
            for t in (
                "date",
                "timestamp without time zone",
                "timestamp(3) with time zone",
                "time without time zone",
                "time with time zone",
                "interval",
            )
        ),
    ),
    TypeRow(
        "bytea, uuid, json, jsonb, xml, inet, cidr, macaddr, macaddr8, bit(n), bit varying, tsvector, tsquery, "
        "point, line, lseg, box, path, polygon, circle, oid, pg_lsn",
        "the same type",
        "exact",
        "json keeps its whitespace and duplicate keys, jsonb every digit; xml always copies as text "
        "(its binary form drops the declaration)",
        tuple(Example.same(t) for t in ("bytea", "uuid", "jsonb", "xml", "inet", "bit(3)", "tsvector", "polygon")),
    ),
    TypeRow(
        "int4range, numrange, tstzrange, daterange, … and their multiranges (built-in ones)",
        "the same type",
        "exact",
        "empty and unbounded ranges included",
        (
            Example((TypeNode(RANGE, "int4range", True),), "int4range"),
            Example((TypeNode(MULTIRANGE, "int4multirange", True),), "int4multirange"),
        ),
    ),
    TypeRow(
        "T[] of a type above",
        "the same type",
        "exact",
        "NULL elements, several dimensions and bounds kept",
        (
            Example.array(b("integer"), destination="integer[]"),
            Example.array(b("numeric(12,2)"), destination="numeric(12,2)[]"),
            Example.array(b("date"), destination="date[]"),
        ),
    ),
    TypeRow(
        "enum",
        "text",
        "converted",
        "the label",
        (Example((_ENUM,), "text"),),
    ),
    TypeRow(
        "domain over B",
        "B with its typmod, e.g. numeric(10,2) (recursively)",
        "converted",
        "the domain's CHECK and NOT NULL constraints stay at the source",
        (
            Example(_PRICE, "numeric(10,2)"),
            Example(_INTS, "integer[]"),
            Example((TypeNode(DOMAIN, "app.nested", False), *_PRICE), "numeric(10,2)"),
        ),
    ),
    TypeRow(
        "composite type",
        "text",
        "converted",
        'Postgres\'s record text, e.g. (1,"a b",), which the source reads back as the record',
        (Example((_COMPOSITE,), "text"),),
    ),
    TypeRow(
        "arrays of enums, composites or domains",
        "text[], or B[] for a domain over B",
        "converted",
        "an array of a domain over an array has no Postgres type: text[] of the inner arrays' text",
        (
            Example.array(_ENUM, destination="text[]"),
            Example.array(_COMPOSITE, destination="text[]"),
            Example.array(*_PRICE, destination="numeric(10,2)[]"),
            Example.array(*_INTS, destination="text[]"),
        ),
    ),
    TypeRow(
        "regclass, regtype and the other reg* types; types of extensions (citext, hstore, PostGIS, …), "
        "user-defined base and range types",
        "text",
        "converted",
        "their text form: the destination needs neither the objects named nor the extension",
        (
            Example((b("regclass"),), "text"),
            Example((TypeNode(BASE, "public.citext", False),), "text"),
            Example((TypeNode(RANGE, "app.floatrange", False),), "text"),
        ),
    ),
)


def markdown_table() -> str:
    """The type map as the README shows it."""
    lines = ["| Postgres source | destination column | fidelity | notes |", "|---|---|---|---|"]
    lines += [f"| {r.postgres} | {r.destination} | {r.fidelity} | {r.note} |" for r in TYPE_MAP]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
