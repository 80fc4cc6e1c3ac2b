"""Schema drift: how the staged columns differ from the destination table's, and what a policy does.

One place for every destination kind: a destination lists its table's columns and the staged
columns (name → its own type text), says which of its type changes widen safely, and turns the
:class:`Resolution` into its own DDL. The policies (``on_schema_change``):

* ``evolve`` (the default): a new column is added (nullable; rows loaded before keep NULL until
  they load again); a type that widens safely is widened; a column the source dropped is kept and
  written as NULL from now on; a type change that does not widen is refused.
* ``fail``: any difference is refused, before anything is written.
* ``ignore``: only the columns both sides have are written, as they are.

A rename is a drop plus an add; the log says so when both happen at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from dagforge.errors import TerminalError
from dagforge.spec.model import DELETED_AT, SchemaChange


class SchemaChangeRefused(TerminalError):
    """The source's columns changed in a way the table's ``on_schema_change`` policy refuses."""


@dataclass(frozen=True)
class ColumnChange:
    column: str
    change: str
    """``added``, ``dropped`` or ``type``."""
    old: str | None = None
    """The destination's type (dropped, type)."""
    new: str | None = None
    """The staged (source's) type (added, type)."""

    def describe(self) -> str:
        if self.change == "added":
            return f"column {self.column!r} ({self.new}) is new in the source"
        if self.change == "dropped":
            return f"column {self.column!r} ({self.old}) is gone from the source"
        return f"column {self.column!r} changed type from {self.old} to {self.new}"


@dataclass(frozen=True)
class Resolution:
    """What the publish does about the changes, as the policy decided."""

    changes: tuple[ColumnChange, ...] = ()
    add: tuple[ColumnChange, ...] = ()
    """Columns to add to the destination table."""
    widen: tuple[ColumnChange, ...] = ()
    """Columns whose destination type becomes the staged one."""
    null_fill: tuple[str, ...] = ()
    """Destination columns the source dropped: written as NULL (and made nullable)."""
    write: tuple[str, ...] = ()
    """Staged columns the publish writes, in staged order."""
    notes: tuple[str, ...] = field(default=())
    """What the task log says, one line per decision."""

    def record(self) -> str | None:
        """The changes as JSON for the state table; None when nothing changed."""
        if not self.changes:
            return None
        return json.dumps([asdict(c) for c in self.changes], ensure_ascii=False)


Widens = Callable[[str, str], bool]
"""``widens(old, new)``: a column of type ``old`` can become ``new`` keeping every value."""


def diff_columns(
    destination: Mapping[str, str], staged: Mapping[str, str], *, ignore: Sequence[str] = (DELETED_AT,)
) -> list[ColumnChange]:
    """Added, dropped and retyped columns, in staged then destination order."""
    changes = [ColumnChange(name, "added", new=kind) for name, kind in staged.items() if name not in destination]
    for name, kind in staged.items():
        if name in destination and _normal(destination[name]) != _normal(kind):
            changes.append(ColumnChange(name, "type", old=destination[name], new=kind))
    changes += [
        ColumnChange(name, "dropped", old=kind)
        for name, kind in destination.items()
        if name not in staged and name not in ignore
    ]
    return changes


