"""File bytes → typed Arrow record batches; the rows that do not parse are set aside with their line.

:func:`read_batches` turns a downloaded file (a binary stream, read once, front to back) into record
batches holding exactly the declared columns, typed as :mod:`dagforge.sources.file_types` says.
Memory stays at a few blocks of ``batch_bytes`` whatever the file's size: CSV and JSON lines are
read block by block, each block cut at a row boundary; Parquet, whose footer comes last, is spooled
to a temporary file and read a row group at a time.

How a block is parsed:

1. Fast path: pyarrow's C++ reader on the whole block, set up once with the declared types (CSV:
   ``column_types``, ``include_columns``, null markers, ``timestamp_parsers``; JSON lines: an
   explicit schema), then the vectorised checks the reader cannot make (varchar lengths, plain
   numerics, JSON texts, time zones, custom date formats). No Python runs per row.
2. Slow path, for a block the reader refuses: its rows are located, then the block is bisected —
   each half parsed again by the same reader — down to the rows that fail. Those are reported and
   dropped, the good halves kept. The same reader decides on both paths, so a value is accepted
   or refused the same way wherever it falls.

Decisions:

* CSV nulls follow Postgres's ``COPY … CSV``: an unquoted null marker (by default the empty field)
  is NULL; a quoted value never is, so ``""`` is the empty string in a text column (and a bad value
  in a column of another type), and ``"NA"`` is the text NA even when ``NA`` is a null marker.
* A CSV row's line is the physical line (1-based, the header is line 1) where the row starts: a
  quoted value with newlines spans lines, and the rows after it count them. JSON lines: the line;
  Parquet: the row number (1-based). Blank lines are skipped, and counted.
* Booleans accept true/false, t/f, 1/0, yes/no in any case.
* Nothing is rounded or truncated: a decimal with more digits than its type, an integer out of its
  range, a sub-microsecond timestamp are bad rows.
* With ``newlines_in_values`` a newline ends a row when an even number of quote characters precedes
  it in the block (RFC 4180 quoting); without it, every newline ends a row.
* Text must be in an ASCII-compatible encoding (UTF-8, Latin-1, Windows-1252…); others are
  transcoded to UTF-8 block by block.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import itertools
import json
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from dagforge.errors import TerminalError
from dagforge.sources.file_types import FileType, declared_type

FORMATS = ("csv", "csv.gz", "jsonl", "jsonl.gz", "parquet")
PARQUET_BATCH_ROWS = 65_536
INFER_BYTES = 4 << 20
"""How much of a text file :func:`infer_columns` reads at most."""
MAX_ROW_BYTES = 64 << 20
"""A row longer than this (in practice: an unbalanced quote character) fails the read."""
BAD_ROWS_SHOWN = 10
TRUE_WORDS, FALSE_WORDS = ("true", "t", "1", "yes"), ("false", "f", "0", "no")

_UTC = pa.timestamp("us", "UTC")
_NAIVE = pa.timestamp("us")
_NUMERIC_TEXT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_CLOCK = r"\d{2}(:?\d{2}(:?\d{2}([.,]\d+)?)?)?"
_ZONE = r"\s*([Zz]|[+-]\d{2}(:?\d{2})?)"
_OFFSET = rf"[T ]{_CLOCK}{_ZONE}$"
"""Ends with a time and a UTC offset (``… 10:00+02:00``, ``…T10:00:00Z``)."""
_DATE_SHAPE = r"^\d{4}-\d{2}-\d{2}$"
_NAIVE_SHAPE = rf"^\d{{4}}-\d{{2}}-\d{{2}}([T ]{_CLOCK})?$"
_AWARE_SHAPE = rf"^\d{{4}}-\d{{2}}-\d{{2}}[T ]{_CLOCK}{_ZONE}$"
_TIME_SHAPE = rf"^{_CLOCK}$"
_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
_QUOTED = re.compile(r"'(.*)'")
"""The value in a pyarrow conversion error: ``… invalid value 'abc'``."""


# ---- options, columns, bad rows ---------------------------------------------------------------


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV file is written. Defaults: RFC 4180 with a header row, UTF-8, ISO 8601 dates."""

    delimiter: str = ","
    header: bool = True
    """False: the file's fields are the declared columns, in declared order."""
    quote: str | None = '"'
    null_values: tuple[str, ...] = ("",)
    """Unquoted field texts that mean NULL (in a column of any type)."""
    encoding: str = "utf-8"
    date_formats: tuple[str, ...] = ()
    """strptime formats (``%d/%m/%Y``) tried in order for date columns; empty: ISO 8601."""
    timestamp_formats: tuple[str, ...] = ()
    """strptime formats (``%Y-%m-%d %H:%M:%S``) for timestamp columns; empty: ISO 8601."""
    newlines_in_values: bool = False
    """True: quoted values may hold newlines (rows are then cut by counting quotes)."""

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in "\r\n":
            raise ValueError(f"csv delimiter must be one character other than a newline, not {self.delimiter!r}")
        if self.quote is not None and (len(self.quote) != 1 or self.quote in ("\r", "\n", self.delimiter)):
            raise ValueError(f"csv quote must be one character (not the delimiter) or null, not {self.quote!r}")
        try:
            ascii_compatible = "\n,;\"'\t".encode(self.encoding) == b"\n,;\"'\t"
        except LookupError:
            raise ValueError(f"unknown csv encoding {self.encoding!r}") from None
        if not ascii_compatible:
            raise ValueError(f"csv encoding {self.encoding!r} is not ASCII-compatible (UTF-16/32 are not supported)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CsvOptions:
        """From a spec's ``csv:`` mapping; a single string stands for a one-item list."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"unknown csv option(s) {', '.join(unknown)}: expected {', '.join(sorted(known))}")
        for name in ("null_values", "date_formats", "timestamp_formats"):
            if isinstance(data.get(name), str):
                data[name] = (data[name],)
            elif name in data:
                data[name] = tuple(str(item) for item in data[name] or ())
        return cls(**data)

    @property
    def row_quote(self) -> bytes | None:
        """The quote byte that can hide a newline inside a value, if any."""
        return self.quote.encode(self.encoding) if self.quote and self.newlines_in_values else None

    @property
    def utf8(self) -> bool:
        return codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig")


DEFAULT_CSV = CsvOptions()


@dataclass(frozen=True)
class Column:
    """A declared column: its name in the file and its type."""

    name: str
    type: FileType

    @classmethod
    def declared(cls, name: str, type_text: str) -> Column:
        """From YAML's ``name: type``."""
        return cls(name, declared_type(type_text))


@dataclass(frozen=True)
class BadRow:
    """A row that was dropped: where it is in the file and why."""

    line: int
    """The physical line where the row starts (1-based, header included); Parquet: the row number."""
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class TooManyBadRows(TerminalError):
    """More rows failed to parse than ``max_bad_rows`` allows."""

    def __init__(self, bad_rows: Sequence[BadRow], limit: int):
        self.bad_rows, self.limit = list(bad_rows), limit
        shown = "\n".join(f"  {row}" for row in self.bad_rows[:BAD_ROWS_SHOWN])
        more = len(self.bad_rows) - BAD_ROWS_SHOWN
        tail = f"\n  … and {more} more" if more > 0 else ""
        super().__init__(
            f"too many bad rows: at least {len(self.bad_rows)} found, max_bad_rows is {limit}; "
            f"the first {min(len(self.bad_rows), BAD_ROWS_SHOWN)}:\n{shown}{tail}"
        )


class _BadRowLog:
    """Collects bad rows into the caller's list and fails once there are more than the limit."""

    def __init__(self, limit: int, sink: list[BadRow] | None):
        self.limit, self.rows, self.count = limit, sink if sink is not None else [], 0

    @property
    def budget(self) -> int:
        """How many more bad rows may be found before the read fails."""
        return self.limit - self.count

    def add(self, found: list[BadRow]) -> None:
        if not found:
            return
        self.rows.extend(sorted(found, key=lambda row: row.line))
        self.count += len(found)
        if self.count > self.limit:
            raise TooManyBadRows(self.rows[-self.count :], self.limit)


def _shown(value: Any) -> str:
    """A value as a reason quotes it: ``'abc'``, cut after 40 characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)
    return "'" + (text if len(text) <= 40 else text[:40] + "…") + "'"


# ---- kinds of declared types ------------------------------------------------------------------

NATIVE, DECIMAL, NUMERIC_TEXT, JSON_TEXT, VARCHAR, TIMESTAMPTZ, TIMESTAMP, DATE, TIME = (
    "native", "decimal", "numeric", "json", "varchar", "timestamptz", "timestamp", "date", "time",
)  # fmt: skip


def _kind(file_type: FileType) -> str:
    """How a type is parsed: most natively by pyarrow's readers, some through their text."""
    arrow, sql = file_type.arrow, file_type.type_sql
    if sql == "numeric":
        return NUMERIC_TEXT
    if sql == "jsonb":
        return JSON_TEXT
    if sql.startswith("character varying("):
        return VARCHAR
    if pa.types.is_timestamp(arrow):
        return TIMESTAMPTZ if arrow.tz else TIMESTAMP
    if pa.types.is_date(arrow):
        return DATE
    if pa.types.is_decimal(arrow):
        return DECIMAL
    return TIME if pa.types.is_time(arrow) else NATIVE


def _varchar_length(file_type: FileType) -> int:
    return int(file_type.type_sql[len("character varying(") : -1])


# ---- vectorised conversions from text ---------------------------------------------------------

Convert = Callable[[pa.ChunkedArray], pa.ChunkedArray | pa.Array]


def _flat(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _failing(values: pa.Array, ok: Callable[[pa.Array], bool]) -> list[int]:
    """Indices of the values ``ok`` refuses, found by halving: a few bad values cost a few dozen calls."""
    if ok(values):
        return []
    if len(values) <= 1:
        return list(range(len(values)))
    middle = len(values) // 2
    return _failing(values[:middle], ok) + [middle + i for i in _failing(values[middle:], ok)]


def _null_at(values: pa.Array, indices: list[int]) -> pa.Array:
    if not indices:
        return values
    mask = [False] * len(values)
    for index in indices:
        mask[index] = True
    return _null_where(pa.array(mask, pa.bool_()), values)


_CAST_ERRORS = (pa.ArrowInvalid, OverflowError)


def _cast_or_null(values: pa.ChunkedArray | pa.Array, target: pa.DataType, shape: str | None = None) -> pa.Array:
    """``values`` cast (safely) to ``target``; a value that does not cast becomes NULL.

    A text that does not even have the ``shape`` (a regular expression) is NULL at once, so that a
    column of garbage costs one vectorised match, not a bisection down to every value.
    """
    values = _flat(values)
    with contextlib.suppress(*_CAST_ERRORS):
        return pc.cast(values, target)
    if shape is not None:
        values = _null_where(pc.invert(pc.match_substring_regex(values, shape)), values)

    def casts(part: pa.Array) -> bool:
        try:
            pc.cast(part, target)
        except _CAST_ERRORS:
            return False
        return True

    return pc.cast(_null_at(values, _failing(values, casts)), target)


def _within_precision(values: pa.ChunkedArray) -> Any:
    """Decimals with more digits than their precision as NULL (bad): pyarrow's readers check the
    digits before scaling (``1234.5`` passes as ``numeric(5,2)``), a full validation after."""

    def valid(part: pa.Array) -> bool:
        try:
            part.validate(full=True)
        except pa.ArrowInvalid:
            return False
        return True

    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if all(valid(chunk) for chunk in chunks):
        return values
    flat = _flat(values)
    return _null_at(flat, _failing(flat, valid))


def _trimmed(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.utf8_trim_whitespace(values)


def _null_where(condition: Any, values: Any) -> Any:
    """``values`` with NULL where ``condition`` holds."""
    return pc.if_else(condition, pa.scalar(None, values.type), values)


def _numeric_text(values: pa.ChunkedArray) -> Any:
    """Plain ``numeric``: the number's text as written (trimmed), every digit kept."""
    text = _trimmed(values)
    return _null_where(pc.invert(pc.match_substring_regex(text, _NUMERIC_TEXT)), text)


def _json_ok(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_refuse)
    except ValueError:
        return False
    return True


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _json_checked(values: pa.ChunkedArray) -> Any:
    """JSON texts kept as written; one that is not JSON (NaN and Infinity included) is bad."""
    texts = _flat(values)
    valid = pa.array([text is None or _json_ok(text) for text in texts.to_pylist()], pa.bool_())
    return _null_where(pc.invert(valid), texts)


def _varchar(length: int) -> Convert:
    def convert(values: pa.ChunkedArray) -> Any:
        return _null_where(pc.greater(pc.utf8_length(values), length), values)

    return convert


def _strptime_any(text: Any, formats: Sequence[str], target: pa.DataType) -> Any:
    """The first of ``formats`` each value parses with, as ``target`` (naive results read as UTC)."""
    results = []
    for pattern in formats:
        parsed = pc.strptime(text, format=pattern, unit="us", error_is_null=True)
        if pa.types.is_date(target):
            parsed = pc.cast(parsed, target, safe=False)
        elif parsed.type != target:
            parsed = pc.cast(parsed, target)
        results.append(parsed)
    return pc.coalesce(*results) if len(results) > 1 else results[0]


def _timestamptz(formats: Sequence[str]) -> Convert:
    """timestamptz from text: an offset (``+02:00``, ``Z``) converts to UTC; without one, UTC."""

    def convert(values: pa.ChunkedArray) -> Any:
        text = _trimmed(values)
        if formats:
            return _strptime_any(text, formats, _UTC)
        with contextlib.suppress(pa.ArrowInvalid):  # the usual files: no value has an offset
            return pc.cast(pc.cast(text, _NAIVE), _UTC)
        with contextlib.suppress(pa.ArrowInvalid):  # or every value has one
            return pc.cast(text, _UTC)
        offset = pc.match_substring_regex(text, _OFFSET)
        aware = _cast_or_null(_null_where(pc.invert(offset), text), _UTC, _AWARE_SHAPE)
        naive = _cast_or_null(_null_where(offset, text), _NAIVE, _NAIVE_SHAPE)
        return pc.coalesce(aware, pc.cast(naive, _UTC))

    return convert


def _dates(formats: Sequence[str]) -> Convert:
    """date from text: with the first matching strptime format, or ISO 8601 without formats."""

    def convert(values: pa.ChunkedArray) -> Any:
        text = _trimmed(values)
        return _strptime_any(text, formats, pa.date32()) if formats else _cast_or_null(text, pa.date32(), _DATE_SHAPE)

    return convert


def _naive_timestamps(formats: Sequence[str]) -> Convert:
    """timestamp from text (ISO 8601 or ``formats``); a value with an offset is bad, as in CSV."""

    def convert(values: pa.ChunkedArray) -> Any:
        text = _trimmed(values)
        return _strptime_any(text, formats, _NAIVE) if formats else _cast_or_null(text, _NAIVE, _NAIVE_SHAPE)

    return convert


def _times(values: pa.ChunkedArray) -> Any:
    """time from ISO 8601 text (``13:45``, ``13:45:30.25``): parsed as a time of 1970-01-01."""
    text = _trimmed(values)
    text = _null_where(pc.invert(pc.match_substring_regex(text, _TIME_SHAPE)), text)
    stamps = _cast_or_null(pc.binary_join_element_wise("1970-01-01T", text, ""), _NAIVE)
    return pc.cast(pc.cast(stamps, pa.int64()), pa.time64("us"))


def _text_converter(column: Column, options: CsvOptions = DEFAULT_CSV) -> Convert | None:
    """How text becomes ``column``'s type where a reader cannot do it (None: a reader always can)."""
    kind = _kind(column.type)
    if kind == VARCHAR:
        return _varchar(_varchar_length(column.type))
    converters: dict[str, Convert] = {
        NUMERIC_TEXT: _numeric_text,
        JSON_TEXT: _json_checked,
        TIMESTAMPTZ: _timestamptz(options.timestamp_formats),
        TIMESTAMP: _naive_timestamps(options.timestamp_formats),
        DATE: _dates(options.date_formats),
        TIME: _times,
    }
    return converters.get(kind)


@dataclass(frozen=True)
class _Finisher:
    """A conversion a reader cannot make, applied to one column of a parsed block."""

    column: Column
    convert: Convert

    def reason(self, value: Any) -> str:
        kind, arrow = _kind(self.column.type), self.column.type.arrow
        if kind == VARCHAR:
            limit = _varchar_length(self.column.type)
            return f"column {self.column.name}: {_shown(value)} is longer than {limit} characters"
        why = f"column {self.column.name}: cannot parse {_shown(value)} as {self.column.type.name}"
        if kind == DECIMAL and isinstance(value, Decimal):
            why += f" (at most {arrow.precision - arrow.scale} digits before the point)"
        return why


def _finish(table: pa.Table, finishers: Sequence[_Finisher]) -> tuple[pa.Table, dict[int, str]]:
    """``table`` with each finisher's column converted, and the reason of each row that failed."""
    reasons: dict[int, str] = {}
    for finisher in finishers:
        name = finisher.column.name
        values = table[name]
        converted = finisher.convert(values)
        failed = pc.and_(pc.is_valid(values), pc.is_null(converted))
        if pc.any(failed).as_py():
            for index in pc.indices_nonzero(_flat(failed)).to_pylist():
                reasons.setdefault(index, finisher.reason(values[index].as_py()))
        position = table.schema.get_field_index(name)
        table = table.set_column(position, pa.field(name, finisher.column.type.arrow), converted)
    return table, reasons


def _without(table: pa.Table, rows: Iterable[int]) -> pa.Table:
    keep = [True] * table.num_rows
    for row in rows:
        keep[row] = False
    return table.filter(pa.array(keep, pa.bool_()))


# ---- streams and blocks of whole rows ---------------------------------------------------------


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end (a network stream returns what has arrived)."""
    chunk = stream.read(size)
    if not chunk or len(chunk) == size:
        return chunk or b""
    parts, have = [chunk], len(chunk)
    while have < size and (more := stream.read(size - have)):
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _decompressed(stream: BinaryIO, file_format: str) -> BinaryIO:
    """The file's bytes: gzip is decompressed as it streams (concatenated members included)."""
    return gzip.GzipFile(fileobj=stream, mode="rb") if file_format.endswith(".gz") else stream  # type: ignore[return-value]


def _last_row_end(data: bytes, quote: bytes | None) -> int:
    """Where the last complete row of ``data`` ends (after its newline); 0 when none does.

    ``data`` starts at a row's start. With a quote character, a newline ends a row only when an
    even number of quote characters precedes it (it is not inside a quoted value).
    """
    end = data.rfind(b"\n")
    if quote is None or end < 0:
        return end + 1
    quotes = data.count(quote, 0, end)
    while end >= 0 and quotes % 2:
        previous = data.rfind(b"\n", 0, end)
        quotes -= data.count(quote, previous + 1, end)
        end = previous
    return end + 1


def _first_row_end(data: bytes, quote: bytes | None) -> int:
    """Where the first row of ``data`` ends (after its newline); ``len(data)`` when it does not."""
    start, quotes = 0, 0
    while (end := data.find(b"\n", start)) >= 0:
        quotes += data.count(quote, start, end) if quote else 0
        if quotes % 2 == 0:
            return end + 1
        start = end + 1
    return len(data)


@dataclass(frozen=True)
class _Block:
    """Whole rows of the file: a view of them (no copy) and how many newlines they hold."""

    data: memoryview
    newlines: int


def _blocks(stream: BinaryIO, size: int, quote: bytes | None) -> Iterator[_Block]:
    """The stream in blocks of about ``size`` bytes, each ending at a row boundary."""
    pending = b""
    while chunk := _read_full(stream, size):
        data = pending + chunk if pending else chunk
        cut = _last_row_end(data, quote)
        if cut:
            yield _Block(memoryview(data)[:cut], data.count(b"\n", 0, cut))
        elif len(data) > max(MAX_ROW_BYTES, 4 * size):
            raise TerminalError(
                f"no row ends within {len(data) >> 20} MB: an unbalanced quote character? "
                "(check the csv options quote and newlines_in_values)"
            )
        pending = data[cut:]
    if pending:
        yield _Block(memoryview(pending), pending.count(b"\n"))


def _without_bom(blocks: Iterator[_Block]) -> Iterator[_Block]:
    """The blocks, the first without a UTF-8 byte-order mark (which pyarrow would read as text)."""
    first = next(blocks, None)
    if first is None:
        return
    yield _Block(first.data[3:], first.newlines) if first.data[:3] == codecs.BOM_UTF8 else first
    yield from blocks


_END = object()


def _prefetched(items: Iterator[_Block], depth: int = 1) -> Iterator[_Block]:
    """``items`` produced by a background thread, at most ``depth`` ahead (memory stays bounded).

    Reading the next block (the download, gunzip, transcoding) overlaps parsing this one; both
    release the GIL. The producer's errors are raised here; closing stops it after its current read.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as error:  # handed to the consumer, raised there
            offer(error)

    thread = threading.Thread(target=produce, name="dagforge-file-blocks", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class _Rows:
    """Where each non-blank row of a block is: byte offsets and the line it starts on."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _row_spans(block: bytes, quote: bytes | None, first_line: int, blank: Callable[[bytes], bool]) -> _Rows:
    """The non-blank rows of ``block``, cut as :func:`_last_row_end` cuts (Python per line: only
    for a refused block)."""
    parts = block.split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # the block ends with a newline
    odd = [part.count(quote) % 2 for part in parts] if quote else [0] * len(parts)
    rows, start, end, start_line, inside = _Rows(), 0, 0, first_line, 0
    for number, (part, flip) in enumerate(zip(parts, odd, strict=True)):
        end += len(part) + 1
        inside ^= flip
        if inside:
            continue  # the newline is inside a quoted value
        if not blank(block[start:end]):
            rows.starts.append(start)
            rows.ends.append(min(end, len(block)))
            rows.lines.append(start_line)
        start, start_line = end, first_line + number + 1
    if start < len(block):  # an unterminated quoted value runs to the end
        rows.starts.append(start)
        rows.ends.append(len(block))
        rows.lines.append(start_line)
    return rows


def _csv_blank(row: bytes) -> bool:
    """What pyarrow's CSV reader skips: an empty line."""
    return row in (b"\n", b"\r\n", b"\r", b"")


def _json_blank(row: bytes) -> bool:
    return not row.strip()


# ---- parsing a block, fast then slow ----------------------------------------------------------


class _Parser(Protocol):
    def parse(self, data: memoryview) -> pa.Table | None:
        """The rows of ``data`` as a table of the read types; None if any row fails."""

    def suspects(self, data: memoryview, rows: int) -> list[int] | None:
        """Indices of the rows of a refused block that may fail, found without the reader's typed
        conversion (vectorised); None when it cannot tell. Extra ones are harmless, missed ones
        are found by bisection."""

    def attempt(self, data: memoryview) -> pa.Table | str:
        """The single row ``data`` as a table, or why it fails."""

    def empty(self) -> pa.Table: ...


_Found = tuple[pa.Table, list[int], list[BadRow]]
"""A refused block's good rows, the line of each, and its bad rows."""


def _bisect(parser: _Parser, view: memoryview, rows: _Rows, budget: int) -> _Found:
    """A refused block's rows sorted out by halving: halves that parse are kept whole, a single row
    that fails is bad. Stops once more than ``budget`` bad rows were found: the read fails anyway."""
    tables: list[pa.Table] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    pending = [(0, len(rows.starts))]
    while pending and len(bad) <= budget:
        low, high = pending.pop()
        if low == high:
            continue
        data = view[rows.starts[low] : rows.ends[high - 1]]
        refused = high - low == len(rows.starts)  # the whole was refused already
        table = parser.attempt(data) if high - low == 1 else None if refused else parser.parse(data)
        if isinstance(table, pa.Table):
            tables.append(table)
            lines.extend(rows.lines[low:high])
        elif isinstance(table, str):
            bad.append(BadRow(rows.lines[low], table))
        else:
            middle = (low + high) // 2
            pending += [(middle, high), (low, middle)]
    table = pa.concat_tables(tables).combine_chunks() if tables else parser.empty()
    return table, lines, bad


def _subset(view: memoryview, rows: _Rows, dropped: set[int]) -> tuple[memoryview, _Rows]:
    """A block's rows but the ``dropped`` ones, as a block of their own (a copy), and where its rows are."""
    pieces, subset, shift, low = [], _Rows(), 0, 0
    for high in [*sorted(dropped), len(rows.starts)]:
        if low < high:
            begin = rows.starts[low]
            pieces.append(view[begin : rows.ends[high - 1]])
            shift += begin - (subset.ends[-1] if subset.ends else 0)
            subset.starts += [start - shift for start in rows.starts[low:high]]
            subset.ends += [end - shift for end in rows.ends[low:high]]
            subset.lines += rows.lines[low:high]
        low = high + 1
    return memoryview(b"".join(pieces)), subset


def _sorted_out(parser: _Parser, view: memoryview, rows: _Rows, budget: int) -> _Found:
    """A refused block's rows sorted out: its suspects each tried alone, then the rest in one parse
    (bisected only if a bad row was not a suspect)."""
    suspects = parser.suspects(view, len(rows.starts))
    if suspects is None:
        return _bisect(parser, view, rows, budget)
    bad: list[BadRow] = []
    failing: set[int] = set()
    for index in suspects:
        outcome = parser.attempt(view[rows.starts[index] : rows.ends[index]])
        if isinstance(outcome, str):
            bad.append(BadRow(rows.lines[index], outcome))
            failing.add(index)
            if len(bad) > budget:
                return parser.empty(), [], bad
    data, kept = _subset(view, rows, failing)
    table = parser.parse(data) if kept.starts else parser.empty()
    if table is not None:
        return table, kept.lines, bad
    table, lines, more = _bisect(parser, data, kept, budget - len(bad))
    return table, lines, bad + more


@dataclass
class _BlockReader:
    """Turns blocks of whole rows into final tables: parse, sort out a refused block, finish, report."""

    parser: _Parser
    finishers: Sequence[_Finisher]
    columns: Sequence[Column]
    log: _BadRowLog
    quote: bytes | None = None
    blank: Callable[[bytes], bool] = _csv_blank

    def table(self, view: memoryview, first_line: int) -> pa.Table:
        table, bad = self.parser.parse(view), []
        lines: list[int] | None = None
        if table is None:
            table, lines, bad = _sorted_out(self.parser, view, self._rows(view, first_line), self.log.budget)
        table, reasons = _finish(table, self.finishers)
        if reasons:
            if lines is None:
                lines = self._rows(view, first_line).lines
            bad += [BadRow(_line_at(lines, row, first_line), reason) for row, reason in reasons.items()]
            table = _without(table, reasons)
        self.log.add(bad)
        return _final(table, self.columns)

    def _rows(self, view: memoryview, first_line: int) -> _Rows:
        return _row_spans(bytes(view), self.quote, first_line, self.blank)


def _line_at(lines: list[int], row: int, default: int) -> int:
    """The line of a table row (rows and lines only disagree on bare carriage returns)."""
    return lines[row] if row < len(lines) else (lines[-1] if lines else default)


def _schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in columns])


def _final(table: pa.Table, columns: Sequence[Column]) -> pa.Table:
    """Exactly the declared columns, in declared order, with their declared types, in one chunk
    (one record batch per block: a writer may make a row group of each)."""
    return pa.Table.from_arrays([table[c.name] for c in columns], schema=_schema(columns)).combine_chunks()


# ---- CSV --------------------------------------------------------------------------------------


def _case_variants(words: Sequence[str]) -> list[str]:
    """Every spelling of ``words`` in any case (``tRuE`` included): pyarrow matches exactly."""
    spelled = set()
    for word in words:
        spelled.update("".join(letters) for letters in itertools.product(*({c.lower(), c.upper()} for c in word)))
    return sorted(spelled)


def _csv_parse_options(options: CsvOptions, **more: Any) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote or False,
        double_quote=True,
        newlines_in_values=options.newlines_in_values,
        **more,
    )


