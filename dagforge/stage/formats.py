"""Staged file formats: how Postgres rows become part files and go back into Postgres.

Every format reads the source's ``COPY (SELECT …) TO STDOUT`` stream and writes files; loading
into Postgres turns files back into a CSV ``COPY`` into staging. Parquet parses blocks of whole
rows with pyarrow's CSV reader (C++ parsing, bounded blocks). How each column is selected, parsed
and typed in the file is the *encoding* (:mod:`dagforge.stage.encodings`): one for a Postgres
destination (anything without an exact Arrow type travels as text), one for BigQuery (every
column in the type BigQuery loads it as).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pgpq
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from dagforge.contracts import Column, PartSink, RowBlock
from dagforge.sql import postgres as sql
from dagforge.stage.encodings import ENCODINGS, Codec, Encoding, arrow_type, ndjson_line

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False, "write_statistics": False}
"""How part files are written: a transport read once, whole; no reader uses dictionaries or statistics.
On 2M pgbench rows: 0.13 s to write (0.27 s with pyarrow's defaults), 5 MB (8 MB); bench/README.md."""


class StageFormat:
    extension = ""

    def __init__(self, rows_per_part: int, encoding: Encoding):
        self.rows_per_part = rows_per_part
        self.encoding = encoding

    def select_list(self, columns: list[Column]) -> str:
        """What the export ``SELECT`` returns for these columns."""
        return ", ".join(self.encoding.codec(c.name, c.type_sql).select for c in columns)

    copy_options = "(FORMAT csv)"
    """Options of the export ``COPY … TO STDOUT``."""
    quote = b'"'
    """Its quote character."""

    def write_parts(self, blocks: Iterable[RowBlock], columns: list[Column], folder: Path, sink: PartSink) -> None:
        """The export's rows, in blocks of whole rows (:mod:`dagforge.sources.copy_rows`), into parts."""
        raise NotImplementedError

    def write_batches(
        self, batches: Iterable[pa.RecordBatch], columns: list[Column], folder: Path, sink: PartSink
    ) -> None:
        """Rows a source parsed itself (a file source), typed by each column's portable type."""
        raise TypeError(f"{self.extension} stage files are written from COPY output only; use format: parquet")

    def refused_value(self, error: Exception) -> Exception | None:
        """The terminal error for a value the encoding's export guard refused (None: not one of theirs)."""
        return self.encoding.refused_value(error)

    def copies_binary(self, columns: list[Column]) -> bool:
        """Whether :meth:`load_chunks` feeds a binary ``COPY`` (else CSV)."""
        return False

    def load_chunks(self, parts: Iterable[Path], columns: list[Column]) -> Iterator[bytes | memoryview]:
        """Every part's rows as the input of one ``COPY … FROM STDIN``, in :meth:`copies_binary`'s format."""
        for part in parts:
            yield from self.csv_chunks(part, columns)

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes | memoryview]:
        """The part file as Postgres-CSV bytes for ``COPY … FROM STDIN (FORMAT csv)``."""
        raise NotImplementedError


class CsvFormat(StageFormat):
    """Postgres' own CSV, split into parts at line boundaries."""

    extension = "csv"

    def write_parts(self, blocks: Iterable[RowBlock], columns: list[Column], folder: Path, sink: PartSink) -> None:
        # blocks end on row ends, so a part (cut once it holds rows_per_part rows) ends on one too
        parts = _RotatingFiles(folder, self.extension, self.rows_per_part, sink, binary=True)
        for block, rows in blocks:
            parts.write(block, rows=rows)
        parts.close()

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        with part.open("rb") as source:
            yield from iter(lambda: source.read(1 << 20), b"")


