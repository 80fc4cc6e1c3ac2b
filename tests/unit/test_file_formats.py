"""dagforge.sources.file_types and file_formats: declared types, and file bytes → typed record batches."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import runpy
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagforge.errors import TerminalError
from dagforge.sources import file_formats, file_types
from dagforge.sources.file_formats import (
    BadRow,
    Column,
    CsvOptions,
    TooManyBadRows,
    infer_columns,
    json_text,
    read_batches,
)
from dagforge.sources.file_types import FILE_TYPES, declared_type, markdown_table

UTC = dt.UTC

# ---- declared types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "name", "type_sql", "arrow"),
    [
        ("smallint", "smallint", "smallint", pa.int16()),
        ("INT", "integer", "integer", pa.int32()),
        ("integer", "integer", "integer", pa.int32()),
        ("bigint", "bigint", "bigint", pa.int64()),
        ("real", "real", "real", pa.float32()),
        ("double", "double precision", "double precision", pa.float64()),
        ("Float", "double precision", "double precision", pa.float64()),
        ("double   precision", "double precision", "double precision", pa.float64()),
        ("numeric(12, 2)", "numeric(12,2)", "numeric(12,2)", pa.decimal128(12, 2)),
        (" Numeric( 12 ,2 ) ", "numeric(12,2)", "numeric(12,2)", pa.decimal128(12, 2)),
        ("numeric(10)", "numeric(10,0)", "numeric(10,0)", pa.decimal128(10, 0)),
        ("numeric(50,10)", "numeric(50,10)", "numeric(50,10)", pa.decimal256(50, 10)),
        ("numeric", "numeric", "numeric", pa.string()),
        ("string", "text", "text", pa.string()),
        ("varchar(20)", "varchar(20)", "character varying(20)", pa.string()),
        ("character varying(20)", "varchar(20)", "character varying(20)", pa.string()),
        ("bool", "boolean", "boolean", pa.bool_()),
        ("date", "date", "date", pa.date32()),
        ("timestamp", "timestamp", "timestamp without time zone", pa.timestamp("us")),
        ("timestamptz", "timestamptz", "timestamp with time zone", pa.timestamp("us", "UTC")),
        ("timestamp with time zone", "timestamptz", "timestamp with time zone", pa.timestamp("us", "UTC")),
        ("time", "time", "time without time zone", pa.time64("us")),
        ("json", "jsonb", "jsonb", pa.string()),
        ("JSONB", "jsonb", "jsonb", pa.string()),
    ],
)
def test_declared_types_and_aliases(written: str, name: str, type_sql: str, arrow: pa.DataType) -> None:
    file_type = declared_type(written)
    assert (file_type.name, file_type.type_sql, file_type.arrow) == (name, type_sql, arrow)


@pytest.mark.parametrize("written", ["money", "integer(4)", "numeric(1,2,3)", "numeric(x)", "", "text[]"])
def test_an_unknown_type_lists_the_accepted_names(written: str) -> None:
    with pytest.raises(ValueError, match="unknown column type") as raised:
        declared_type(written)
    for accepted in ("smallint", "integer, int", "double precision, double, float", "varchar(n)", "timestamptz"):
        assert accepted in str(raised.value)


@pytest.mark.parametrize(("written", "message"), [("numeric(77,2)", "1 to 76"), ("numeric(4,5)", "scale 5")])
def test_numeric_limits(written: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        declared_type(written)


def test_the_type_table_prints_as_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(file_types.__file__, run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.strip() == markdown_table()
    assert printed.count("\n") == len(FILE_TYPES) + 2
    assert "| varchar(n) | character varying(n) |" in printed


# ---- the same data in every format ------------------------------------------------------------

DECLARED = {
    "id": "integer",
    "small": "smallint",
    "big": "bigint",
    "price": "numeric(12,2)",
    "ratio": "double precision",
    "r": "real",
    "amount": "numeric",
    "name": "text",
    "code": "varchar(5)",
    "flag": "boolean",
    "day": "date",
    "at": "timestamp",
    "tz": "timestamptz",
    "clock": "time",
    "doc": "jsonb",
}
COLUMNS = [Column.declared(name, text) for name, text in DECLARED.items()]
FORTY_DIGITS = "12345678901234567890.12345678901234567890"
ROWS: list[dict[str, Any]] = [
    {
        "id": 1, "small": -32768, "big": 9223372036854775807, "price": Decimal("1234567890.12"), "ratio": 0.5,
        "r": 1.5, "amount": FORTY_DIGITS, "name": 'Zoë, "quoted"', "code": "ab", "flag": True,
        "day": dt.date(2024, 2, 29), "at": dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
        "tz": dt.datetime(2024, 3, 1, tzinfo=UTC), "clock": dt.time(13, 45, 30, 250000), "doc": '{"a":[1,2.50]}',
    },
    {name: None for name in DECLARED} | {"id": 2},
    {
        "id": 3, "small": 32767, "big": -1, "price": Decimal("-0.05"), "ratio": -1e300, "r": -0.25,
        "amount": "-7", "name": "", "code": "abcde", "flag": False, "day": dt.date(1970, 1, 1),
        "at": dt.datetime(1999, 12, 31), "tz": dt.datetime(2024, 6, 30, 22, 30, tzinfo=UTC), "clock": dt.time(0, 0),
        "doc": '"text"',
    },
]  # fmt: skip


def expected_table(rows: list[dict[str, Any]] = ROWS, columns: list[Column] = COLUMNS) -> pa.Table:
    schema = pa.schema([(c.name, c.type.arrow) for c in columns])
    return pa.Table.from_pylist([{c.name: row[c.name] for c in columns} for row in rows], schema=schema)


def csv_cell(value: Any) -> str:
    """As a CSV writer would: NULL unquoted empty, text always quoted, the rest ISO or plain."""
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, bool):
        return "TRUE" if value else "f"
    if isinstance(value, dt.datetime) and value.tzinfo:
        return (value + dt.timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def csv_bytes(rows: list[dict[str, Any]] = ROWS) -> bytes:
    """The rows as CSV, with a column nobody declared first (it is ignored)."""
    lines = [",".join(["unused", *DECLARED])]
    lines += [",".join(["x"] + [csv_cell(row[n]) for n in DECLARED]) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def jsonl_value(name: str, value: Any) -> Any:
    """As a JSON lines writer would: numbers exact, JSON nested, dates and times ISO (UTC as Z)."""
    if value is None:
        return None
    if name == "doc":
        return json.loads(value, parse_float=Decimal)  # written back exactly by json_text
    if name in ("price", "amount"):
        return Decimal(value)
    if isinstance(value, dt.datetime) and value.tzinfo:
        return value.isoformat().replace("+00:00", "Z")
    return value.isoformat() if isinstance(value, dt.date | dt.time) else value


def jsonl_bytes(rows: list[dict[str, Any]] = ROWS) -> bytes:
    lines = [json_text({"other": {"nested": 1}} | {n: jsonl_value(n, v) for n, v in row.items()}) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table.append_column("unused", pa.array(["x"] * table.num_rows)), out)
    return out.getvalue()


def read_table(data: bytes, file_format: str, columns: list[Column] = COLUMNS, **options: Any) -> pa.Table:
    schema = pa.schema([(c.name, c.type.arrow) for c in columns])
    batches = list(read_batches(io.BytesIO(data), file_format, columns, **options))
    for batch in batches:
        assert batch.schema == schema
    return pa.Table.from_batches(batches, schema=schema)


def file_in(file_format: str) -> bytes:
    data = {"csv": csv_bytes, "jsonl": jsonl_bytes}.get(file_format.removesuffix(".gz"))
    if data is None:
        return parquet_bytes(expected_table())
    return gzip.compress(data()) if file_format.endswith(".gz") else data()


@pytest.mark.parametrize("file_format", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
def test_every_format_gives_the_same_typed_batches(file_format: str, tmp_path: Path) -> None:
    bad: list[BadRow] = []
    table = read_table(file_in(file_format), file_format, bad_rows=bad, spool_dir=tmp_path)
    assert bad == []
    assert table.equals(expected_table()), table.to_pylist()
    assert list(tmp_path.iterdir()) == []  # the Parquet spool file is gone


def test_declared_order_not_file_order() -> None:
    columns = [Column.declared("name", "text"), Column.declared("id", "int")]
    table = read_table(csv_bytes(), "csv", columns)
    assert table.column_names == ["name", "id"]
    assert table.to_pylist()[0] == {"name": 'Zoë, "quoted"', "id": 1}


# ---- CSV options ------------------------------------------------------------------------------

PAIR = [Column.declared("id", "integer"), Column.declared("name", "text")]


def pairs(table: pa.Table) -> list[tuple]:
    return [tuple(row.values()) for row in table.to_pylist()]


def test_semicolon_delimiter() -> None:
    table = read_table(b"id;name\n1;a,b\n2;c\n", "csv", PAIR, csv=CsvOptions(delimiter=";"))
    assert pairs(table) == [(1, "a,b"), (2, "c")]


def test_no_header_takes_the_declared_columns_in_order() -> None:
    table = read_table(b"1,a\n2,b\n", "csv", PAIR, csv=CsvOptions(header=False))
    assert pairs(table) == [(1, "a"), (2, "b")]


def test_single_quote_character() -> None:
    table = read_table(b"id,name\n1,'a, ''b'''\n2,\"c\"\n", "csv", PAIR, csv=CsvOptions(quote="'"))
    assert pairs(table) == [(1, "a, 'b'"), (2, '"c"')]


def test_null_markers_and_quoted_values() -> None:
    """Postgres's COPY rules: unquoted markers are NULL; quoted values never are; "" is the empty string."""
    options = CsvOptions(null_values=("NA", "\\N"))
    data = b'id,name\n1,NA\nNA,\\N\n3,"NA"\n4,""\n5,\n'
    bad: list[BadRow] = []
    table = read_table(data, "csv", PAIR, csv=options, max_bad_rows=0, bad_rows=bad)
    assert pairs(table) == [(1, None), (None, None), (3, "NA"), (4, ""), (5, "")]
    default = read_table(b'id,name\n1,\n2,""\n,x\n', "csv", PAIR)
    assert pairs(default) == [(1, None), (2, ""), (None, "x")]