def _csv_convert_options(options: CsvOptions, **more: Any) -> pa_csv.ConvertOptions:
    """Nulls as Postgres's COPY reads them (quoted values never), booleans in any case."""
    return pa_csv.ConvertOptions(
        null_values=list(options.null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=_case_variants(TRUE_WORDS),
        false_values=_case_variants(FALSE_WORDS),
        **more,
    )


def _csv_read_type(file_type: FileType, options: CsvOptions) -> pa.DataType:
    """What pyarrow's CSV reader parses a column into: its type, or text that a finisher converts."""
    kind = _kind(file_type)
    if kind in (NUMERIC_TEXT, JSON_TEXT, VARCHAR, TIMESTAMPTZ) or (kind == DATE and options.date_formats):
        return pa.string()
    return file_type.arrow


def _csv_finisher(column: Column, options: CsvOptions) -> _Finisher | None:
    """The conversion after pyarrow's CSV reader, for a column it reads as text; decimals' precision."""
    if _kind(column.type) == DECIMAL:
        return _Finisher(column, _within_precision)
    if _csv_read_type(column.type, options) != pa.string() or _kind(column.type) == NATIVE:
        return None
    return _Finisher(column, _text_converter(column, options))  # type: ignore[arg-type]


_INTEGER_SHAPE = r"^\s*[+-]?\d+\s*$"
_FLOAT_SHAPE = r"(?i)^\s*([+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|[+-]?(nan|inf|infinity))\s*$"
_DECIMAL_SHAPE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def _unconvertible(values: pa.ChunkedArray, read_type: pa.DataType, options: CsvOptions) -> list[int]:
    """Indices of the texts pyarrow's CSV conversion to ``read_type`` would likely refuse.

    Vectorised casts mimicking the reader (numbers and dates trimmed, booleans in any case, the
    timestamp formats); it only needs to be close: each suspect is tried by the reader itself.
    """
    raw = _flat(values)
    text = _cast_or_null(raw, pa.string())  # not UTF-8: NULL, hence unconvertible below
    if pa.types.is_boolean(read_type):
        words = _case_variants(TRUE_WORDS) + _case_variants(FALSE_WORDS)
        converted = _null_where(pc.invert(pc.is_in(text, pa.array(words))), text)
    elif pa.types.is_timestamp(read_type) and options.timestamp_formats:
        converted = _strptime_any(text, options.timestamp_formats, read_type)
    elif pa.types.is_time(read_type):
        converted = _times(text)
    elif pa.types.is_string(read_type):
        converted = text
    else:
        converted = _cast_or_null(_trimmed(text), read_type, _shape(read_type))
    failed = pc.and_(pc.is_valid(raw), pc.is_null(converted))
    return pc.indices_nonzero(failed).to_pylist()


def _shape(read_type: pa.DataType) -> str | None:
    """A regular expression every text the reader converts to ``read_type`` matches, if one is known."""
    if pa.types.is_integer(read_type):
        return _INTEGER_SHAPE
    if pa.types.is_floating(read_type):
        return _FLOAT_SHAPE
    if pa.types.is_decimal(read_type):
        return _DECIMAL_SHAPE
    if pa.types.is_date(read_type):
        return _DATE_SHAPE
    return _NAIVE_SHAPE if pa.types.is_timestamp(read_type) else None


class _CsvParser:
    """pyarrow's CSV reader, set up once for the file, parsing blocks of whole rows."""

    def __init__(self, names: list[str], columns: Sequence[Column], options: CsvOptions):
        self.names, self.columns, self.options = names, {c.name: c for c in columns}, options
        self.invalid: list[Any] = []
        self.parse_options = _csv_parse_options(options, invalid_row_handler=self._invalid_row)
        included = [c.name for c in columns]
        read_types = {c.name: _csv_read_type(c.type, options) for c in columns}
        parsers = list(options.timestamp_formats) or None
        self.typed = _csv_convert_options(
            options, include_columns=included, column_types=read_types, timestamp_parsers=parsers
        )
        binary = {c.name: pa.binary() for c in columns}
        self.texts = _csv_convert_options(options, include_columns=included, column_types=binary)
        self.schema = pa.schema(list(read_types.items()))

    def _invalid_row(self, row: Any) -> str:
        self.invalid.append(row)
        return "skip"

    def _read(self, data: memoryview, convert: pa_csv.ConvertOptions) -> pa.Table:
        """One parse of whole rows as one pyarrow block: one record batch per block, and a row
        longer than pyarrow's block size is not an error.

        Serial: the prefetching thread already overlaps reading with parsing; so pyarrow numbers
        invalid rows, calls the handler on this thread and keeps less memory.
        """
        self.invalid.clear()
        read = pa_csv.ReadOptions(column_names=self.names, use_threads=False, block_size=len(data) + 1)
        return pa_csv.read_csv(pa.py_buffer(data), read, self.parse_options, convert)

    def parse(self, data: memoryview) -> pa.Table | None:
        try:
            table = self._read(data, self.typed)
        except pa.ArrowInvalid:
            return None
        return None if self.invalid else table

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def suspects(self, data: memoryview, rows: int) -> list[int] | None:
        """Rows with the wrong number of fields (read serially, so pyarrow numbers them) and rows
        with a value :func:`_unconvertible` picks out."""
        try:
            texts = self._read(data, self.texts)
        except pa.ArrowInvalid:
            return None
        invalid = {row.number - 1 for row in self.invalid if row.number}
        parsed = [i for i in range(rows) if i not in invalid] if invalid else range(rows)
        if len(parsed) != texts.num_rows:
            return None
        found = set(invalid)
        for name, read_type in zip(self.schema.names, self.schema.types, strict=True):
            found.update(parsed[i] for i in _unconvertible(texts[name], read_type, self.options))
        return sorted(found)

    def attempt(self, data: memoryview) -> pa.Table | str:
        try:
            table = self._read(data, self.typed)
        except pa.ArrowInvalid as error:
            return self._value_reason(data, str(error))
        if self.invalid:
            row = self.invalid[0]
            return f"expected {row.expected_columns} fields, found {row.actual_columns}"
        return table

    def _value_reason(self, data: memoryview, message: str) -> str:
        """``column fare: cannot parse 'abc' as numeric(10,2)`` from the reader's error message."""
        match = _CSV_COLUMN.search(message)
        index = int(match.group(1)) if match else len(self.names)
        column = self.columns.get(self.names[index]) if index < len(self.names) else None
        if column is None:
            return message.removeprefix("CSV parse error: ")
        quoted = _QUOTED.search(message, match.end() if match else 0)
        if quoted:
            value = quoted.group(1)
        else:
            try:
                value = self._read(data, self.texts)[column.name][0].as_py()
            except (pa.ArrowInvalid, IndexError):
                return f"column {column.name}: {message}"
        return f"column {column.name}: cannot parse {_shown(value)} as {column.type.name}"


class _CsvFile:
    """One CSV file read block by block (:func:`read_batches` with ``csv`` or ``csv.gz``)."""

    def __init__(self, columns: Sequence[Column], options: CsvOptions, batch_bytes: int, log: _BadRowLog):
        self.columns, self.options, self.batch_bytes, self.log = columns, options, batch_bytes, log

    def tables(self, stream: BinaryIO) -> Iterator[pa.Table]:
        blocks = _prefetched(self._texts(_blocks(stream, self.batch_bytes, self.options.row_quote)))
        first = next(blocks, None)
        line = 1
        if self.options.header:
            if first is None:
                raise TerminalError("the CSV file is empty: it has no header row")
            head = bytes(first.data)
            end = _first_row_end(head, self.options.row_quote)
            names = self._names(head[:end])
            header_lines = head.count(b"\n", 0, end)
            line += header_lines
            first = _Block(first.data[end:], first.newlines - header_lines)
        else:
            names = [c.name for c in self.columns]
        parser = _CsvParser(names, self.columns, self.options)
        finishers = [f for c in self.columns if (f := _csv_finisher(c, self.options))]
        reader = _BlockReader(parser, finishers, self.columns, self.log, self.options.row_quote, _csv_blank)
        for block in itertools.chain([first] if first else [], blocks):
            if len(block.data):
                yield reader.table(block.data, line)
            line += block.newlines

    def _texts(self, blocks: Iterator[_Block]) -> Iterator[_Block]:
        """UTF-8 blocks: without a leading byte-order mark; other encodings transcoded."""
        if self.options.utf8:
            yield from _without_bom(blocks)
        else:
            yield from (_Block(memoryview(self._transcoded(block.data)), block.newlines) for block in blocks)

    def _transcoded(self, data: memoryview) -> bytes:
        try:
            return bytes(data).decode(self.options.encoding).encode("utf-8")
        except UnicodeDecodeError as error:
            raise TerminalError(f"the file is not valid {self.options.encoding} text: {error}") from error

    def _names(self, header: bytes) -> list[str]:
        """The header's field names, each declared column checked there once; others renamed away."""
        read = pa_csv.ReadOptions(autogenerate_column_names=False, use_threads=False)
        found = pa_csv.read_csv(pa.py_buffer(header), read, _csv_parse_options(self.options)).schema.names
        declared = {c.name for c in self.columns}
        missing = [c.name for c in self.columns if c.name not in found]
        if missing:
            raise TerminalError(
                f"the CSV header has no column {', '.join(missing)}; its columns are: {', '.join(found)}"
            )
        if twice := sorted({name for name in found if name in declared and found.count(name) > 1}):
            raise TerminalError(f"the CSV header names column {', '.join(twice)} more than once")
        return [name if name in declared else f"\x00unused {index}" for index, name in enumerate(found)]


# ---- JSON lines -------------------------------------------------------------------------------


def _jsonl_read_type(file_type: FileType) -> pa.DataType | None:
    """What pyarrow's JSON reader parses a column into; None: read in Python (exact JSON, numbers)."""
    kind = _kind(file_type)
    if kind in (NUMERIC_TEXT, JSON_TEXT):
        return None
    return pa.string() if kind in (VARCHAR, TIMESTAMPTZ, TIMESTAMP, DATE, TIME) else file_type.arrow


def _jsonl_finisher(column: Column) -> _Finisher | None:
    """The conversion after pyarrow's JSON reader (json columns are exact from Python already)."""
    kind = _kind(column.type)
    convert = _within_precision if kind == DECIMAL else None if kind == JSON_TEXT else _text_converter(column)
    return _Finisher(column, convert) if convert else None


def json_text(value: Any) -> str:
    """A parsed JSON value (numbers as :class:`~decimal.Decimal`) as compact JSON text, every digit kept."""
    if isinstance(value, dict):
        items = (f"{json.dumps(str(key), ensure_ascii=False)}:{json_text(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_text(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(str(value), ensure_ascii=False)


def _python_value(value: Any, kind: str) -> str | None:
    """A JSON value for a column read in Python: exact JSON text, or a number's text."""
    if value is None:
        return None
    if kind == JSON_TEXT:
        return json_text(value)
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"expected a number, found {json_text(value)}")
    return str(value)


class _JsonlParser:
    """pyarrow's JSON reader with an explicit schema; json and plain numeric columns in Python."""

    def __init__(self, columns: Sequence[Column]):
        self.columns = list(columns)
        self.read_types = {c.name: _jsonl_read_type(c.type) for c in columns}
        arrow_fields = [(name, kind) for name, kind in self.read_types.items() if kind is not None]
        self.python_columns = [c for c in columns if self.read_types[c.name] is None]
        self.options = pa_json.ParseOptions(explicit_schema=pa.schema(arrow_fields),
                                            unexpected_field_behavior="ignore")  # fmt: skip
        self.arrow_names = [name for name, _ in arrow_fields]

    def _read(self, data: memoryview | bytes) -> pa.Table:
        try:
            return pa_json.read_json(pa.py_buffer(data), pa_json.ReadOptions(block_size=1 << 20), self.options)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error):
                raise
        # a line longer than pyarrow's block: parse the whole block as one
        return pa_json.read_json(pa.py_buffer(data), pa_json.ReadOptions(block_size=len(data) + 1), self.options)

    def _python(self, data: memoryview) -> dict[str, list]:
        out: dict[str, list] = {c.name: [] for c in self.python_columns}
        kinds = [(c.name, _kind(c.type)) for c in self.python_columns]
        for line in bytes(data).split(b"\n"):
            if _json_blank(line):
                continue
            row = json.loads(line, parse_float=Decimal)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            for name, kind in kinds:
                out[name].append(_python_value(row.get(name), kind))
        return out

    def parse(self, data: memoryview) -> pa.Table | None:
        try:
            table = self._read(data) if self.arrow_names else None
            extra = self._python(data) if self.python_columns else {}
        except (pa.ArrowInvalid, ValueError):
            return None
        for name, values in extra.items():
            if table is None:
                table = pa.table({name: pa.array(values, pa.string())})
            elif len(values) != table.num_rows:
                return None
            else:
                table = table.append_column(name, pa.array(values, pa.string()))
        return table.select([c.name for c in self.columns]) if table is not None else self.empty()

    def empty(self) -> pa.Table:
        return pa.schema([(name, kind or pa.string()) for name, kind in self.read_types.items()]).empty_table()

    def suspects(self, data: memoryview, rows: int) -> list[int] | None:
        return None  # bad lines are found by bisection

    def attempt(self, data: memoryview) -> pa.Table | str:
        table = self.parse(data)
        return table if table is not None else self._reason(data)

    def _reason(self, data: memoryview) -> str:
        text = bytes(data).strip()
        try:
            row = json.loads(text, parse_float=Decimal)
        except ValueError as error:
            return f"not valid JSON: {error}"
        if not isinstance(row, dict):
            return "not a JSON object"
        for column in self.columns:
            value = row.get(column.name)
            if value is not None and not self._value_ok(column, value):
                return f"column {column.name}: cannot parse {_shown(json_text(value))} as {column.type.name}"
        try:
            self._read(data)
        except pa.ArrowInvalid as error:
            return str(error)
        return "the line could not be parsed"

    def _value_ok(self, column: Column, value: Any) -> bool:
        """Whether one value parses as its column (a single line's reason, so no hurry)."""
        read_type = self.read_types[column.name]
        try:
            if read_type is None:
                _python_value(value, _kind(column.type))
            else:
                line = "{" + json.dumps(column.name) + ":" + json_text(value) + "}"
                schema = pa.schema([(column.name, read_type)])
                pa_json.read_json(
                    pa.py_buffer(line.encode()), parse_options=pa_json.ParseOptions(explicit_schema=schema)
                )
        except (pa.ArrowInvalid, ValueError):
            return False
        return True


