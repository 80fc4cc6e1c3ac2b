"""The Postgres source: its catalog, its consistent reads, and whether anything is new.

Every read of rows (a direct stage, an object-store extract) runs inside :func:`consistent_read`:
one ``REPEATABLE READ, READ ONLY`` transaction whose first statement reads the source's clock, so
the rows, the cursor range and the lookback digest all come from one snapshot, and that snapshot
has a time that orders it against the others (docs/decisions/0008).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from dagforge.contracts import (
    Chunk,
    Column,
    PartSink,
    PartWriter,
    RowBlock,
    RunInfo,
    SourceSnapshot,
    TableState,
    Window,
    split_range,
)
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.sources.copy_rows import message_blocks, whole_row_blocks
from dagforge.sources.pg_relay import RelayUnavailable, relay_kind, relayed_copy
from dagforge.spec.model import LoadMode
from dagforge.sql import postgres as sql
from dagforge.sql.twin import alongside
from dagforge.sql.types import TypeNode, binary_copy_exact, export_expression, portable_type
from dagforge.stage.overlap import in_background

log = logging.getLogger(__name__)


class MissingTable(TerminalError):
    """A table the load needs does not exist."""


@dataclass(frozen=True)
class SourceColumn:
    column: sql.Column
    """The column with the type it gets at a Postgres destination (:func:`portable_type`)."""
    category: str
    """pg_type.typcategory: D date/time, N numeric, S string, …"""
    builtin: bool
    source_type: str = ""
    """The source's own ``format_type()``, e.g. ``public.mood`` where ``column`` says ``text``."""
    binary_exact: bool = False
    """A binary COPY into the destination type keeps every value (:func:`binary_copy_exact`)."""

    @classmethod
    def from_row(cls, row: tuple) -> SourceColumn:
        """From a row of :func:`dagforge.sql.postgres.describe_columns`."""
        name, source_type, not_null, category, builtin, chain_rows = row
        chain = [TypeNode.from_row(node) for node in chain_rows]
        column = sql.Column(name, portable_type(chain), not_null)
        return cls(column, category, builtin, source_type, binary_copy_exact(chain))


require_autocommit = sql.require_autocommit


def describe_source(conn: psycopg.Connection, load: TableLoad) -> list[SourceColumn]:
    """The source table's columns (all, or those the spec selects), in table order."""
    ref = load.source
    rows = conn.execute(sql.describe_columns(), {"schema": ref.schema, "table": ref.table}).fetchall()
    if not rows:
        raise MissingTable(f"source table {ref.schema}.{ref.table} does not exist (connection {ref.connection!r})")
    found = {r[0]: SourceColumn.from_row(r) for r in rows}
    wanted = load.columns or tuple(found)
    missing = [c for c in (*wanted, *load.primary_key, *([load.cursor] if load.cursor else [])) if c not in found]
    if missing:
        raise MissingTable(f"source table {ref.schema}.{ref.table} has no column(s) {', '.join(missing)}")
    return [found[c] for c in wanted]


def lower_bound(columns: list[SourceColumn], load: TableLoad) -> str:
    """The window's inclusive lower bound over ``%(watermark)s``, lookback included."""
    cursor = next(c for c in columns if c.column.name == load.cursor)
    try:
        return sql.cursor_bound(cursor.source_type or cursor.column.type_sql, cursor.category, load.lookback)
    except ValueError as exc:
        raise TerminalError(f"table {load.source.table}: {exc}") from exc


def window_bound(columns: list[SourceColumn], load: TableLoad, window: Window) -> tuple[str | None, dict | None]:
    """The bound SQL and its parameters for this window (None, None: every row)."""
    if window.watermark is None:
        return None, None
    return lower_bound(columns, load), {"watermark": window.watermark}


def chunk_filter(window: Window) -> str:
    """The condition of the window's chunk (empty: the window is not a chunk, or its only one)."""
    chunk = Chunk.of(window)
    return sql.chunk_where(chunk.by, chunk.low, chunk.high, nulls=not chunk.not_null) if chunk else ""