def test_a_quoted_empty_value_is_not_a_null_number() -> None:
    bad: list[BadRow] = []
    table = read_table(b'id,name\n"",x\n2,y\n', "csv", PAIR, max_bad_rows=1, bad_rows=bad)
    assert pairs(table) == [(2, "y")]
    assert bad == [BadRow(2, "column id: cannot parse '' as integer")]


def test_latin1_text() -> None:
    data = "id;name\n1;Zoë\n2;Ålesund ñ\n".encode("latin-1")
    table = read_table(data, "csv", PAIR, csv=CsvOptions(delimiter=";", encoding="latin-1"))
    assert pairs(table) == [(1, "Zoë"), (2, "Ålesund ñ")]


def test_utf8_byte_order_mark_and_crlf() -> None:
    table = read_table(b"\xef\xbb\xbfid,name\r\n1,x\r\n\r\n2,y\r\n", "csv", PAIR)
    assert pairs(table) == [(1, "x"), (2, "y")]


def test_booleans_in_any_case() -> None:
    columns = [Column.declared("b", "bool")]
    words = b"true\nFALSE\nt\nF\n1\n0\nyes\nNo\ntRuE\n\n"
    table = read_table(b"b\n" + words.replace(b"\n\n", b"\n") + b"\n", "csv", columns)
    assert table.column("b").to_pylist() == [True, False, True, False, True, False, True, False, True]