def _jsonl_tables(stream: BinaryIO, columns: Sequence[Column], batch_bytes: int, log: _BadRowLog) -> Iterator[pa.Table]:
    """One JSON lines file read block by block (:func:`read_batches` with ``jsonl`` or ``jsonl.gz``)."""
    finishers = [f for c in columns if (f := _jsonl_finisher(c))]
    reader = _BlockReader(_JsonlParser(columns), finishers, columns, log, None, _json_blank)
    line = 1
    for block in _prefetched(_without_bom(_blocks(stream, batch_bytes, None))):
        yield reader.table(block.data, line)
        line += block.newlines


# ---- Parquet ----------------------------------------------------------------------------------


def _nested(arrow: pa.DataType) -> bool:
    return (
        pa.types.is_struct(arrow) or pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_map(arrow)
    )


def _as_json(values: pa.ChunkedArray) -> pa.Array:
    """Nested Parquet values (structs, lists, maps) as JSON text, one Python call per value."""
    return pa.array([None if v is None else json_text(v) for v in _flat(values).to_pylist()], pa.string())


def _parquet_convert(column: Column, source: pa.DataType) -> Convert | None:
    """How one Parquet column becomes its declared type; None: it already is. TerminalError if it cannot."""
    target, kind = column.type.arrow, _kind(column.type)
    if kind == JSON_TEXT and _nested(source):
        return _as_json
    text = pa.types.is_string(source) or pa.types.is_large_string(source)
    number = pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    convert = _text_converter(column)
    if convert and (text or (number and kind in (NUMERIC_TEXT, VARCHAR))):
        return _after(lambda values: pc.cast(values, pa.string()), convert)
    if source == target:
        return None
    try:
        pa.array([], source).cast(target)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as error:
        raise TerminalError(
            f"column {column.name}: the Parquet file's {source} cannot be read as {column.type.name} ({error})"
        ) from error
    return lambda values: _cast_or_null(values, target)


