"""Generated tables: their model, the order they are filled in, and the checks validation runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dagforge.generate.columns import Generator, SequenceGenerator, build_generator, generator_kinds

Finding = tuple[tuple[str | int, ...], str]


@dataclass(frozen=True)
class GeneratedTable:
    name: str
    rows_min: int
    rows_max: int
    generators: tuple[Generator, ...]
    """In table (declaration) order."""
    primary_key: tuple[str, ...]
    unique: tuple[str, ...]
    types: Mapping[str, str]
    """Explicit ``type:`` per column; the others are derived."""
    null_fractions: Mapping[str, float]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratedTable:
        columns: Mapping[str, Mapping[str, Any]] = data["columns"]
        generators = tuple(build_generator(name, spec) for name, spec in columns.items())
        rows = data["rows_per_run"]
        low, high = (rows, rows) if isinstance(rows, int) else (rows["min"], rows["max"])
        sequences = [g.column for g in generators if isinstance(g, SequenceGenerator)]
        return cls(
            name=data["name"],
            rows_min=low,
            rows_max=high,
            generators=generators,
            primary_key=tuple(data.get("primary_key", sequences[:1])),
            unique=tuple(data.get("unique", ())),
            types={n: s["type"] for n, s in columns.items() if "type" in s},
            null_fractions={n: s["null_fraction"] for n, s in columns.items() if s.get("null_fraction")},
        )

    @property
    def column_names(self) -> list[str]:
        return [g.column for g in self.generators]

    @cached_property
    def steps(self) -> tuple[tuple[Generator, float], ...]:
        """(generator, null fraction) in evaluation order: what each row runs."""
        return tuple((g, self.null_fractions.get(g.column, 0.0)) for g in self.ordered_generators)

    @cached_property
    def ordered_generators(self) -> tuple[Generator, ...]:
        """:meth:`evaluation_order`, computed once (it runs for every row)."""
        return tuple(self.evaluation_order())

    def evaluation_order(self) -> list[Generator]:
        """Generators ordered so that every template runs after the columns it reads."""
        by_name = {g.column: g for g in self.generators}
        ordered: list[Generator] = []
        placed: set[str] = set()
        while len(ordered) < len(self.generators):
            ready = [g for g in self.generators if g.column not in placed and g.reads() & set(by_name) <= placed]
            if not ready:
                raise ValueError(f"table {self.name}: templates read each other in a cycle")
            ordered.extend(ready)
            placed.update(g.column for g in ready)
        return ordered

    def parents(self) -> set[str]:
        return {p[0] for g in self.generators if (p := g.points_at()) and p[0] != self.name}


def fill_order(tables: Sequence[GeneratedTable]) -> list[GeneratedTable]:
    """Parents before children (references); ValueError on a cycle."""
    remaining = {t.name: t for t in tables}
    ordered: list[GeneratedTable] = []
    while remaining:
        ready = [t for t in remaining.values() if not (t.parents() & set(remaining))]
        if not ready:
            raise ValueError("tables reference each other in a cycle: " + " -> ".join(sorted(remaining)))
        for table in ready:
            ordered.append(table)
            del remaining[table.name]
    return ordered


def check_generated_tables(tables: Sequence[Any]) -> Iterator[Finding]:
    """Every problem with generated tables' specs, as (key path, message). Reads raw data defensively."""
    well_formed: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for index, table in enumerate(tables):
        if not (isinstance(table, Mapping) and isinstance(table.get("columns"), Mapping)):
            continue
        findings = list(_check_columns(index, table["columns"]))
        findings.extend(_check_table_keys(index, table))
        if not findings and isinstance(table.get("rows_per_run"), int | Mapping):
            findings.extend(_check_template_cycles(index, table))
        yield from findings
        if not findings and isinstance(table.get("name"), str):
            well_formed[table["name"]] = (index, table)
    yield from _check_references(well_formed)


def _check_columns(index: int, columns: Mapping[str, Any]) -> Iterator[Finding]:
    for name, spec in columns.items():
        path = ("tables", index, "columns", name)
        if not isinstance(spec, Mapping):
            continue
        kinds = generator_kinds(spec)
        if len(kinds) != 1:
            found = f"found {', '.join(kinds)}" if kinds else "found none"
            yield path, f"give exactly one of faker, sequence, choice, range, reference, template ({found})"
            continue
        if "weights" in spec and kinds != ["choice"]:
            yield (*path, "weights"), "weights only applies to choice"
        for problem in build_generator(name, spec).problems():
            yield (*path, kinds[0]), problem
    templates = {n: build_generator(n, s) for n, s in columns.items() if isinstance(s, Mapping) and "template" in s}
    for name, generator in templates.items():
        unknown = sorted(generator.reads() - set(columns))
        if unknown:
            yield (
                ("tables", index, "columns", name, "template"),
                (
                    f"template uses {', '.join(unknown)}: not a column of this table nor a helper "
                    "(days, hours, minutes, randint, uniform, pick, fake)"
                ),
            )


def _check_template_cycles(index: int, table: Mapping[str, Any]) -> Iterator[Finding]:
    try:
        GeneratedTable.from_dict(table).evaluation_order()
    except (ValueError, KeyError, TypeError) as exc:
        yield ("tables", index, "columns"), str(exc)


def _check_table_keys(index: int, table: Mapping[str, Any]) -> Iterator[Finding]:
    columns = table["columns"]
    for key in ("primary_key", "unique"):
        for position, column in enumerate(table.get(key) or []):
            if column not in columns:
                yield ("tables", index, key, position), f"{column!r} is not a column of {table.get('name')}"
    rows = table.get("rows_per_run")
    bounded = isinstance(rows, Mapping) and isinstance(rows.get("min"), int) and isinstance(rows.get("max"), int)
    if bounded and rows["min"] > rows["max"]:
        yield ("tables", index, "rows_per_run"), f"min {rows['min']} is greater than max {rows['max']}"
    sequences = [n for n, s in columns.items() if isinstance(s, Mapping) and "sequence" in s]
    if not table.get("primary_key") and not sequences:
        yield ("tables", index, "columns"), "needs a sequence column or an explicit primary_key"


def _check_references(tables: dict[str, tuple[int, Mapping[str, Any]]]) -> Iterator[Finding]:
    keys = {name: _unique_columns(table) for name, (_, table) in tables.items()}
    for name, (index, table) in tables.items():
        for column, spec in table["columns"].items():
            if not (isinstance(spec, Mapping) and "reference" in spec):
                continue
            path = ("tables", index, "columns", column, "reference")
            parent, parent_column = spec["reference"].split(".")
            if parent not in tables:
                yield path, f"{parent!r} is not a table of this pipeline ({', '.join(sorted(tables))})"
            elif parent_column not in tables[parent][1]["columns"]:
                yield path, f"{parent_column!r} is not a column of {parent}"
            elif parent_column not in keys[parent]:
                yield path, f"{parent}.{parent_column} must be its table's primary key or a unique column"
            elif parent == name:
                yield path, "a table cannot reference itself"
    try:
        fill_order([GeneratedTable.from_dict(t) for _, t in tables.values()])
    except ValueError as exc:
        yield ("tables",), str(exc)


def _unique_columns(table: Mapping[str, Any]) -> set[str]:
    sequences = [n for n, s in table["columns"].items() if isinstance(s, Mapping) and "sequence" in s]
    primary = table.get("primary_key") or sequences[:1]
    found = set(primary) if len(primary) == 1 else set()
    unique = table.get("unique") or []
    return found | (set(unique) if len(unique) == 1 else set())