def test_date_formats() -> None:
    columns = [Column.declared("id", "int"), Column.declared("day", "date")]
    options = CsvOptions(date_formats=("%d/%m/%Y", "%Y%m%d"))
    bad: list[BadRow] = []
    data = b"id,day\n1,31/01/2024\n2,20240229\n3,2024-01-31\n4,\n"
    table = read_table(data, "csv", columns, csv=options, max_bad_rows=1, bad_rows=bad)
    assert pairs(table) == [(1, dt.date(2024, 1, 31)), (2, dt.date(2024, 2, 29)), (4, None)]
    assert bad == [BadRow(4, "column day: cannot parse '2024-01-31' as date")]


def test_timestamp_formats() -> None:
    columns = [Column.declared("at", "timestamp"), Column.declared("tz", "timestamptz")]
    options = CsvOptions(timestamp_formats=("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M%z"))
    table = read_table(b"at,tz\n31/01/2024 10:30,31/01/2024 10:30+0200\n", "csv", columns, csv=options)
    assert table.to_pylist() == [
        {"at": dt.datetime(2024, 1, 31, 10, 30), "tz": dt.datetime(2024, 1, 31, 8, 30, tzinfo=UTC)}
    ]


def test_timestamptz_offsets_are_converted_to_utc() -> None:
    columns = [Column.declared("tz", "timestamptz")]
    data = b"tz\n2024-03-01 10:00:00+02:00\n2024-03-01T10:00:00Z\n2024-03-01 10:00:00\n2024-03-01T10:00-0530\n"
    table = read_table(data, "csv", columns)
    hour = dt.datetime(2024, 3, 1, 10, tzinfo=UTC)
    expected = [hour - dt.timedelta(hours=2), hour, hour, hour + dt.timedelta(hours=5, minutes=30)]
    assert table.column("tz").to_pylist() == expected