def _after(first: Convert, then: Convert) -> Convert:
    return lambda values: then(first(values))


def _parquet_tables(
    stream: BinaryIO, columns: Sequence[Column], spool_dir: Path | None, log: _BadRowLog
) -> Iterator[pa.Table]:
    """The file spooled to a temporary file (deleted afterwards), then read a batch at a time."""
    with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="dagforge-spool-", suffix=".parquet") as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.flush()
        with contextlib.closing(_parquet_file(spool.name)) as file:
            schema = file.schema_arrow
            missing = [c.name for c in columns if c.name not in schema.names]
            if missing:
                raise TerminalError(
                    f"the Parquet file has no column {', '.join(missing)}; its columns are: {', '.join(schema.names)}"
                )
            finishers = [
                _Finisher(c, convert)
                for c in columns
                if (convert := _parquet_convert(c, _plain(schema.field(c.name).type))) is not None
            ]
            row = 0
            for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[c.name for c in columns]):
                table = _decoded(pa.Table.from_batches([batch]))
                table, reasons = _finish(table, finishers)
                log.add([BadRow(row + index + 1, reason) for index, reason in reasons.items()])
                row += batch.num_rows
                yield _final(_without(table, reasons) if reasons else table, columns)


def _parquet_file(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise TerminalError(f"the file is not a readable Parquet file: {error}") from error


def _plain(arrow: pa.DataType) -> pa.DataType:
    """A dictionary-encoded type as its value type (what :func:`_decoded` turns the column into)."""
    return arrow.value_type if pa.types.is_dictionary(arrow) else arrow


def _decoded(table: pa.Table) -> pa.Table:
    for index, column in enumerate(table.schema):
        if pa.types.is_dictionary(column.type):
            table = table.set_column(index, column.name, pc.cast(table[index], column.type.value_type))
    return table


# ---- the entry points -------------------------------------------------------------------------


def _check_format(file_format: str) -> None:
    if file_format not in FORMATS:
        raise TerminalError(f"unknown file format {file_format!r}: expected one of {', '.join(FORMATS)}")


def _check(file_format: str, columns: Sequence[Column]) -> None:
    _check_format(file_format)
    if not columns:
        raise TerminalError("a file source needs at least one declared column")
    names = [c.name for c in columns]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise TerminalError(f"column {', '.join(twice)} is declared more than once")


def read_batches(
    stream: BinaryIO,
    file_format: str,
    columns: list[Column],
    *,
    csv: CsvOptions = DEFAULT_CSV,
    max_bad_rows: int = 0,
    bad_rows: list[BadRow] | None = None,
    batch_bytes: int = 4 << 20,
    spool_dir: Path | None = None,
) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches of exactly ``columns`` (declared order and types).

    ``stream`` is read once, front to back, to its end, about ``batch_bytes`` at a time — for CSV
    and JSON lines by a background thread, and parsed by another, each at most one block ahead of
    the next (so at most about four blocks are in memory) — (Parquet: copied to a temporary file in
    ``spool_dir`` first, deleted afterwards). The file's
    other columns are ignored; a declared column the file lacks is a :class:`TerminalError`. Rows
    that do not parse are dropped and appended to ``bad_rows`` (line and reason); once there are
    more than ``max_bad_rows``, :class:`TooManyBadRows` is raised. One record batch per block
    (Parquet: per 65,536 rows).
    """
    _check(file_format, columns)
    log = _BadRowLog(max_bad_rows, bad_rows)
    if file_format == "parquet":
        tables = _parquet_tables(stream, columns, spool_dir, log)
    elif file_format.startswith("csv"):
        tables = _CsvFile(columns, csv, batch_bytes, log).tables(_decompressed(stream, file_format))
    else:
        tables = _jsonl_tables(_decompressed(stream, file_format), columns, batch_bytes, log)
    # parsing runs one block ahead on a thread of its own: the caller writes (and compresses) the
    # Parquet part of this block meanwhile; pyarrow's parse and write both release the GIL
    for table in _prefetched(tables):
        for batch in table.to_batches():
            if batch.num_rows:
                yield batch


def declared_text(arrow: pa.DataType) -> str:
    """The declared type (as users write it) for values pyarrow inferred or a Parquet file holds."""
    if pa.types.is_dictionary(arrow):
        return declared_text(arrow.value_type)
    if pa.types.is_decimal(arrow):
        return f"numeric({arrow.precision},{arrow.scale})" if 0 <= arrow.scale <= arrow.precision <= 76 else "numeric"
    if pa.types.is_timestamp(arrow):
        return "timestamptz" if arrow.tz else "timestamp"
    if _nested(arrow):
        return "jsonb"
    for test, text in _INFERRED:
        if test(arrow):
            return text
    return "text"


_INFERRED: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
    (pa.types.is_boolean, "boolean"),
    (lambda t: t in (pa.int8(), pa.int16(), pa.uint8()), "smallint"),
    (lambda t: t in (pa.int32(), pa.uint16()), "integer"),
    (lambda t: t in (pa.int64(), pa.uint32()), "bigint"),
    (lambda t: t == pa.uint64(), "numeric(20,0)"),
    (lambda t: t in (pa.float16(), pa.float32()), "real"),
    (pa.types.is_floating, "double precision"),
    (pa.types.is_date, "date"),
    (pa.types.is_time, "time"),
)


def _head(stream: BinaryIO, quote: bytes | None, sample_rows: int) -> bytes:
    """The first ``sample_rows`` rows (and the header) of a text file, at most :data:`INFER_BYTES`."""
    data = _read_full(stream, INFER_BYTES)
    if len(data) == INFER_BYTES:
        data = data[: _last_row_end(data, quote)]
    rows = _row_spans(data, quote, 1, _json_blank)
    return data[: rows.ends[sample_rows - 1]] if len(rows.ends) > sample_rows else data


def _refined(values: pa.ChunkedArray, declared: str) -> str:
    """A text column's type when every value is a timestamp, some with an offset (pyarrow keeps
    them text when only some have one)."""
    if declared != "text" or values.null_count == len(values):
        return declared
    text = _trimmed(values)
    aware = pc.match_substring_regex(text, _AWARE_SHAPE)
    stamps = pc.or_(aware, pc.match_substring_regex(text, _NAIVE_SHAPE))
    if not (pc.all(stamps).as_py() and pc.any(aware).as_py()):
        return declared
    converted = _timestamptz(())(values)
    return "timestamptz" if converted.null_count == values.null_count else declared


def _infer_csv(head: bytes, options: CsvOptions) -> dict[str, str]:
    if not options.utf8:
        head = head.decode(options.encoding, "replace").encode("utf-8")
    table = pa_csv.read_csv(
        pa.py_buffer(head),
        pa_csv.ReadOptions(autogenerate_column_names=not options.header),
        _csv_parse_options(options),
        _csv_convert_options(options, timestamp_parsers=list(options.timestamp_formats) or None),
    )
    types = {}
    for name in table.schema.names:
        declared = _refined(table[name], declared_text(table.schema.field(name).type))
        if declared == "text" and options.date_formats and table[name].null_count < len(table):
            dates = _dates(options.date_formats)(table[name])
            declared = "date" if dates.null_count == table[name].null_count else declared
        types[name] = declared
    return types


def _infer_jsonl(head: bytes) -> dict[str, str]:
    table = pa_json.read_json(pa.py_buffer(head))
    types = {column.name: _refined(table[column.name], declared_text(column.type)) for column in table.schema}
    stamps = [name for name, declared in types.items() if declared == "timestamp"]
    return types | (_jsonl_stamps(head, stamps) if stamps else {})


def _jsonl_stamps(head: bytes, names: list[str]) -> dict[str, str]:
    """pyarrow infers dates, and timestamps with offsets, as naive timestamps: look at their texts."""
    schema = pa.schema([(name, pa.string()) for name in names])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    texts = pa_json.read_json(pa.py_buffer(head), parse_options=options)
    types = {}
    for name in names:
        if pc.all(pc.match_substring_regex(texts[name], r"^\d{4}-\d{2}-\d{2}$")).as_py():
            types[name] = "date"
        elif pc.any(pc.match_substring_regex(texts[name], _OFFSET)).as_py():
            types[name] = "timestamptz"
        else:
            types[name] = "timestamp"
    return types


def infer_columns(
    stream: BinaryIO, file_format: str, *, csv: CsvOptions = DEFAULT_CSV, sample_rows: int = 10_000
) -> dict[str, str]:
    """Declared types (``name → type text``, in file order) guessed from the head of a file.

    For ``dagforge columns``, which prints them as a ready ``columns:`` block. A guess, to review:
    pyarrow's inference on at most ``sample_rows`` rows (a few MB) mapped to the vocabulary —
    integers as bigint, every fractional number as double precision (money is better declared
    ``numeric(p,s)``), codes with leading zeros as numbers if they look like numbers, columns that
    are empty in the sample as text. Parquet's footer is at its end: the whole file is read (into a
    temporary file) and its schema mapped.
    """
    _check_format(file_format)
    if file_format == "parquet":
        with tempfile.NamedTemporaryFile(prefix="dagforge-infer-", suffix=".parquet") as spool:
            shutil.copyfileobj(stream, spool, 1 << 20)
            spool.flush()
            with contextlib.closing(_parquet_file(spool.name)) as file:
                schema = file.schema_arrow
        return {f.name: declared_text(f.type) for f in schema}
    text = _decompressed(stream, file_format)
    csv_file = file_format.startswith("csv")
    head = _head(text, csv.row_quote if csv_file else None, sample_rows + int(csv_file and csv.header))
    head = head.removeprefix(codecs.BOM_UTF8)
    if not head.strip():
        raise TerminalError("the file is empty: there is nothing to infer columns from")
    return _infer_csv(head, csv) if csv_file else _infer_jsonl(head)