def resolve(
    policy: SchemaChange | str,
    destination: Mapping[str, str],
    staged: Mapping[str, str],
    *,
    widens: Widens,
    primary_key: Sequence[str] = (),
    table: str = "",
    ignore: Sequence[str] = (DELETED_AT,),
) -> Resolution:
    """Apply ``policy`` to the difference; raises :class:`SchemaChangeRefused` listing every refused change."""
    policy = SchemaChange(policy)
    changes = diff_columns(destination, staged, ignore=ignore)
    if not changes:
        return Resolution(write=tuple(staged))
    notes = [f"{table}: {c.describe()}" for c in changes]
    added = [c for c in changes if c.change == "added"]
    dropped = [c for c in changes if c.change == "dropped"]
    if added and dropped:
        notes.append(
            f"{table}: {_names(dropped)} dropped and {_names(added)} added in the same change: a rename is a "
            "drop plus an add"
        )
    if policy is SchemaChange.FAIL:
        raise SchemaChangeRefused(_refusal(table, changes, "on_schema_change: fail refuses every change"))
    if policy is SchemaChange.IGNORE:
        write = tuple(name for name in staged if name in destination)
        notes.append(f"{table}: on_schema_change: ignore, writing only the columns both sides have")
        return Resolution(tuple(changes), write=write, notes=tuple(notes))
    refused = [c for c in dropped if c.column in primary_key]
    widen, keep = [], []
    for change in (c for c in changes if c.change == "type"):
        if widens(change.old or "", change.new or ""):
            widen.append(change)
        elif widens(change.new or "", change.old or ""):
            keep.append(change)  # the destination's type already holds every value of the new one
        else:
            refused.append(change)
    if refused:
        raise SchemaChangeRefused(
            _refusal(
                table,
                refused,
                "on_schema_change: evolve adds columns and widens types, but cannot narrow or change a type "
                "that does not widen, nor drop a primary key column; change the destination table by hand, "
                "or set on_schema_change: ignore",
            )
        )
    notes += [f"{table}: adding column {c.column!r} {c.new}; rows loaded before hold NULL there" for c in added]
    notes += [f"{table}: widening {c.column!r} from {c.old} to {c.new}" for c in widen]
    notes += [f"{table}: keeping {c.column!r} as {c.old}, which holds every {c.new} value" for c in keep]
    notes += [f"{table}: keeping {c.column!r}; rows written from now on hold NULL there" for c in dropped]
    return Resolution(
        tuple(changes),
        add=tuple(added),
        widen=tuple(widen),
        null_fill=tuple(c.column for c in dropped),
        write=tuple(staged),
        notes=tuple(notes),
    )


def _names(changes: Sequence[ColumnChange]) -> str:
    return ", ".join(repr(c.column) for c in changes)


def _refusal(table: str, changes: Sequence[ColumnChange], why: str) -> str:
    listed = "; ".join(c.describe() for c in changes)
    return f"table {table}: the source's columns changed: {listed}. {why}. Nothing was written."


def _normal(type_text: str) -> str:
    return re.sub(r"\s+", " ", type_text.strip().lower()).replace(", ", ",")


# ---- Postgres: which type changes keep every value ----------------------------------------------

_INTEGERS = ("smallint", "integer", "bigint")
_PARAMS = re.compile(r"^(?P<base>[a-z ]+?)(?:\((?P<args>[\d,]+)\))?(?P<rest>( with(out)? time zone)?)$")


def postgres_widens(old: str, new: str) -> bool:
    """True when every value of type ``old`` is a value of ``new``, unchanged (format_type texts)."""
    old, new = _normal(old), _normal(new)
    if old == new:
        return True
    if old.endswith("[]") and new.endswith("[]"):
        return postgres_widens(old[:-2], new[:-2])
    if old in _INTEGERS:
        if new in _INTEGERS:
            return _INTEGERS.index(new) >= _INTEGERS.index(old)
        digits = {"smallint": 5, "integer": 10, "bigint": 19}[old]
        return new == "numeric" or _numeric_holds(new, digits, 0)
    if (old, new) in (("real", "double precision"),):
        return True
    if old.startswith("character varying") and (new == "text" or new.startswith("character varying")):
        return new == "text" or _length(new) is None or (_length(old) is not None and _length(new) >= _length(old))
    if old.startswith("numeric") and new.startswith("numeric"):
        if new == "numeric":
            return True
        match = _PARAMS.match(old)
        args = [int(a) for a in (match.group("args") or "").split(",") if a] if match else []
        if not args:
            return False
        precision, scale = args[0], args[1] if len(args) > 1 else 0
        return _numeric_holds(new, precision - scale, scale)
    return _precision_widens(old, new)


def _length(type_text: str) -> int | None:
    match = re.search(r"\((\d+)\)", type_text)
    return int(match.group(1)) if match else None


def _numeric_holds(type_text: str, integer_digits: int, scale: int) -> bool:
    match = re.match(r"^numeric\((\d+)(?:,(\d+))?\)$", type_text)
    if not match:
        return False
    precision, new_scale = int(match.group(1)), int(match.group(2) or 0)
    return new_scale >= scale and precision - new_scale >= integer_digits


def _precision_widens(old: str, new: str) -> bool:
    """timestamp(3) → timestamp, time(0) with time zone → time(6) with time zone, and the like."""
    a, b = _PARAMS.match(old), _PARAMS.match(new)
    if not a or not b or a.group("base") != b.group("base") or a.group("rest") != b.group("rest"):
        return False
    if a.group("base") not in ("timestamp", "time", "interval", "bit varying"):
        return False
    old_p, new_p = a.group("args"), b.group("args")
    if new_p is None:
        return True
    return old_p is not None and int(new_p) >= int(old_p)