class ParquetFormat(StageFormat):
    extension = "parquet"

    def _file_schema(self, columns: list[Column]) -> tuple[list[Codec], pa.Schema]:
        """Each column's codec in this encoding, and the part files' schema (the codecs' file types)."""
        codecs = [self.encoding.codec(c.name, c.type_sql) for c in columns]
        return codecs, pa.schema([(c.name, codec.file_type) for c, codec in zip(columns, codecs, strict=True)])

    def write_parts(self, blocks: Iterable[RowBlock], columns: list[Column], folder: Path, sink: PartSink) -> None:
        codecs, schema = self._file_schema(columns)
        parse = pa.schema([(c.name, k.parse_type) for c, k in zip(columns, codecs, strict=True)])
        batches = (_converted(parsed, codecs, schema) for parsed in _record_batches(blocks, parse))
        self._write_rotating(batches, schema, folder, sink)

    def write_batches(
        self, batches: Iterable[pa.RecordBatch], columns: list[Column], folder: Path, sink: PartSink
    ) -> None:
        """Each batch cast to the encoding's file types (a file source's batches carry the declared
        types already; the cast only changes what the destination reads differently)."""
        _, schema = self._file_schema(columns)
        self._write_rotating((_cast_batch(b, schema) for b in batches), schema, folder, sink)

    def _write_rotating(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, folder: Path, sink: PartSink):
        writer, path, rows, index = None, None, 0, 0
        for batch in batches:
            if not batch.num_rows:
                continue
            if writer is None:
                path = folder / f"part-{index:05d}.parquet"
                writer = pq.ParquetWriter(path, schema, **PARQUET_OPTIONS)
            writer.write_batch(batch)
            rows += batch.num_rows
            if rows >= self.rows_per_part:
                writer.close()
                sink(path, rows)
                writer, rows, index = None, 0, index + 1
        if writer is not None:
            writer.close()
            sink(path, rows)

    def copies_binary(self, columns: list[Column]) -> bool:
        """Binary when every column's file type is its own binary COPY form (:func:`binary_copy_type`):
        the destination then reads the values' bytes instead of parsing their CSV text."""
        return self.encoding.name == "postgres" and bool(columns) and all(binary_copy_type(c.type_sql) for c in columns)

    def load_chunks(self, parts: Iterable[Path], columns: list[Column]) -> Iterator[bytes | memoryview]:
        if not self.copies_binary(columns):
            yield from super().load_chunks(parts, columns)
            return
        _, schema = self._file_schema(columns)
        encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)  # Rust: one pass per batch, no Python per row
        yield encoder.write_header()
        for part in parts:
            for batch in _part_batches(part):
                yield encoder.write_batch(_cast_batch(batch, schema))
        yield encoder.finish()

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes | memoryview]:
        for batch in _part_batches(part):
            out = pa.BufferOutputStream()
            _write_pg_csv(batch, out)
            yield memoryview(out.getvalue())  # Arrow's buffer itself, not a copy


class JsonlFormat(CsvFormat):
    """One JSON object per line, each line built by Postgres and written as is.

    The encoding decides the values (:meth:`~dagforge.stage.encodings.Encoding.ndjson_value`):
    for a Postgres destination every value as Postgres prints it (exact: numbers as strings), for
    BigQuery the JSON its loader reads as the column's type. The export is a one-column CSV whose
    quote and delimiter are control characters that JSON text never holds raw, so Postgres prints
    each line unquoted and Python only cuts parts (no parsing, no ``json.dumps`` per row).
    """

    extension = "jsonl"
    copy_options = "(FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
    quote = b"\x01"

    def select_list(self, columns: list[Column]) -> str:
        return ndjson_line(self.encoding, [(c.name, c.type_sql) for c in columns]) + " AS line"

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        """Parsed by Arrow's JSON reader in blocks of whole lines, every value as text (the Postgres encoding)."""
        schema = pa.schema([(c.name, pa.string()) for c in columns])
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        with part.open("rb") as lines:
            for block in _blocks(lines):
                read = pa_json.ReadOptions(block_size=len(block) + 1, use_threads=False)
                out = io.BytesIO()
                _write_pg_csv(pa_json.read_json(pa.py_buffer(block), read_options=read, parse_options=options), out)
                yield out.getvalue()


def binary_copy_type(type_sql: str) -> bool:
    """Whether a destination type's Parquet column is exactly what its binary ``COPY`` input holds: the
    encoding's own Arrow types (:func:`~dagforge.stage.encodings.arrow_type`: integers, IEEE floats with
    ``-0``, NaN and infinities, booleans), and the string types, whose binary input is the UTF-8 bytes
    of the string the part holds (``varchar(n)`` and ``character(n)`` check or pad as text ``COPY`` does).
    Every other type travels as its text form, which only CSV parses."""
    t = type_sql.strip()
    return arrow_type(t) != pa.string() or bool(sql.VARYING_TEXT.fullmatch(t) or sql.PADDED_TEXT.fullmatch(t))


def _part_batches(part: Path) -> Iterator[pa.RecordBatch]:
    """A Parquet part's rows in blocks of about :data:`BLOCK_BYTES`, decoded on one thread: the load's
    read-ahead is a thread already, and Arrow's own threads each keep an allocator heap (40 MB more
    peak RSS on 2M pgbench rows)."""
    file = pq.ParquetFile(part)
    yield from file.iter_batches(batch_size=_rows_per_block(file.metadata), use_threads=False)


