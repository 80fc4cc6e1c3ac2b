"""The Postgres-destination type map and the stage files' parsing, without services: every example
of the map maps as documented, Arrow keeps every value of the columns it types, and a row larger
than a block is parsed on its own."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from dagforge.sources.copy_rows import whole_row_blocks
from dagforge.sql.types import (
    ARRAY,
    DOMAIN,
    ENUM,
    TYPE_MAP,
    TypeNode,
    b,
    binary_copy_exact,
    export_expression,
    markdown_table,
    portable_type,
)
from dagforge.stage import formats
from dagforge.stage.encodings import ENCODINGS, arrow_type

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [(row.postgres, example) for row in TYPE_MAP for example in row.examples]


@pytest.mark.parametrize(("row", "example"), EXAMPLES, ids=[f"{e.chain[0].name}" for _, e in EXAMPLES])
def test_every_example_maps_as_documented(row: str, example) -> None:
    assert portable_type(example.chain) == example.destination, row


def test_each_row_says_what_it_does_and_the_readme_shows_the_table() -> None:
    for row in TYPE_MAP:
        assert row.examples and row.note and row.fidelity in ("exact", "converted"), row.postgres
        same = all(portable_type(e.chain) == e.chain[0].name for e in row.examples)
        assert same == (row.fidelity == "exact"), row.postgres
    assert markdown_table() in (REPO / "README.md").read_text()


def test_binary_copy_only_where_both_sides_have_the_type_and_its_binary_form_is_exact() -> None:
    assert binary_copy_exact([b("numeric(12,2)")]) and binary_copy_exact([TypeNode(ARRAY, "jsonb[]", True), b("jsonb")])
    assert not binary_copy_exact([b("xml")])
    assert not binary_copy_exact([TypeNode(ARRAY, "xml[]", True), b("xml")])
    assert not binary_copy_exact([b("regclass")])  # travels as text
    assert not binary_copy_exact([TypeNode(ENUM, "mood", False)])
    assert not binary_copy_exact([TypeNode(DOMAIN, "app.price", False), b("numeric(10,2)")])


def test_xml_leaves_as_its_stored_text() -> None:
    assert export_expression("x", "xml") == '"x"::text AS "x"'
    assert export_expression("xs", "xml[]") == '"xs"::text[] AS "xs"'
    assert export_expression('we"ird', "integer") == '"we""ird"'
    assert ENCODINGS["postgres"].codec("x", "xml").select == '"x"::text AS "x"'


def test_stage_files_type_only_what_arrow_keeps_exactly() -> None:
    typed = {row: arrow_type(row) for row in ("smallint", "integer", "bigint", "real", "double precision", "boolean")}
    assert typed == {"smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64(), "real": pa.float32(),
                     "double precision": pa.float64(), "boolean": pa.bool_()}  # fmt: skip
    for text in ("numeric(12,2)", "numeric", "date", "timestamp with time zone", "timestamp without time zone",
                 "time without time zone", "interval", "text[]", "real[]"):  # fmt: skip
        assert arrow_type(text) == pa.string(), text


FLOATS = ["NaN", "Infinity", "-Infinity", "-0", "0", "1e-300", "5e-324", "1.7976931348623157e+308", "0.1", ""]
REALS = ["NaN", "Infinity", "-Infinity", "-0", "1e-45", "3.4028235e+38", "-3.4028235e+38", "1.1754944e-38", "0.1", ""]
INTS = [("-32768", "-2147483648", "-9223372036854775808"), ("32767", "2147483647", "9223372036854775807")]


def _bits(text: str, fmt: str) -> bytes | None:
    if text == "":
        return None
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(text.lower())
    value = float(text.replace("Infinity", "inf")) if value is None else value
    return struct.pack(fmt, value)


def test_typed_columns_survive_parquet_and_back_bit_for_bit(tmp_path: Path) -> None:
    columns = [formats.Column(n, t) for n, t in (("f8", "double precision"), ("f4", "real"), ("i2", "smallint"),
               ("i4", "integer"), ("i8", "bigint"), ("ok", "boolean"))]  # fmt: skip
    ints = INTS * 5
    lines = [f"{f8},{f4},{i[0]},{i[1]},{i[2]},{'t' if n % 2 else 'f'}\n" for n, (f8, f4, i) in
             enumerate(zip(FLOATS, REALS, ints, strict=True))]  # fmt: skip
    parts: list[Path] = []
    fmt = formats.stage_format("postgres", "parquet", 1000)
    fmt.write_parts(((line.encode(), 1) for line in lines), columns, tmp_path, lambda path, rows: parts.append(path))
    back = b"".join(fmt.csv_chunks(parts[0], columns)).decode().splitlines()

    for sent, got in zip(lines, back, strict=True):
        f8, f4, i2, i4, i8, ok = (v.strip('"') for v in got.split(","))
        s8, s4, *sent_ints, sent_ok = sent.strip().split(",")
        assert _bits(f8, "<d") == _bits(s8, "<d") and _bits(f4, "<f") == _bits(s4, "<f"), (sent, got)
        assert [i2, i4, i8] == sent_ints and ok == {"t": "true", "f": "false"}[sent_ok]


def test_blocks_are_bounded_except_for_one_larger_row() -> None:
    rows = [b"a" * 100] * 30 + [b"h" * 5000] + [b"b" * 100] * 30
    blocks = list(formats._blocks(rows, block_bytes=1000))
    assert b"".join(blocks) == b"".join(rows)
    assert [len(block) for block in blocks if len(block) > 1000] == [5000]
    assert all(len(block) <= 1000 for block in blocks if b"h" not in block)


def test_a_row_of_20_mib_text_and_20_mib_bytea_parses_alone() -> None:
    big_text, big_hex = 'x,"y"\n' * (20 << 17), "\\x" + "00ff" * (10 << 20)
    rows = [b'1,"s",\n', ('2,"' + big_text.replace('"', '""') + f'","{big_hex}"\n').encode(), b"3,,\n"]
    schema = pa.schema([("id", pa.int32()), ("body", pa.string()), ("raw", pa.string())])
    data = b"".join(rows)  # as the COPY relay hands it over: 1 MB blocks cut anywhere
    relayed = whole_row_blocks(data[at : at + (1 << 20)] for at in range(0, len(data), 1 << 20))
    batches = list(formats._record_batches(relayed, schema, block_bytes=1 << 20))
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("body").to_pylist() == ["s", big_text, None]
    assert table.column("raw")[1].as_py() == big_hex


def test_json_lines_longer_than_a_block_are_read(tmp_path: Path) -> None:
    body = 'tab\t"q"\n\\' * (1 << 20)  # 9 MiB, longer still once escaped
    part = tmp_path / "part-00000.jsonl"
    part.write_text("\n".join(json.dumps(r) for r in ({"id": "1", "v": body}, {"id": "2", "v": None})) + "\n")
    columns = [formats.Column("id", "integer"), formats.Column("v", "text")]
    csv = b"".join(formats.stage_format("postgres", "jsonl", 10).csv_chunks(part, columns))
    read = pa_csv.ReadOptions(column_names=["id", "v"], block_size=len(csv) + 1)
    nulls = pa_csv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
    newlines = pa_csv.ParseOptions(newlines_in_values=True)
    rows = pa_csv.read_csv(pa.py_buffer(csv), read_options=read, convert_options=nulls, parse_options=newlines)
    rows = rows.to_pylist()
    assert rows == [{"id": 1, "v": body}, {"id": 2, "v": None}]


def test_the_load_reads_wide_rows_in_fewer_rows_per_block(tmp_path: Path) -> None:
    """The blocks the load keeps in flight are about 4 MB whatever a row's width."""
    import pyarrow.parquet as pq

    wide, narrow = tmp_path / "wide.parquet", tmp_path / "narrow.parquet"
    pq.write_table(pa.table({"id": range(20_000), "body": ["x" * 2000] * 20_000}), wide, **formats.PARQUET_OPTIONS)
    pq.write_table(pa.table({"id": pa.array(range(20_000), pa.int32())}), narrow, **formats.PARQUET_OPTIONS)

    assert 1_900 <= formats._rows_per_block(pq.ParquetFile(wide).metadata) <= 2_100
    assert formats._rows_per_block(pq.ParquetFile(narrow).metadata) == 65_536
    chunks = list(formats.stage_format("postgres", "parquet", 1000).csv_chunks(wide, []))
    assert len(chunks) == 10 and all(len(c) < 5 << 20 for c in chunks)