def nulls_checked(conn: psycopg.Connection, load: TableLoad, window: Window) -> Window:
    """A last chunk that asks for no NULL keys (its column was NOT NULL when the check split the
    table) asks so only while the read's snapshot sees the column NOT NULL; else it takes NULLs again.

    Inside :func:`consistent_read`, after its snapshot: the catalog is read as of that snapshot, and a
    row with a NULL key that the snapshot sees was written after a ``DROP NOT NULL`` it sees too."""
    chunk = Chunk.of(window)
    if chunk is None or chunk.high is not None or not chunk.not_null:
        return window
    ref = load.source
    params = {"schema": ref.schema, "table": ref.table, "column": chunk.by}
    if conn.execute(sql.column_not_null(), params).fetchone()[0]:
        return window
    log.warning("%s: %s is no longer NOT NULL: the last chunk reads its NULLs too", ref.label, chunk.by)
    scope = {**(window.scope or {}), "chunk": dataclasses.replace(chunk, not_null=False).to_dict()}
    return dataclasses.replace(window, scope=scope)


INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})

READ_AHEAD = 8
"""How many of the relay's blocks (1 MB each, cut at row ends) the extract reads ahead of the part writer."""


def split_window(source: psycopg.Connection, load: TableLoad, window: Window) -> list[Window]:
    """``chunks:``: the window as ranges of an integer column, from its min and max now (nothing
    new: no chunk). Equal widths: a skewed key makes uneven chunks, never wrong ones."""
    if not window.new_rows:
        return []
    spec = load.chunks or {}
    by, ref = spec.get("by"), load.source
    column = next((c for c in describe_source(source, load) if c.column.name == by), None)
    if column is None or column.source_type not in INTEGER_TYPES:
        found = f"is {column.source_type}" if column else "is not one of its columns"
        raise TerminalError(
            f"table {ref.label}: chunks: splits by an integer column (smallint, integer, bigint); {by!r} {found}"
        )
    low, high = source.execute(sql.key_range(ref.schema, ref.table, by)).fetchone()
    bounds = [int(v) if v is not None else None for v in (low, high)]
    chunks = split_range(by, bounds[0], bounds[1], count=spec.get("count"), size=spec.get("size"),
                         not_null=column.column.not_null)  # fmt: skip
    return [chunk.window(window) for chunk in chunks]


@contextlib.contextmanager
def consistent_read(source: psycopg.Connection) -> Iterator[str]:
    """One snapshot for everything read inside; yields the source's clock at that snapshot."""
    require_autocommit(source)
    with source.transaction():
        source.execute(sql.BEGIN_SNAPSHOT)
        for statement in sql.PIN_EXPORT_STYLES:
            source.execute(statement)
        yield source.execute(sql.SNAPSHOT_CLOCK).fetchone()[0]


def _zone_digest_sql(columns: list[SourceColumn], load: TableLoad) -> str:
    ref = load.source
    return sql.zone_digest(ref.schema, ref.table, load.primary_key, load.cursor or "", lower_bound(columns, load))


@dataclass(frozen=True)
class TableFigures:
    """What reconciliation and delete tracking need of the whole table, from the read's snapshot."""

    source_rows: int | None = None
    key_digest: str | None = None
    row_checksum: str | None = None
    row_hashes: dict[str, str] | None = None