def test_a_naive_timestamp_with_an_offset_is_a_bad_row() -> None:
    columns = [Column.declared("at", "timestamp")]
    bad: list[BadRow] = []
    table = read_table(b"at\n2024-03-01 10:00:00\n2024-03-01 10:00:00+02:00\n", "csv", columns,
                       max_bad_rows=1, bad_rows=bad)  # fmt: skip
    assert table.column("at").to_pylist() == [dt.datetime(2024, 3, 1, 10)]
    assert [b.line for b in bad] == [3]


def test_quoted_newlines_across_block_boundaries() -> None:
    """Rows are cut only at newlines outside quotes; a row's line is where it starts."""
    data = b'id,name\n1,"multi\nline, with ""quotes""\nand; more"\n2,plain\n3,"x\n\ny"\nbad,z\n4,"last"'
    options = CsvOptions(newlines_in_values=True)
    for batch_bytes in (1, 7, 16, 1 << 20):
        bad: list[BadRow] = []
        table = read_table(data, "csv", PAIR, csv=options, batch_bytes=batch_bytes, max_bad_rows=1, bad_rows=bad)
        assert pairs(table) == [(1, 'multi\nline, with "quotes"\nand; more'), (2, "plain"), (3, "x\n\ny"), (4, "last")]
        assert bad == [BadRow(9, "column id: cannot parse 'bad' as integer")]


def test_text_that_is_not_in_its_encoding_fails_the_read() -> None:
    with pytest.raises(TerminalError, match="not valid ascii text"):
        read_table("id,name\n1,Zoë\n".encode(), "csv", PAIR, csv=CsvOptions(encoding="ascii"))


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(TerminalError, match="unknown file format 'xlsx'"):
        read_table(b"", "xlsx", PAIR)


