"""One generate run into PostgreSQL: every table, parents first, in a single transaction.

Tables are created when missing (types derived from a sample row unless given), locked against
concurrent runs, then filled with COPY. Sequences continue from ``max(column) + 1``; references
pick among the parent's existing values, including rows this run just wrote. A failure rolls the
whole run back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from dagforge.errors import TerminalError
from dagforge.generate.columns import RowContext, SequenceGenerator, sql_type_of
from dagforge.generate.tables import GeneratedTable, fill_order
from dagforge.sql import postgres as sql

if TYPE_CHECKING:
    from faker import Faker

log = logging.getLogger(__name__)
UNIQUE_ATTEMPTS = 100


@dataclass(frozen=True)
class TablePlan:
    table: GeneratedTable
    types: dict[str, str]
    foreign_keys: list[tuple[str, str, str]]
    """(column, parent table, parent column)."""


def plan_tables(tables: Sequence[GeneratedTable], locale: str | None) -> list[TablePlan]:
    """Fill order and column types, from explicit types, static ones, or one sample row per table."""
    samples: dict[str, dict[str, Any]] = {}
    plans: list[TablePlan] = []
    for table in fill_order(tables):
        parents = {f"{p}.{c}": [row[c]] for p, row in samples.items() for c in row}
        ctx = RowContext(fake=_faker(locale, 0), rng=random.Random(0), references=parents)
        ctx.next_ids = {g.column: g.start for g in table.generators if isinstance(g, SequenceGenerator)}
        try:
            samples[table.name] = _make_row(table, ctx, with_nulls=False)
        except Exception as exc:
            raise TerminalError(f"table {table.name}: cannot make a sample row: {exc}") from exc
        plans.append(TablePlan(table, _types(table, samples[table.name], plans), _foreign_keys(table)))
    return plans


def _types(table: GeneratedTable, sample: dict[str, Any], done: list[TablePlan]) -> dict[str, str]:
    known = {p.table.name: p.types for p in done}
    types = {}
    for generator in table.generators:
        target = generator.points_at()
        types[generator.column] = (
            table.types.get(generator.column)
            or (known[target[0]][target[1]] if target else None)
            or generator.static_type()
            or sql_type_of(sample[generator.column])
        )
    return types


def _foreign_keys(table: GeneratedTable) -> list[tuple[str, str, str]]:
    return [(g.column, *target) for g in table.generators if (target := g.points_at())]


def _faker(locale: str | None, seed: int) -> Faker:
    from faker import Faker

    fake = Faker(locale) if locale else Faker()
    fake.seed_instance(seed)
    return fake


def _make_row(table: GeneratedTable, ctx: RowContext, *, with_nulls: bool = True) -> dict[str, Any]:
    ctx.row = row = {}
    random = ctx.rng.random
    for generator, fraction in table.steps:
        value = generator.value(ctx)
        if fraction and with_nulls and random() < fraction:
            value = None
        row[generator.column] = value
    return row


def generate_run(
    conn: psycopg.Connection,
    schema: str,
    tables: Sequence[GeneratedTable],
    *,
    locale: str | None = None,
    seed: int | None = None,
    progress: Callable[[str], None] = log.info,
) -> dict[str, int]:
    """Append one run's rows to every table; returns rows written per table. All or nothing."""
    if not conn.autocommit:
        raise ValueError("generate_run needs a connection in autocommit mode")
    plans = plan_tables(tables, locale)
    written: dict[str, int] = {}
    with conn.transaction():
        for statement in sql.ensure_schema(schema):
            conn.execute(statement)
        for plan in plans:
            written[plan.table.name] = _fill_table(conn, schema, plan, locale, seed, progress)
    return written


