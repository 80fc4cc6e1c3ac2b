"""The contracts between the steps of a table load, shared by every source, stage and destination.

A load is check → (stage | extract → load) → publish, each step a task whose result (XCom) the
next step reads. What travels between them is defined here, once:

* :class:`Window`: what the check step decided to read (full, or rows from a watermark on).
* :class:`SourceSnapshot`: what one read of the source saw, taken in one consistent snapshot:
  the source's clock at the snapshot (``snapshot_at``), the cursor range, and the digest of the
  lookback zone (see :func:`dagforge.sql.postgres.zone_digest`).
* :class:`Staged`: rows waiting in a staging table, with the snapshot they came from, the window
  (so a publish can rebuild a staging table that was lost) and ``stage_id``, the identity of this
  staging (so a publish retried after its COMMIT is recognised and does nothing).
* :class:`Manifest`: what an object-storage extract wrote (parts, columns, the snapshot), read by
  the load step of any destination.
* :class:`TableState`: what the destination remembers of a table (``_dagforge_state``).
* :class:`Chunk`: one key range of a load split into chunks (in the chunk's window scope), and
  :meth:`Staged.combine`, the chunks' stagings as one staging for the publish.
* :class:`PublishOutcome`: what a publish did.

And the contract every source kind implements (:mod:`dagforge.sources`): a :class:`Source` turns
a window into a :class:`SourceRead` (its columns, typed for the destination, its rows as COPY
bytes or Arrow record batches into a :class:`PartWriter`, and the :class:`SourceSnapshot` it saw).
No stage or destination module knows which source kind fed it.

The ordering rules every destination enforces with these (docs/decisions/0008):

1. a row is never replaced by an older version of it (the staged cursor must be >= the target's);
2. a full replace applies only when its snapshot is not older than any snapshot published before;
   an incremental publish only when its snapshot is not older than the last full replace;
3. the watermark never moves backwards (typed comparison); the lookback digest moves with it;
4. publishes of one table are serialized by a lock in the destination, taken first in the publish
   transaction; a publish whose ``stage_id`` is recorded as published is a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dagforge.errors import TerminalError
from dagforge.spec.model import LoadMode
from dagforge.sql.postgres import key_table_name

_T = TypeVar("_T")


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build a contract from an XCom dict, ignoring keys this version does not know."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Window:
    """What the next load reads: everything, or rows from ``watermark`` (minus lookback) on.

    ``scope`` is what a source kind needs beyond that to read the same thing again (a file
    source: the URL rendered for the run's interval, the interval, the file's identity); it
    travels untouched through every step, so a retry or a restage reads what the check decided.
    """

    load_mode: str
    watermark: str | None
    new_rows: bool
    reason: str
    scope: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SourceSnapshot:
    """What one consistent read of the source saw, beside the rows themselves."""

    snapshot_at: str | None = None
    """The source's clock when the read's snapshot was taken (ISO 8601, UTC): orders full snapshots."""
    watermark_min: str | None = None
    watermark_max: str | None = None
    """The cursor's range over the rows read (text), None without a cursor or rows."""
    zone_digest: str | None = None
    """Digest of (key, cursor) of the rows from ``watermark_max`` minus lookback on: what the check compares."""
    source_rows: int | None = None
    """Live rows of the whole source table (without those its ``deleted_flag`` marks): reconciliation."""
    key_digest: str | None = None
    """Loads that stage the key set: count and order-independent hash of every key (:func:`~dagforge.sql.
    postgres.key_digest`)."""
    checksums: dict[str, str] | None = None
    """Per column, an order-independent checksum over every row (:func:`~dagforge.sql.postgres.
    column_checksums`): what versions before ``row_checksum`` recorded; a publish still compares it."""
    row_checksum: str | None = None
    """Full loads: an order-independent checksum of every row read, all its columns at once
    (:func:`~dagforge.sql.postgres.row_checksum`), compared with the destination's after the publish."""
    row_hashes: dict[str, str] | None = None
    """The columns ``row_checksum`` hashed by their type's own hash (name → :data:`~dagforge.sql.postgres.
    ROW_HASHES` kind; the others by their text): the destination hashes them alike. None: every column by
    its text, as versions before recorded."""