def window_facts(
    source: psycopg.Connection,
    load: TableLoad,
    columns: list[SourceColumn],
    window: Window,
    snapshot_at: str,
    figures: TableFigures | None = None,
) -> SourceSnapshot:
    """Cursor range, lookback digest and the whole-table figures of what the window reads.

    Runs inside :func:`consistent_read`: everything describes the same snapshot. ``figures`` come
    from :func:`figures_alongside` (computed while the rows stream); without them they are computed
    here, one more scan of the table.
    """
    ref = load.source
    low = high = digest = None
    if load.cursor:
        bound, params = window_bound(columns, load, window)
        query = sql.cursor_range(ref.schema, ref.table, load.cursor, bound, chunk_filter(window))
        low, high = source.execute(query, params).fetchone()
        if high is not None and load.primary_key:
            digest = source.execute(_zone_digest_sql(columns, load), {"watermark": high}).fetchone()[0]
    if figures is None:
        figures = table_figures(source, load, columns, window)
    return SourceSnapshot(
        snapshot_at,
        low,
        high,
        digest,
        source_rows=figures.source_rows,
        key_digest=figures.key_digest,
        row_checksum=figures.row_checksum,
        row_hashes=figures.row_hashes,
    )


def table_figures(
    conn: psycopg.Connection, load: TableLoad, columns: list[SourceColumn], window: Window
) -> TableFigures:
    """Loads that track deletes: the digest of every key. Full: the row checksum of the whole table
    (every read column, in their order: what the stage writes); incremental: its live row count.
    Inside a snapshot's transaction, last in it: the text forms are pinned from here on (``SET
    LOCAL``); the key digest before, as the check computes it."""
    relation, chunk = sql.qualified(load.source.schema, load.source.table), chunk_filter(window)
    keys = None
    if load.stages_keys(window.load_mode):
        keys = conn.execute(sql.key_digest(load.source.schema, load.source.table, load.primary_key)).fetchone()[0]
    for statement in sql.PIN_TEXT_FORMS:
        conn.execute(statement)
    if window.load_mode == LoadMode.FULL.value:
        hashes = row_hashes(columns)
        query = sql.row_checksum(relation, [(c.column.name, None) for c in columns], chunk, hashes)
        return TableFigures(key_digest=keys, row_checksum=conn.execute(query).fetchone()[1], row_hashes=hashes)
    flag = next((c for c in columns if c.column.name == load.deleted_flag), None)
    conditions = [f"NOT ({sql.flag_set('t', flag.column.name, flag.column.type_sql)})"] if flag else []
    where = " AND ".join([*conditions, *([chunk] if chunk else [])])
    return TableFigures(conn.execute(sql.count_where(f"{relation} t", where)).fetchone()[0], keys)


def row_hashes(columns: list[SourceColumn]) -> dict[str, str]:
    """The columns the row checksum hashes by their type's own hash (:func:`~dagforge.sql.postgres.
    row_hash_kind`): those whose source type and destination type are of one kind, so the destination
    hashes the same value (an enum travelling as text, a domain: by their text)."""
    hashes = {}
    for c in columns:
        kind = sql.row_hash_kind(c.source_type or c.column.type_sql)
        if kind and kind == sql.row_hash_kind(c.column.type_sql):
            hashes[c.column.name] = kind
    return hashes


@contextlib.contextmanager
def figures_alongside(
    source: psycopg.Connection, load: TableLoad, columns: list[SourceColumn], window: Window
) -> Iterator[Callable[[], TableFigures | None]]:
    """Compute :func:`table_figures` on a second connection that shares the snapshot of the
    :func:`consistent_read` around it (:func:`dagforge.sql.twin.alongside`), while the caller
    streams the rows.

    Yields a function that waits for the figures; it returns None when no second connection could
    share the snapshot (a standby, no free connection): :func:`window_facts` then computes them.
    """
    with alongside(source, lambda twin: table_figures(twin, load, columns, window), sql.PIN_EXPORT_STYLES,
                   "computing the table's figures after the rows") as figures:  # fmt: skip
        yield figures