def test_csv_options_from_a_spec_mapping() -> None:
    options = CsvOptions.from_dict({"delimiter": ";", "null_values": "NA", "date_formats": ["%d/%m/%Y"]})
    assert options == CsvOptions(delimiter=";", null_values=("NA",), date_formats=("%d/%m/%Y",))
    assert CsvOptions.from_dict(None) == CsvOptions()
    with pytest.raises(ValueError, match=r"unknown csv option.*delimeter"):
        CsvOptions.from_dict({"delimeter": ";"})
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        CsvOptions(encoding="utf-16")
    with pytest.raises(ValueError, match="one character"):
        CsvOptions(delimiter=";;")


# ---- bad rows ---------------------------------------------------------------------------------

BAD_CSV = b"id,name\n1,a\n2,b\n3,c\nfive,d\n6,e\n7,f\n8,g\n9\n10,j\n"


def test_bad_rows_are_reported_with_their_line_and_dropped() -> None:
    bad: list[BadRow] = []
    table = read_table(BAD_CSV, "csv", PAIR, max_bad_rows=2, bad_rows=bad)
    assert table.column("id").to_pylist() == [1, 2, 3, 6, 7, 8, 10]
    assert bad == [
        BadRow(5, "column id: cannot parse 'five' as integer"),
        BadRow(9, "expected 2 fields, found 1"),
    ]


@pytest.mark.parametrize("suspected", ["none", "all"])
def test_bad_rows_are_found_whatever_the_suspects(suspected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused block's suspects only speed things up: missed ones are bisected, extra ones tried alone."""

    def suspects(values: pa.ChunkedArray, *_: Any) -> list[int]:
        return list(range(len(values))) if suspected == "all" else []

    monkeypatch.setattr(file_formats, "_unconvertible", suspects)
    bad: list[BadRow] = []
    table = read_table(BAD_CSV, "csv", PAIR, max_bad_rows=2, bad_rows=bad)
    assert table.column("id").to_pylist() == [1, 2, 3, 6, 7, 8, 10]
    assert [(b.line, b.reason) for b in bad] == [
        (5, "column id: cannot parse 'five' as integer"),
        (9, "expected 2 fields, found 1"),
    ]


def test_a_value_longer_than_a_reader_block() -> None:
    long = "x" * (3 << 20)
    table = read_table(f"id,name\n1,{long}\n2,b\n".encode(), "csv", PAIR, batch_bytes=1 << 20)
    assert pairs(table) == [(1, long), (2, "b")]


def test_too_many_bad_rows_lists_them() -> None:
    with pytest.raises(TooManyBadRows) as raised:
        read_table(BAD_CSV, "csv", PAIR, max_bad_rows=1)
    message = str(raised.value)
    assert isinstance(raised.value, TerminalError)
    assert "at least 2" in message and "max_bad_rows is 1" in message
    assert "line 5: column id: cannot parse 'five' as integer" in message
    assert "line 9: expected 2 fields, found 1" in message


def test_the_message_shows_the_first_ten() -> None:
    data = b"id\n" + b"x\n" * 30
    with pytest.raises(TooManyBadRows) as raised:
        read_table(data, "csv", [Column.declared("id", "int")], max_bad_rows=20)
    message = str(raised.value)
    assert "at least 21" in message and "line 11:" in message and "line 12:" not in message
    assert "… and 11 more" in message


def test_bad_rows_in_later_blocks_keep_their_physical_lines() -> None:
    rows = [f"{i},n{i}" for i in range(1, 2001)]
    rows[1499] = "oops,x"
    data = ("id,name\n\n" + "\n".join(rows) + "\n").encode()  # a blank line 2 counts
    bad: list[BadRow] = []
    table = read_table(data, "csv", PAIR, batch_bytes=1000, max_bad_rows=1, bad_rows=bad)
    assert table.num_rows == 1999
    assert bad == [BadRow(1502, "column id: cannot parse 'oops' as integer")]


@pytest.mark.parametrize(
    ("declared", "value", "reason"),
    [
        ("integer", "99999999999", "cannot parse '99999999999' as integer"),
        ("smallint", "40000", "cannot parse '40000' as smallint"),
        ("numeric(5,2)", "1.234", "cannot parse '1.234' as numeric(5,2)"),
        ("numeric(5,2)", "1234.5", "cannot parse '1234.50' as numeric(5,2) (at most 3 digits before the point)"),
        ("numeric(5,2)", "123456", "cannot parse '123456' as numeric(5,2)"),
        ("numeric", "12x", "cannot parse '12x' as numeric"),
        ("numeric", "NaN", "cannot parse 'NaN' as numeric"),
        ("varchar(3)", "abcd", "'abcd' is longer than 3 characters"),
        ("boolean", "maybe", "cannot parse 'maybe' as boolean"),
        ("date", "2024-02-30", "cannot parse '2024-02-30' as date"),
        ("timestamptz", "yesterday", "cannot parse 'yesterday' as timestamptz"),
        ("time", "25:00", "cannot parse '25:00' as time"),
        ("jsonb", "{oops", "cannot parse '{oops' as jsonb"),
    ],
)
def test_values_that_do_not_parse(declared: str, value: str, reason: str) -> None:
    columns = [Column.declared("id", "int"), Column.declared("v", declared)]
    bad: list[BadRow] = []
    table = read_table(f"id,v\n1,\n2,{value}\n3,\n".encode(), "csv", columns, max_bad_rows=1, bad_rows=bad)
    assert table.column("id").to_pylist() == [1, 3]
    assert bad == [BadRow(3, f"column v: {reason}")]


def test_a_bad_row_does_not_change_how_the_others_parse() -> None:
    """The slow path (a refused block, bisected) keeps exactly what the fast path would."""
    good = csv_bytes()
    spoiled = good.replace(b"\n", b"\nx,oops\n", 1)  # a bad row right after the header
    bad: list[BadRow] = []
    table = read_table(spoiled, "csv", max_bad_rows=1, bad_rows=bad)
    assert table.equals(read_table(good, "csv"))
    assert [b.line for b in bad] == [2]


def test_a_missing_column_names_the_header() -> None:
    with pytest.raises(TerminalError, match=r"no column name; its columns are: id, label"):
        read_table(b"id,label\n1,a\n", "csv", PAIR)


def test_an_unbalanced_quote_fails_instead_of_reading_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_formats, "MAX_ROW_BYTES", 1000)
    data = b'id,name\n1,"never closed\n' + b"2,b\n" * 2000
    with pytest.raises(TerminalError, match="unbalanced quote"):
        read_table(data, "csv", PAIR, csv=CsvOptions(newlines_in_values=True), batch_bytes=64)