def _sum_or_none(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _sum_text(values: list[str | None]) -> str | None:
    """Checksums that are sums over rows: the whole table's is the sum of its chunks' (None if one lacks it)."""
    total = _sum_or_none([None if v is None else int(v) for v in values])
    return None if total is None else str(total)


def _sum_checksums(per_part: list[dict[str, str] | None]) -> dict[str, str] | None:
    """Per-column checksums are sums over rows (:func:`~dagforge.sql.postgres.column_checksums`): the
    whole table's is the sum of its chunks'."""
    if not per_part or any(c is None or c.keys() != (per_part[0] or {}).keys() for c in per_part):
        return None  # a part without them (or other columns): nothing to compare, rather than a wrong sum
    return {name: str(sum(int((c or {})[name]) for c in per_part)) for name in per_part[0] or {}}


def new_stage_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Staged:
    staging_table: str
    rows: int
    columns: list[str]
    load_mode: str = "incremental"
    """How publish applies it: ``full`` replaces the table, ``incremental`` upserts."""
    watermark: str | None = None
    """The highest cursor value staged, when the stage step knows it."""
    snapshot_at: str | None = None
    zone_digest: str | None = None
    stage_id: str = ""
    """This staging's identity: the key under which its publish is recorded (idempotent retries)."""
    window: dict[str, Any] | None = None
    """The check step's window (:meth:`Window.to_dict`), for rebuilding a lost staging table."""
    key_table: str | None = None
    """Every primary key of the source at the same snapshot, staged beside the rows (incremental
    deletes): destination rows whose key is not in it are deleted."""
    key_rows: int | None = None
    source_rows: int | None = None
    checksums: dict[str, str] | None = None
    key_digest: str | None = None
    source: dict[str, Any] | None = None
    """What the source recorded about the read (a file's URL, size, ETag, sha256, rows): the
    destination records it with the publish (``_dagforge_files``)."""
    row_checksum: str | None = None
    """:attr:`SourceSnapshot.row_checksum` of the rows staged, in ``columns`` order."""
    row_hashes: dict[str, str] | None = None
    """:attr:`SourceSnapshot.row_hashes`: how ``row_checksum`` hashed each column."""
    written_xid: str | None = None
    """Chunks (one shared staging table): the newest transaction that wrote staged rows (``xid8``).
    The publish swaps the table in only once every row is frozen, i.e. visible to every snapshot."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def interval(self) -> str | None:
        """The interval a file source's window loads (``""``: the table as a whole), None for other sources."""
        return ((self.window or {}).get("scope") or {}).get("interval")

    @property
    def per_interval(self) -> bool:
        """Published by interval (``interval`` replaces that interval's rows, ``append`` adds them)."""
        return LoadMode(self.load_mode) in (LoadMode.INTERVAL, LoadMode.APPEND)

    def file_record(self, pipeline: str, table_name: str, run_id: str) -> dict[str, Any]:
        """The ``_dagforge_files`` row this publish writes (every destination, the same columns)."""
        facts = self.source or {}
        return {
            "pipeline": pipeline, "table_name": table_name, "interval_start": self.interval,
            **{k: facts.get(k) for k in ("url", "size", "etag", "last_modified", "sha256", "bad_rows")},
            "rows_loaded": self.rows, "snapshot_at": self.snapshot_at, "run_id": run_id, "stage_id": self.stage_id,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Staged:
        return _from_dict(cls, data)

    @classmethod
    def of(
        cls,
        staging_table: str,
        rows: int,
        columns: list[str],
        window: Window,
        snapshot: SourceSnapshot,
        stage_id: str | None = None,
        *,
        key_table: str | None = None,
        key_rows: int | None = None,
    ) -> Staged:
        return cls(
            staging_table,
            rows,
            columns,
            window.load_mode,
            snapshot.watermark_max,
            snapshot.snapshot_at,
            snapshot.zone_digest,
            stage_id or new_stage_id(),
            window.to_dict(),
            key_table,
            key_rows,
            snapshot.source_rows,
            snapshot.checksums,
            snapshot.key_digest,
            row_checksum=snapshot.row_checksum,
            row_hashes=snapshot.row_hashes,
        )

    @classmethod
    def combine(cls, parts: list[Staged]) -> Staged:
        """The chunks' stagings (one per :class:`Chunk`, in any order) as the one staging the publish
        applies: the rows and figures summed, the oldest chunk's snapshot (what the ordering rules
        compare), and a ``stage_id`` that follows from the chunks' own, so a retried publish of the
        same chunks is recognised as published. The window keeps every chunk, for a restage."""
        if not parts:
            raise TerminalError("a chunked load with no staged chunk; clear the check task")
        chunks = [Chunk.of(p.source_window) for p in parts]
        count = chunks[0].count if chunks[0] else 0
        indexes = sorted(c.index for c in chunks if c is not None)
        if indexes != list(range(count)) or any(c is None or c.count != count for c in chunks):
            raise TerminalError(f"chunks staged: {indexes}, planned by the check step: {count}; clear the check task")
        first, tables = parts[0], {p.staging_table for p in parts}
        if len(tables) != 1 or any(p.columns != first.columns for p in parts):
            raise TerminalError(f"chunks staged into different tables or columns ({', '.join(sorted(tables))})")
        by_index = {c.index: p for c, p in zip(chunks, parts, strict=True) if c is not None}
        ordered = [by_index[i] for i in range(count)]
        digest = hashlib.sha1("|".join(p.stage_id for p in ordered).encode()).hexdigest()[:16]
        scope = {k: v for k, v in (first.window or {}).get("scope", {}).items() if k != "chunk"}
        window = {**(first.window or {}), "scope": {**scope, "chunks": [p.window for p in ordered]}}
        snapshots = [p.snapshot_at for p in ordered if p.snapshot_at]
        same_hashes = all(p.row_hashes == first.row_hashes for p in ordered)  # else sums of unlike hashes
        return dataclasses.replace(
            first,
            rows=sum(p.rows for p in ordered),
            watermark=max((p.watermark for p in ordered if p.watermark), default=None),
            snapshot_at=min(snapshots) if snapshots else None,
            stage_id=f"chunks-{digest}",
            window=window,
            source_rows=_sum_or_none([p.source_rows for p in ordered]),
            checksums=_sum_checksums([p.checksums for p in ordered]),
            row_checksum=_sum_text([p.row_checksum for p in ordered] if same_hashes else [None]),
            written_xid=max((p.written_xid for p in ordered if p.written_xid), key=int, default=None),
        )

    def chunk_windows(self) -> list[Window]:
        """A combined staging's chunk windows (:meth:`combine`); empty for one that was not chunked."""
        return [Window.from_dict(w) for w in ((self.window or {}).get("scope") or {}).get("chunks") or []]

    @property
    def source_window(self) -> Window:
        if self.window is None:  # staged by a version that did not record it: no retry can help
            raise TerminalError(
                f"staging {self.staging_table} carries no window to rebuild it from; clear the check task"
            )
        return Window.from_dict(self.window)


MAX_CHUNKS = 256
"""The most chunks one load splits into (mapped task instances of one task)."""


@dataclass(frozen=True)
class Chunk:
    """One key range of a chunked load: ``low <= by < high`` (None: unbounded; the last chunk also
    takes the rows whose ``by`` is NULL, unless ``by`` is NOT NULL). Travels in the chunk's window as
    ``scope["chunk"]``."""

    by: str
    index: int
    count: int
    low: int | None = None
    high: int | None = None
    not_null: bool = False
    """``by`` was NOT NULL when the check split the table: the last chunk's read asks for no NULLs,
    which keeps it an index range scan instead of a scan of the whole table (``OR by IS NULL``). The
    read checks the constraint again in its snapshot (:func:`dagforge.sources.postgres.nulls_checked`)."""

    @property
    def takes_nulls(self) -> bool:
        return self.high is None and not self.not_null

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, window: Window) -> Chunk | None:
        found = (window.scope or {}).get("chunk")
        return _from_dict(cls, found) if found else None

    def window(self, window: Window) -> Window:
        """``window`` narrowed to this chunk."""
        reason = f"{window.reason}; chunk {self.index + 1} of {self.count} ({self.describe()})"
        return dataclasses.replace(window, reason=reason, scope={**(window.scope or {}), "chunk": self.to_dict()})

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "every row"
        low = f"{self.by} >= {self.low}" if self.low is not None else ""
        high = f"{self.by} < {self.high}" if self.high is not None else ""
        return " and ".join(p for p in (low, high) if p) + (" or NULL" if self.takes_nulls else "")


def split_range(
    by: str,
    low: int | None,
    high: int | None,
    *,
    count: int | None = None,
    size: int | None = None,
    not_null: bool = False,
) -> list[Chunk]:
    """Ranges of equal width over ``[low, high]`` (the column's min and max now): ``count`` of them,
    or as many as ``size`` key values each make (at most :data:`MAX_CHUNKS`, never more than there
    are values). No rows (None): one chunk, which stages nothing, so a full load still empties."""
    if low is None or high is None:
        return [Chunk(by, 0, 1, not_null=not_null)]
    values = high - low + 1
    wanted = count if count is not None else -(-values // max(size or values, 1))
    n = max(1, min(wanted, MAX_CHUNKS, values))
    bounds = [low + (values * i) // n for i in range(1, n)]
    edges: list[int | None] = [None, *bounds, None]
    return [Chunk(by, i, n, edges[i], edges[i + 1], not_null) for i in range(n)]


@dataclass(frozen=True)
class TableState:
    """A table's row in ``_dagforge_state`` (None everywhere for a table never published)."""

    watermark: str | None = None
    zone_digest: str | None = None
    key_digest: str | None = None
    """Digest of every source key at the last load that tracked deletes: a delete alone changes it."""
    file: dict[str, Any] | None = None
    """A file source: what the destination recorded of the file the asked-for interval loaded
    (:data:`FILE_STATE_FIELDS`), None when it loaded none."""


FILE_STATE_FIELDS = ("url", "size", "etag", "last_modified", "sha256", "rows", "run_id", "snapshot_at")
"""What a destination's state reader returns of a ``_dagforge_files`` row, in its query's column order."""


@dataclass(frozen=True)
class PublishOutcome:
    rows: int
    """Rows applied to the final table (0 when nothing was applied)."""
    applied: bool
    reason: str


class StagingLost(Exception):
    """A staging table (or the files behind it) is gone or incomplete: stage it again, then publish.

    Not a TerminalError: a warehouse restart empties UNLOGGED tables, a staging table expires, a
    bucket is cleaned; the publish step rebuilds it from the window the check step decided.
    """


class ObjectMissing(StagingLost):
    """An object a manifest names (or the manifest itself) is not in the store: extract again."""


@dataclass(frozen=True)
class Column:
    """A column as it travels between steps: its name and its portable type (Postgres's spelling,
    ``format_type()``), which each destination maps to its own (:mod:`dagforge.bigquery.types`)."""

    name: str
    type_sql: str
    not_null: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As a manifest lists it: name and type, and ``not_null`` when the source declares it (the
        staging table then declares it too, so a swap need not scan the rows for it)."""
        return {"name": self.name, "type_sql": self.type_sql, **({"not_null": True} if self.not_null else {})}


PartSink = Callable[[Path, int], None]
"""Called with (finished local part file, rows in it)."""

RowBlock = tuple[bytes, int]
"""COPY output holding whole rows, and how many (:mod:`dagforge.sources.copy_rows`)."""


class PartWriter(Protocol):
    """How a stage writes part files (:class:`dagforge.stage.formats.StageFormat`); a source hands
    it its rows in whichever form it moves fastest."""

    copy_options: str
    """Options of a ``COPY … TO STDOUT`` whose rows :meth:`write_parts` reads."""
    quote: bytes
    """That COPY's quote character (what tells a row's end from a newline inside a value)."""

    def select_list(self, columns: list[Column]) -> str:
        """What a Postgres source's export ``SELECT`` returns for these columns."""
        ...

    def refused_value(self, error: Exception) -> Exception | None:
        """The terminal error for a value the export ``SELECT``'s guard refused (None: not one of theirs)."""
        ...

    def write_parts(self, blocks: Iterable[RowBlock], columns: list[Column], folder: Path, sink: PartSink) -> None:
        """Rows as COPY output, in blocks of whole rows."""
        ...

    def write_batches(self, batches: Iterable[Any], columns: list[Column], folder: Path, sink: PartSink) -> None:
        """Rows as Arrow record batches typed by each column's portable type."""
        ...


class SourceRead(Protocol):
    """One consistent read of a window: what a stage step needs of any source."""

    columns: list[Column]

    def write_rows(self, writer: PartWriter, folder: Path, sink: PartSink) -> None:
        """The window's rows into part files."""
        ...

    def key_columns(self) -> list[Column] | None:
        """The primary key columns when this read also stages every key (incremental deletes), else None."""
        ...

    def write_keys(self, writer: PartWriter, folder: Path, sink: PartSink) -> None:
        """Every key of the source at the same snapshot into part files (when :meth:`key_columns`)."""
        ...

    def snapshot(self) -> SourceSnapshot:
        """What the read saw, after the rows were written."""
        ...

    def manifest_facts(self) -> dict[str, Any]:
        """Anything else the manifest records about the read (a file's URL, size, ETag, checksum)."""
        ...


class CopyRead(SourceRead, Protocol):
    """A read that also speaks Postgres COPY: the direct path into a Postgres destination."""

    def copy_stream(self, keys: bool = False) -> AbstractContextManager[tuple[Iterable[bytes], bool]]:
        """The rows (or, with ``keys``, every key) as ``COPY … TO STDOUT`` chunks, and whether they
        are binary COPY (else text COPY); in :attr:`columns` order (or :meth:`key_columns`)."""
        ...


class ChunkedSource(Protocol):
    """A source that can split a window into key ranges (``chunks:``), each read on its own."""

    def split(self, load: Any, window: Window) -> list[Window]:
        """One window per chunk (``scope["chunk"]``, :class:`Chunk`), from the source's keys now."""
        ...


class Source(Protocol):
    """A source kind bound to its connection (:data:`dagforge.sources.SOURCES`)."""

    def decide(self, load: Any, state: Callable[..., TableState], run: RunInfo, *, force_full: bool = False) -> Window:
        """The check step: what the next load reads, given the destination's state of the table
        (``state()``; a file source asks ``state(interval)`` for the file that interval loaded too)."""
        ...

    def read(self, load: Any, window: Window) -> AbstractContextManager[SourceRead]:
        """One consistent read of ``window``."""
        ...


@dataclass(frozen=True)
class RunInfo:
    """What a source may need of the Airflow run it reads for."""

    run_id: str = ""
    data_interval_start: str | None = None
    """ISO 8601, None for a run without a data interval."""
    data_interval_end: str | None = None


LoadParts = Callable[[list[dict[str, Any]], list[dict[str, Any]], str], int]
"""``load_parts(parts, columns, table)``: a destination fills staging ``table`` from ``parts``; rows it holds."""


@dataclass
class Manifest:
    """What an object-storage extract wrote: the commit point of the extract step."""

    pipeline: str
    table: str
    run_id: str
    format: str
    load_mode: str
    columns: list[dict[str, Any]]
    rows: int = 0
    watermark_min: str | None = None
    watermark_max: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    encoding: str = "postgres"
    """Who reads the parts: the destination kind whose types they carry."""
    snapshot_at: str | None = None
    zone_digest: str | None = None
    window: dict[str, Any] | None = None
    attempt: str = ""
    version: int = 2
    source_rows: int | None = None
    checksums: dict[str, str] | None = None
    key_digest: str | None = None
    row_checksum: str | None = None
    row_hashes: dict[str, str] | None = None
    key_columns: list[dict[str, Any]] | None = None
    """Incremental deletes: the primary key columns of ``key_parts`` (every key of the source at the snapshot)."""
    key_parts: list[dict[str, Any]] = field(default_factory=list)
    key_rows: int | None = None
    source: dict[str, Any] = field(default_factory=dict)
    """What the source recorded about the read (:meth:`SourceRead.manifest_facts`)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return _from_dict(cls, json.loads(text))

    @property
    def snapshot(self) -> SourceSnapshot:
        """The read's facts, which the manifest carries under their own names."""
        return SourceSnapshot(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SourceSnapshot)})

    def record_snapshot(self, facts: SourceSnapshot) -> None:
        for fact in dataclasses.fields(facts):
            setattr(self, fact.name, getattr(facts, fact.name))

    def load_into(self, staging_table: str, load_parts: LoadParts, where: str) -> Staged:
        """The parts (and the key parts, beside) into staging tables by the destination's ``load_parts``,
        each checked against the row count listed here (:class:`StagingLost`: extract again)."""
        loaded = load_parts(self.parts, self.columns, staging_table)
        if loaded != self.rows:
            raise StagingLost(f"{where} lists {self.rows} rows but the parts held {loaded}")
        key_table = None
        if self.key_columns is not None:
            key_table = key_table_name(staging_table)
            found = load_parts(self.key_parts, self.key_columns, key_table)
            if found != self.key_rows:
                raise StagingLost(f"{where} lists {self.key_rows} keys but the key parts held {found}")
        names = [c["name"] for c in self.columns]
        staged = Staged.of(staging_table, loaded, names, self.source_window, self.snapshot, key_table=key_table,
                           key_rows=self.key_rows if key_table else None)  # fmt: skip
        return dataclasses.replace(staged, source=self.source or None)

    @property
    def source_window(self) -> Window:
        return Window.from_dict(self.window or {"load_mode": self.load_mode, "watermark": None, "new_rows": True,
                                                "reason": "window not recorded: every row"})  # fmt: skip