def choose_window(
    source: psycopg.Connection, load: TableLoad, state: Callable[[], TableState], *, force_full: bool = False
) -> Window:
    """Full, forced full, first-time incremental, incremental with new rows, or nothing new.

    ``state`` reads the destination's :class:`TableState` (any destination kind). "Something new"
    uses the load's own lower bound: a row past the watermark, or a lookback zone whose digest
    differs from the one the last load recorded (a late row, a change, a delete inside lookback).
    """
    require_autocommit(source)
    if load.mode is LoadMode.FULL:
        return Window("full", None, True, "full mode reloads the whole table")
    if force_full:
        return Window("full", None, True, "a full reload was asked for when the run was triggered")
    last = state()
    if last.watermark is None:
        return Window("incremental", None, True, "first incremental run: loading every row")
    with source.transaction():  # the digests print values as the stage's snapshot does
        for statement in sql.PIN_EXPORT_STYLES:
            source.execute(statement)
        new_rows, reason = _anything_new(source, load, last)
    return Window("incremental", last.watermark, new_rows, reason)


def _anything_new(source: psycopg.Connection, load: TableLoad, last: TableState) -> tuple[bool, str]:
    columns = describe_source(source, load)
    cursor = next(c for c in columns if c.column.name == load.cursor)
    ref, params = load.source, {"watermark": last.watermark}
    after = sql.has_rows_after(ref.schema, ref.table, load.cursor or "", cursor.source_type or cursor.column.type_sql)
    if source.execute(after, params).fetchone()[0]:
        return True, f"rows with {load.cursor} > {last.watermark}"
    zone = f"{load.cursor} >= {last.watermark}" + (f" - {load.lookback}" if load.lookback is not None else "")
    if last.zone_digest is None:
        return True, f"no digest of the rows with {zone} recorded yet: reading them again"
    now = source.execute(_zone_digest_sql(columns, load), params).fetchone()[0]
    if now != last.zone_digest:
        return True, f"rows with {zone} changed since the last load ({last.zone_digest} → {now})"
    if load.stages_keys(LoadMode.INCREMENTAL):
        keys = source.execute(sql.key_digest(ref.schema, ref.table, load.primary_key)).fetchone()[0]
        if keys != last.key_digest:
            return True, f"the source's keys changed since the last load (deletes: {load.delete_mode.value}): {keys}"
    return False, f"no row with {load.cursor} > {last.watermark}, none changed with {zone}"


class PostgresSource:
    """The Postgres source kind (:class:`dagforge.contracts.Source`) on one autocommit connection."""

    kind = "postgres"

    def __init__(self, conn: psycopg.Connection):
        require_autocommit(conn)
        self.conn = conn

    def decide(
        self, load: TableLoad, state: Callable[[], TableState], run: RunInfo | None = None, *, force_full: bool = False
    ) -> Window:
        return choose_window(self.conn, load, state, force_full=force_full)

    def split(self, load: TableLoad, window: Window) -> list[Window]:
        return split_window(self.conn, load, window)

    @contextlib.contextmanager
    def read(self, load: TableLoad, window: Window) -> Iterator[PostgresRead]:
        """The window in one snapshot, the whole-table figures computed alongside on a twin connection."""
        described = describe_source(self.conn, load)
        with consistent_read(self.conn) as snapshot_at:
            window = nulls_checked(self.conn, load, window)
            with figures_alongside(self.conn, load, described, window) as figures:
                yield PostgresRead(self.conn, load, window, described, snapshot_at, figures)


