"""Staged file formats: how Postgres rows become part files and go back into Postgres.

Every format reads the source's ``COPY … (FORMAT csv)`` stream and writes files; loading turns
files back into a CSV ``COPY`` into staging. Parquet goes through pyarrow's streaming CSV reader
and writer (C++ parsing, bounded batches), with column types mapped from the Postgres catalog.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dagforge.sql.postgres import ident

_DECIMAL = re.compile(r"^numeric\((\d+),(\d+)\)$")
_ARROW_BY_TYPE: dict[str, pa.DataType] = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}


def arrow_type(type_sql: str) -> pa.DataType:
    """Parquet column type for a Postgres type; text (exact, lossless) when nothing closer fits."""
    if type_sql in _ARROW_BY_TYPE:
        return _ARROW_BY_TYPE[type_sql]
    match = _DECIMAL.match(type_sql.replace(" ", ""))
    if match and int(match.group(1)) <= 38:
        return pa.decimal128(int(match.group(1)), int(match.group(2)))
    return pa.string()


def select_expression(name: str, type_sql: str) -> str:
    """timestamptz leaves Postgres as ISO 8601 UTC with ``Z`` so every reader parses the zone."""
    if type_sql == "timestamp with time zone":
        return f"""to_char({ident(name)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS {ident(name)}"""
    return ident(name)


class ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (a COPY stream), for pyarrow's CSV reader."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = bytes(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str


PartSink = Callable[[Path, int], None]
"""Called with (finished local part file, rows in it)."""


class StageFormat:
    extension = ""

    def write_parts(self, csv_stream: Iterable[bytes], columns: list[Column], folder: Path, sink: PartSink) -> None:
        raise NotImplementedError

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        """The part file as Postgres-CSV bytes for ``COPY … FROM STDIN (FORMAT csv)``."""
        raise NotImplementedError


class CsvFormat(StageFormat):
    """Postgres' own CSV, split into parts at line boundaries."""

    extension = "csv"

    def __init__(self, rows_per_part: int):
        self.rows_per_part = rows_per_part

    def write_parts(self, csv_stream: Iterable[bytes], columns: list[Column], folder: Path, sink: PartSink) -> None:
        # CSV rows may hold quoted newlines, so parts are cut on record boundaries found by pyarrow
        for index, batch in enumerate(_record_batches(csv_stream, columns, self.rows_per_part, as_text=True)):
            path = folder / f"part-{index:05d}.csv"
            with path.open("wb") as out:
                _write_pg_csv(batch, out)
            sink(path, batch.num_rows)

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        with part.open("rb") as source:
            yield from iter(lambda: source.read(1 << 20), b"")


class ParquetFormat(StageFormat):
    extension = "parquet"

    def __init__(self, rows_per_part: int):
        self.rows_per_part = rows_per_part

    def write_parts(self, csv_stream: Iterable[bytes], columns: list[Column], folder: Path, sink: PartSink) -> None:
        schema = _arrow_schema(columns)
        writer, path, rows, index = None, None, 0, 0
        for batch in _record_batches(csv_stream, columns, None, as_text=False):
            if writer is None:
                path = folder / f"part-{index:05d}.parquet"
                writer = pq.ParquetWriter(path, schema, compression="zstd")
            writer.write_batch(batch)
            rows += batch.num_rows
            if rows >= self.rows_per_part:
                writer.close()
                sink(path, rows)
                writer, rows, index = None, 0, index + 1
        if writer is not None:
            writer.close()
            sink(path, rows)

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=65_536):
            out = io.BytesIO()
            _write_pg_csv(batch, out)
            yield out.getvalue()


class JsonlFormat(StageFormat):
    """One JSON object per line, values as Postgres prints them (exact: numbers as strings)."""

    extension = "jsonl"

    def __init__(self, rows_per_part: int):
        self.rows_per_part = rows_per_part

    def write_parts(self, csv_stream: Iterable[bytes], columns: list[Column], folder: Path, sink: PartSink) -> None:
        names = [c.name for c in columns]
        for index, batch in enumerate(_record_batches(csv_stream, columns, self.rows_per_part, as_text=True)):
            path = folder / f"part-{index:05d}.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for row in zip(*(batch.column(i).to_pylist() for i in range(len(names))), strict=True):
                    out.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n")
            sink(path, batch.num_rows)

    def csv_chunks(self, part: Path, columns: list[Column]) -> Iterator[bytes]:
        names = [c.name for c in columns]
        with part.open(encoding="utf-8") as source:
            while lines := [line for _, line in zip(range(65_536), source, strict=False)]:
                records = [json.loads(line) for line in lines]
                table = pa.table({n: pa.array([r.get(n) for r in records], pa.string()) for n in names})
                out = io.BytesIO()
                _write_pg_csv(table, out)
                yield out.getvalue()


def _arrow_schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([(c.name, arrow_type(c.type_sql)) for c in columns])


def _record_batches(
    csv_stream: Iterable[bytes], columns: list[Column], rows_per_batch: int | None, *, as_text: bool
) -> Iterator[pa.RecordBatch]:
    """Parse Postgres CSV into record batches (typed, or every column as text)."""
    schema = pa.schema([(c.name, pa.string()) for c in columns]) if as_text else _arrow_schema(columns)
    reader = pa_csv.open_csv(
        io.BufferedReader(ChunkReader(csv_stream), buffer_size=1 << 20),
        read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=4 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            quoted_strings_can_be_null=False,
            strings_can_be_null=True,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in reader:
        if rows_per_batch is None:
            yield batch
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= rows_per_batch:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, pending_rows = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _write_pg_csv(data: pa.RecordBatch | pa.Table, out: IO[bytes]) -> None:
    """CSV that Postgres reads back exactly: every value quoted, NULL as an empty unquoted field."""
    pa_csv.write_csv(data, out, write_options=pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))


FORMATS: dict[str, type[StageFormat]] = {"parquet": ParquetFormat, "csv": CsvFormat, "jsonl": JsonlFormat}