# ---- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_decimals_keep_every_digit(file_format: str) -> None:
    columns = [Column.declared("price", "numeric(12,2)"), Column.declared("amount", "numeric")]
    forty = "1234567890123456789012345678901234567890"
    if file_format == "csv":
        data = f"price,amount\n0.1,{forty}\n9999999999.99,-{FORTY_DIGITS}\n 1.5 ,1e-40\n".encode()
    else:
        data = f'{{"price": 0.1, "amount": {forty}}}\n{{"price": 9999999999.99, "amount": "-{FORTY_DIGITS}"}}\n'
        data = (data + '{"price": "1.5", "amount": 1e-40}\n').encode()
    table = read_table(data, file_format, columns)
    assert table.column("price").to_pylist() == [Decimal("0.10"), Decimal("9999999999.99"), Decimal("1.50")]
    assert table.column("amount").to_pylist()[:2] == [forty, "-" + FORTY_DIGITS]
    assert Decimal(table.column("amount")[2].as_py()) == Decimal("1e-40")


# ---- JSON lines -------------------------------------------------------------------------------


def test_bad_json_lines_are_reported_per_line() -> None:
    data = b'{"id": 1, "name": "a"}\n{"id": "two"}\n\nnot json\n[1]\n{"id": 6, "name": 7}\n{"id": 7}\n'
    bad: list[BadRow] = []
    table = read_table(data, "jsonl", PAIR, max_bad_rows=4, bad_rows=bad)
    assert pairs(table) == [(1, "a"), (7, None)]
    assert [b.line for b in bad] == [2, 4, 5, 6]
    assert bad[0].reason == "column id: cannot parse '\"two\"' as integer"
    assert bad[1].reason.startswith("not valid JSON")
    assert bad[2].reason == "not a JSON object"
    assert bad[3].reason == "column name: cannot parse '7' as text"