class PostgresRead:
    """One consistent read of a window (:class:`dagforge.contracts.CopyRead`)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        load: TableLoad,
        window: Window,
        described: list[SourceColumn],
        snapshot_at: str,
        figures: Callable[[], TableFigures | None],
    ):
        self.conn, self.load, self.window, self.described = conn, load, window, described
        self.snapshot_at, self._figures = snapshot_at, figures
        self.columns = [Column(c.column.name, c.column.type_sql, c.column.not_null) for c in described]
        self.bound, self.params = window_bound(described, load, window)
        self.chunk = chunk_filter(window)

    def key_columns(self) -> list[Column] | None:
        if not self.load.stages_keys(self.window.load_mode):
            return None
        return [next(c for c in self.columns if c.name == k) for k in self.load.primary_key]

    def _select(self, columns: list[Column], select_list: str, keys: bool) -> tuple[str, dict | None]:
        ref = self.load.source
        names = [c.name for c in columns]
        if keys:  # every key, whatever the window
            return sql.select_window(ref.schema, ref.table, names, None, None, select_list=select_list), None
        return sql.select_window(ref.schema, ref.table, names, self.load.cursor, self.bound,
                                 select_list=select_list, where=self.chunk), self.params  # fmt: skip

    def write_rows(self, writer: PartWriter, folder: Any, sink: PartSink) -> None:
        self._write(writer, self.columns, folder, sink, keys=False)

    def write_keys(self, writer: PartWriter, folder: Any, sink: PartSink) -> None:
        self._write(writer, self.key_columns() or [], folder, sink, keys=True)

    def _write(self, writer: PartWriter, columns: list[Column], folder: Any, sink: PartSink, *, keys: bool) -> None:
        select, params = self._select(columns, writer.select_list(columns), keys)
        copy_sql = f"COPY ({select}) TO STDOUT {writer.copy_options}"
        try:
            with (
                self._copy_out(copy_sql, params) as (chunks, relayed),
                self._row_blocks(chunks, relayed, writer) as blocks,
            ):
                writer.write_parts(blocks, columns, folder, sink)
        except psycopg.errors.InvalidTextRepresentation as error:  # an encoding's export guard refusing a value
            raise (writer.refused_value(error) or error) from error

    @staticmethod
    def _row_blocks(
        chunks: Iterable[bytes], relayed: bool, writer: PartWriter
    ) -> contextlib.AbstractContextManager[Iterable[RowBlock]]:
        """The COPY output as blocks of whole rows. From the relay, its pipe is drained and its blocks
        cut at row ends in a thread while the writer parses and writes the blocks before (Arrow
        releases the GIL), so the source reads on meanwhile; closed before the relay's pipe is."""
        if not relayed:
            return contextlib.nullcontext(message_blocks(chunks))
        ahead = in_background(lambda: whole_row_blocks(chunks, writer.quote), READ_AHEAD, "dagforge-copy-read")
        return contextlib.closing(ahead)

    @contextlib.contextmanager
    def copy_stream(self, keys: bool = False) -> Iterator[tuple[Any, bool]]:
        """COPY chunks of the rows (or every key): binary where a binary COPY into the destination
        type keeps every value, else text, exact for every type (:mod:`dagforge.sql.types`)."""
        by_name = {c.column.name: c for c in self.described}
        described = [by_name[c.name] for c in ((self.key_columns() or []) if keys else self.columns)]
        binary = all(c.binary_exact for c in described)
        exports = ", ".join(export_expression(c.column.name, c.column.type_sql) for c in described)
        columns = [Column(c.column.name, c.column.type_sql) for c in described]
        select, params = self._select(columns, exports, keys)
        with self._copy_out(sql.copy_out(select, binary), params) as (chunks, _):
            yield chunks, binary

    @contextlib.contextmanager
    def _copy_out(self, copy_sql: str, params: dict | None) -> Iterator[tuple[Iterable[bytes], bool]]:
        """The COPY's output, and whether it comes through the relay (blocks cut anywhere) or from
        psycopg in this process (one message per row)."""
        kind = relay_kind()
        if kind is not None:
            bound = psycopg.ClientCursor(self.conn).mogrify(copy_sql, params)
            try:
                with relayed_copy(self.conn, bound, sql.PIN_EXPORT_STYLES, kind) as blocks:
                    yield blocks, True
                return
            except RelayUnavailable as why:
                log.info("reading in this process (the %s COPY relay could not start: %s)", kind, why)
        with self.conn.cursor() as cur, cur.copy(copy_sql, params) as copy:
            yield copy, False

    def snapshot(self) -> SourceSnapshot:
        return window_facts(self.conn, self.load, self.described, self.window, self.snapshot_at, self._figures())

    def manifest_facts(self) -> dict[str, Any]:
        return {}