def _cast_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    arrays = [batch.column(i).cast(f.type) for i, f in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _converted(batch: pa.RecordBatch, codecs: list[Codec], schema: pa.Schema) -> pa.RecordBatch:
    """Columns whose file type Arrow's CSV reader cannot parse into, converted from their text."""
    if all(codec.convert is None for codec in codecs):
        return batch
    arrays = [codec.convert(batch.column(i)) if codec.convert else batch.column(i) for i, codec in enumerate(codecs)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _RotatingFiles:
    """Appends to part-NNNNN files, starting a new one once ``rows_per_part`` rows are in."""

    def __init__(self, folder: Path, extension: str, rows_per_part: int, sink: PartSink, *, binary: bool):
        self.folder, self.extension, self.rows_per_part, self.sink = folder, extension, rows_per_part, sink
        self.mode = "wb" if binary else "w"
        self.index, self.rows, self.out, self.path = 0, 0, None, None

    def write(self, data: Any, rows: int) -> None:
        if self.out is None:
            self.path = self.folder / f"part-{self.index:05d}.{self.extension}"
            self.out = self.path.open(self.mode, **({} if "b" in self.mode else {"encoding": "utf-8"}))
        self.out.write(data)
        self.rows += rows
        if self.rows >= self.rows_per_part:
            self.close()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.sink(self.path, self.rows)
            self.out, self.rows, self.index = None, 0, self.index + 1


BLOCK_BYTES = 4 << 20
"""About how much of a stage file is parsed at once; a single larger row is a block of its own."""


def _rows_per_block(metadata: pq.FileMetaData, block_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of a part make about ``block_bytes`` of data (so that the blocks the load has
    in flight stay small whatever the width of a row), between 1,024 and 65,536."""
    size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    per_row = size / max(metadata.num_rows, 1)
    return int(min(65_536, max(1_024, block_bytes / max(per_row, 1.0))))


def _blocks(rows: Iterable[bytes], block_bytes: int = BLOCK_BYTES) -> Iterator[bytearray]:
    """Whole rows (or blocks of them) gathered into blocks of at most ``block_bytes``, or of one
    larger piece."""
    block = bytearray()
    for row in rows:
        if block and len(block) + len(row) > block_bytes:
            yield block
            block = bytearray()
        block += row
    if block:
        yield block


def _record_batches(
    blocks: Iterable[RowBlock], schema: pa.Schema, *, block_bytes: int = BLOCK_BYTES
) -> Iterator[pa.RecordBatch]:
    """Parse Postgres CSV into record batches of about ``block_bytes``, with the columns of ``schema``.

    The blocks of whole rows are gathered into larger ones and each is parsed here, when the
    caller asks for it: no file object called from Arrow's I/O thread, and no read-ahead queue
    (Arrow's streaming reader keeps up to 32 blocks in flight while the caller uploads a part, so
    memory grew with the table; bench/pg_s3_pg.py). Arrow parses each block as one chunk (one
    record batch, one Parquet row group), however large its row.
    """
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    convert = pa_csv.ConvertOptions(
        column_types=schema,
        null_values=[""],
        quoted_strings_can_be_null=False,
        strings_can_be_null=True,
        true_values=["t"],
        false_values=["f"],
    )
    for block in _blocks((data for data, _ in blocks), block_bytes):
        read = pa_csv.ReadOptions(column_names=schema.names, block_size=len(block) + 1, use_threads=False)
        yield from pa_csv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse,
                                   convert_options=convert).to_batches()  # fmt: skip


def _write_pg_csv(data: pa.RecordBatch | pa.Table, out: IO[bytes]) -> None:
    """CSV that Postgres reads back exactly: every value quoted, NULL as an empty unquoted field."""
    pa_csv.write_csv(data, out, write_options=pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))


FORMATS: dict[str, dict[str, type[StageFormat]]] = {
    "postgres": {"parquet": ParquetFormat, "csv": CsvFormat, "jsonl": JsonlFormat},
    "bigquery": {"parquet": ParquetFormat, "jsonl": JsonlFormat},
}
"""Encoding (the destination kind) → file format → class."""


def stage_format(encoding: str, file_format: str, rows_per_part: int) -> StageFormat:
    return FORMATS[encoding][file_format](rows_per_part, ENCODINGS[encoding])