def test_jsonl_decimals_beyond_their_precision_are_bad() -> None:
    columns = [Column.declared("price", "numeric(5,2)")]
    bad: list[BadRow] = []
    table = read_table(b'{"price": 1234.5}\n{"price": 123.45}\n', "jsonl", columns, max_bad_rows=1, bad_rows=bad)
    assert table.column("price").to_pylist() == [Decimal("123.45")]
    assert [b.line for b in bad] == [1]


def test_jsonl_json_columns_keep_the_value_exactly() -> None:
    columns = [Column.declared("doc", "jsonb")]
    data = b'{"doc": {"b": 0.10000000000000000555, "a": [true, null, "\\u00e9"]}}\n{"doc": null}\n{}\n'
    table = read_table(data, "jsonl", columns)
    assert table.column("doc").to_pylist() == ['{"b":0.10000000000000000555,"a":[true,null,"é"]}', None, None]


# ---- Parquet ----------------------------------------------------------------------------------


def test_parquet_values_that_do_not_cast_are_bad_rows_by_row_number(tmp_path: Path) -> None:
    source = pa.table({"id": pa.array([1, 2**40, 3], pa.int64()), "name": ["a", "b", "c"]})
    bad: list[BadRow] = []
    table = read_table(parquet_bytes(source), "parquet", PAIR, max_bad_rows=1, bad_rows=bad, spool_dir=tmp_path)
    assert pairs(table) == [(1, "a"), (3, "c")]
    assert bad == [BadRow(2, "column id: cannot parse '1099511627776' as integer")]
    assert list(tmp_path.iterdir()) == []