def _fill_table(
    conn: psycopg.Connection,
    schema: str,
    plan: TablePlan,
    locale: str | None,
    seed: int | None,
    progress: Callable[[str], None],
) -> int:
    table = plan.table
    columns = [(c, plan.types[c]) for c in table.column_names]
    conn.execute(
        sql.create_generated_table(schema, table.name, columns, table.primary_key, table.unique, plan.foreign_keys)
    )
    conn.execute(sql.lock_table(schema, table.name))
    next_ids = _next_ids(conn, schema, table)
    run_seed = _run_seed(seed, table.name, next_ids)
    ctx = RowContext(fake=_faker(locale, run_seed), rng=random.Random(run_seed), next_ids=next_ids)
    ctx.references = {f"{p}.{c}": _column_values(conn, schema, p, c) for _, p, c in plan.foreign_keys}
    seen = _existing_unique(conn, schema, table)
    count = ctx.rng.randint(table.rows_min, table.rows_max)
    progress(f"{table.name}: generating {count} rows (ids from {next_ids or '-'})")
    started = last = time.monotonic()
    with conn.cursor() as cur, cur.copy(sql.copy_in(schema, table.name, table.column_names, False)) as copy:
        for done, row in enumerate(_unique_rows(table, ctx, seen, count, plan.types), start=1):
            copy.write_row(row)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                progress(f"{table.name}: {done}/{count} rows in {last - started:.0f} s")
    return count


def _next_ids(conn: psycopg.Connection, schema: str, table: GeneratedTable) -> dict[str, int]:
    next_ids = {}
    for generator in table.generators:
        if isinstance(generator, SequenceGenerator):
            current = conn.execute(sql.max_value(schema, table.name, generator.column)).fetchone()[0]
            next_ids[generator.column] = generator.start if current is None else int(current) + 1
    return next_ids


def _remake_unique_columns(table: GeneratedTable, ctx: RowContext) -> None:
    """New values for the unique columns and the templates that read them; ids stay as they are."""
    redo = set(table.unique)
    for generator in table.ordered_generators:
        if isinstance(generator, SequenceGenerator):
            continue
        if generator.column in redo or generator.reads() & redo:
            redo.add(generator.column)
            value = generator.value(ctx)
            fraction = table.null_fractions.get(generator.column)
            ctx.row[generator.column] = None if fraction and ctx.rng.random() < fraction else value


def _run_seed(seed: int | None, table: str, next_ids: dict[str, int]) -> int:
    """Same seed + same starting state → same rows; without a seed, different every run."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "big")
    material = f"{seed}|{table}|{sorted(next_ids.items())}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def _column_values(conn: psycopg.Connection, schema: str, table: str, column: str) -> Sequence[Any]:
    """A parent's key values; integer keys are packed 8 bytes each (not ~36 as Python ints in a list)."""
    with conn.cursor() as cur:
        cur.execute(sql.select_column(schema, table, column))
        first = cur.fetchone()
        if first is None:
            return []
        if type(first[0]) is int:
            packed = array("q", [first[0]])
            packed.extend(row[0] for row in cur)
            return packed
        return [first[0], *(row[0] for row in cur)]


def _existing_unique(conn: psycopg.Connection, schema: str, table: GeneratedTable) -> set[tuple[Any, ...]]:
    if not table.unique:
        return set()
    return {tuple(row) for row in conn.execute(sql.select_columns(schema, table.name, table.unique))}


def _unique_rows(
    table: GeneratedTable, ctx: RowContext, seen: set[tuple[Any, ...]], count: int, types: dict[str, str]
) -> Iterator[tuple[Any, ...]]:
    names = table.column_names
    has_json = any(t == "jsonb" for t in types.values())
    for _ in range(count):
        row = _unique_row(table, ctx, seen)
        values = [row[n] for n in names]
        yield tuple(Jsonb(v) if isinstance(v, dict | list) else v for v in values) if has_json else tuple(values)


def _unique_row(table: GeneratedTable, ctx: RowContext, seen: set[tuple[Any, ...]]) -> dict[str, Any]:
    row = _make_row(table, ctx)
    if not table.unique:
        return row
    for _ in range(UNIQUE_ATTEMPTS):
        key = tuple(row[c] for c in table.unique)
        if None in key or key not in seen:
            seen.add(key)
            return row
        _remake_unique_columns(table, ctx)  # a collision: new values for the unique columns only
    raise TerminalError(
        f"table {table.name}: no new unique ({', '.join(table.unique)}) after {UNIQUE_ATTEMPTS} tries; "
        "use a generator with more distinct values or fewer rows_per_run"
    )