def test_parquet_types_that_cannot_be_cast_name_the_column(tmp_path: Path) -> None:
    source = pa.table({"id": pa.array([{"x": 1}]), "name": ["a"]})
    expected = r"column id: the Parquet file's struct<x: int64> cannot be read as integer"
    with pytest.raises(TerminalError, match=expected):
        read_table(parquet_bytes(source), "parquet", PAIR, spool_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_parquet_text_and_nested_values(tmp_path: Path) -> None:
    columns = [Column.declared("tz", "timestamptz"), Column.declared("doc", "jsonb"), Column.declared("n", "numeric")]
    source = pa.table({
        "tz": ["2024-03-01T10:00:00+02:00"],
        "doc": pa.array([[1, 2]], pa.list_(pa.int64())),
        "n": pa.array([Decimal("1.50")], pa.decimal128(5, 2)),
    })  # fmt: skip
    table = read_table(parquet_bytes(source), "parquet", columns, spool_dir=tmp_path)
    assert table.to_pylist() == [{"tz": dt.datetime(2024, 3, 1, 8, tzinfo=UTC), "doc": "[1,2]", "n": "1.50"}]


def test_parquet_missing_column() -> None:
    with pytest.raises(TerminalError, match="Parquet file has no column name; its columns are: id, unused"):
        read_table(parquet_bytes(pa.table({"id": [1]})), "parquet", PAIR)


# ---- infer_columns ----------------------------------------------------------------------------


def test_infer_columns_from_a_csv_head() -> None:
    data = (
        b"id,fare,flag,day,at,tz,clock,name,empty\n"
        b"1,12.5,true,2024-01-31,2024-01-31 10:00:00,2024-01-31T10:00:00Z,10:00:00,a,\n"
        b"2,3,no,2024-02-01,2024-02-01 00:00:00,2024-02-01T00:00:00+02:00,23:00:00,b,\n"
    )
    assert infer_columns(io.BytesIO(gzip.compress(data)), "csv.gz") == {
        "id": "bigint",
        "fare": "double precision",
        "flag": "boolean",
        "day": "date",
        "at": "timestamp",
        "tz": "timestamptz",
        "clock": "time",
        "name": "text",
        "empty": "text",
    }


def test_infer_columns_timestamps_with_some_offsets() -> None:
    data = b"at\n2024-01-31 10:00:00+02:00\n2024-01-31 11:00:00\n"
    assert infer_columns(io.BytesIO(data), "csv") == {"at": "timestamptz"}


def test_infer_columns_reads_only_the_head() -> None:
    data = b"id,when\n" + b"1,31/01/2024\n" * 100_000 + b"x,y\n"
    stream = CountingStream(data)
    assert infer_columns(stream, "csv", csv=CsvOptions(date_formats=("%d/%m/%Y",)), sample_rows=100) == {
        "id": "bigint",
        "when": "date",
    }
    assert stream.position <= file_formats.INFER_BYTES


def test_infer_columns_jsonl_and_parquet() -> None:
    data = b'{"id": 1, "at": "2024-01-01T10:00:00", "day": "2024-01-01", "doc": {"a": 1}, "x": 1.5}\n'
    assert infer_columns(io.BytesIO(data), "jsonl") == {
        "id": "bigint", "at": "timestamp", "day": "date", "doc": "jsonb", "x": "double precision",
    }  # fmt: skip
    assert infer_columns(io.BytesIO(parquet_bytes(expected_table())), "parquet") == {
        **{name: declared_type(text).name for name, text in DECLARED.items()},
        "amount": "text",
        "code": "text",
        "doc": "text",
        "unused": "text",
    }


# ---- memory: blocks come out as the stream is read --------------------------------------------


class CountingStream(io.RawIOBase):
    """A non-seekable stream over ``data`` (or endless repeats of a row) that records how far it was read."""

    def __init__(self, data: bytes = b"", *, header: bytes = b"", row: bytes = b"", size: int = 0):
        self.data, self.header, self.row, self.size = data, header, row, size or len(data)
        self.position = 0
        self.repeated = row * (1 + (1 << 20) // max(len(row), 1)) * 2 if row else b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = min(size if size >= 0 else self.size, self.size - self.position, 1 << 20)
        out = self._generated(size) if self.row else self.data[self.position : self.position + size]
        self.position += len(out)
        return out

    def _generated(self, size: int) -> bytes:
        if self.position < len(self.header):
            return self.header[self.position : self.position + size]
        offset = (self.position - len(self.header)) % len(self.row)
        return self.repeated[offset : offset + size]


def test_batches_come_out_while_the_stream_is_read() -> None:
    """A ~50 MB file: the first batch arrives after a few blocks were read, and reading stays that close."""
    row = b"123456,2024-01-31 10:00:00,12.50,some text here,true\n"
    stream = CountingStream(header=b"id,at,fare,name,flag\n", row=row, size=50 << 20)
    declared = {"id": "int", "at": "timestamp", "fare": "numeric(10,2)", "name": "text", "flag": "bool"}
    columns = [Column.declared(name, text) for name, text in declared.items()]
    block = 1 << 20
    batches = read_batches(stream, "csv", columns, batch_bytes=block)
    parsed = 0
    for index, batch in enumerate(batches):
        parsed += batch.num_rows * len(row)
        assert stream.position - parsed <= 4 * block, (index, stream.position, parsed)
        assert batch.num_rows * len(row) > block * 0.9  # one batch per block
        if index == 10:
            break
    batches.close()
    assert 11 * block <= stream.position <= 15 * block < stream.size
    assert not [t for t in threading.enumerate() if t.name == "dagforge-file-blocks"]
