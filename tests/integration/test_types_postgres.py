"""Every PostgreSQL type, with its edge values, through every Postgres-destination shape and format.

One wide source table (user-defined types included, which the target never gets) is loaded
directly (text COPY, and binary COPY for the columns where that is exact) and through S3 as
Parquet, CSV and JSON lines, full and incremental; then every cell's text form is compared with
the source's under pinned session settings. The load itself runs in sessions of other time zones.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import psycopg
import pytest

from dagforge.devservices.s3 import S3Server
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.postgres import PostgresSource, describe_source
from dagforge.spec.model import LoadMode, SchemaChange
from dagforge.sql.postgres import ident
from dagforge.stage.extract_load import extract, load_staged, run_prefix
from dagforge.stage.formats import binary_copy_type
from dagforge.stage.s3_store import S3Store
from dagforge.transfer import postgres_load
from tests.integration.conftest import Sandbox

pytestmark = pytest.mark.integration

PINNED = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1"

WIDE = r"""
CREATE SCHEMA src; CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy', 'it''s "fine", {really}');
CREATE DOMAIN app.price AS numeric(10,2);
CREATE DOMAIN app.code AS text CHECK (VALUE <> '');
CREATE DOMAIN app.int_list AS integer[];
CREATE TYPE app.address AS (street text, zip integer, note text);
CREATE TABLE src.wide (
    id integer PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00',
    i2 smallint, i4 integer, i8 bigint, num numeric, num_ps numeric(12,4), f4 real, f8 double precision,
    cash money, flag boolean,
    body text, vc varchar(10), ch char(6), ch1 "char", nm name, raw bytea,
    d date, ts timestamp, tstz timestamptz, ts3 timestamp(3), t time, ttz timetz, iv interval,
    u uuid, ip inet, net cidr, mac macaddr, mac8 macaddr8, bits bit(5), vbits varbit,
    j json, jb jsonb, x xml, a_xml xml[], tsv tsvector, tsq tsquery,
    pt point, ln line, ls lseg, bx box, pth path, pg polygon, ci circle,
    r4 int4range, rn numrange, rtz tstzrange, rd daterange, mr int4multirange, o oid, lsn pg_lsn,
    a_int int[], a_text text[], a_2d int[][], a_date date[], a_tstz timestamptz[], a_num numeric[],
    a_f4 real[], a_f8 double precision[], a_bytea bytea[], a_jsonb jsonb[], a_uuid uuid[], a_bool bool[],
    e app.mood, a_e app.mood[], dom_price app.price, dom_code app.code, dom_ints app.int_list,
    comp app.address, a_comp app.address[], a_price app.price[]
);
INSERT INTO src.wide (id, i2, i4, i8, num, num_ps, f4, f8, cash, flag, body, vc, ch, ch1, nm, raw,
    d, ts, tstz, ts3, t, ttz, iv, u, ip, net, mac, mac8, bits, vbits, j, jb, x, tsv, tsq,
    pt, ln, ls, bx, pth, pg, ci, r4, rn, rtz, rd, mr, o, lsn,
    a_int, a_text, a_2d, a_date, a_tstz, a_num, a_f4, a_f8, a_bytea, a_jsonb, a_uuid, a_bool,
    e, a_e, dom_price, dom_code, dom_ints, comp, a_comp, a_price) VALUES
(1, -32768, -2147483648, -9223372036854775808,
 '-123456789012345678901234567890.123456789012345678901234567890', '-99999999.9999',
 '-3.4028235e+38', '-1.7976931348623157e+308', '-92233720368547758.08', false,
 E'tab\there\nnew line "quoted" \\ backslash, comma; \u00fcn\u00efc\u00f8d\u00e9 \U0001F389 \r\n crlf \\N',
 'ação', 'ab', 'a', 'some name', '\x00ff00',
 '4713-01-01 BC', '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '2024-01-01 12:34:56.789',
 '00:00:00', '00:00:00+1559', '-1 year -2 mons +3 days -04:05:06.789012',
 '00000000-0000-0000-0000-000000000000', '192.168.0.1/32', '10.0.0.0/8', '08:00:2b:01:02:03',
 '08:00:2b:01:02:03:04:05', B'10101', B'', '{"a": 1, "a": 2,   "b" : [1,2 ]}',
 '{"n": 12345678901234567890.12345678901234567890, "s": "\u00fc", "e": 1e400}',
 '<?xml version="1.0"?><doc>a &amp; b</doc>', 'a fat cat:1A sat:2B', 'fat & (rat | !cat)',
 '(1.5,-2.25)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))',
 '<(0,0),1.5>', 'empty', '(,)', '[2024-01-01 00:00:00+00,infinity)', '[,2024-01-01)', '{}', 0, '0/0',
 '{}', ARRAY['a', NULL, 'b,c', 'd"e', 'NULL', '', E'f\\g', ' sp ', '{x}'], '{{1,2},{3,4}}',
 '{"0044-03-15 BC",2024-02-29,infinity,-infinity}',
 '{"0044-03-15 12:00:00+00 BC",infinity,-infinity,"2024-03-10 02:30:00.123456+05:30"}',
 '{NaN,1e-100,-1.5,Infinity,-Infinity}', '{NaN,Infinity,-Infinity,-0,1e-45}', '{NaN,5e-324,1e308,-0}',
 ARRAY['\x00'::bytea, '\x'::bytea, NULL, '\x5c22'::bytea],
 ARRAY['{"a": 1}'::jsonb, 'null'::jsonb, '12345678901234567890.123456789'::jsonb, NULL],
 '{00000000-0000-0000-0000-000000000001,NULL}', '{t,f,NULL}',
 'it''s "fine", {really}', '{sad,NULL,happy,"it''s \"fine\", {really}"}', 12345678.99, 'x', '{1,NULL,3}',
 ROW('Main "St", 1', NULL, E'back\\slash'),
 ARRAY[ROW('a', 1, NULL)::app.address, NULL, ROW('', NULL, ',')::app.address], '{1.50,NULL,-0.01}'),
(2, 32767, 2147483647, 9223372036854775807, '1e1000', 'NaN', '3.4028235e+38', '1.7976931348623157e+308',
 '92233720368547758.07', true, 'placeholder', 'a   ', 'abcdef', 'Z', repeat('n', 63), '\x',
 '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', 'infinity',
 '24:00:00', '24:00:00-1559', '178000000 years 11 mons 30 days 23:59:59.999999',
 'ffffffff-ffff-ffff-ffff-ffffffffffff', '2001:db8::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff',
 'ff:ff:ff:ff:ff:ff:ff:ff', B'11111', B'1010101010101', '  [ 1 , 2 ]  ', '[1e-400, -0, 0.0]',
 'just text, not a document <a/>', '', '!a', '(1e-300,1e300)', '{0,1,0}', '[(-1e308,0),(1e308,0)]',
 '(0,0),(0,0)', '((0,0))', '((0,0),(0,0),(0,0))', '<(1,2),0>', '[-2147483648,2147483647)', '(-1.5,1e50]',
 '[-infinity,"0044-03-15 12:00:00+00 BC")', '["4713-01-01 BC",infinity)', '{[1,3),[5,7)}', 4294967295,
 'FFFFFFFF/FFFFFFFF', '[0:2]={1,2,3}', '{}', '{{NULL,2},{3,NULL}}', '{}', '{}', '{}', '{}', '{}', '{}',
 '{}', '{}', '{}', 'sad', '{}', -0.01, E'with\ttab', '{}', ROW(NULL, NULL, NULL), '{}', '{}'),
(3, 0, 0, 0, 'NaN', '0.0001', 'NaN', 'NaN', 0, NULL, '', '', '', NULL, '', NULL,
 'infinity', '-infinity', 'infinity', '-infinity', '23:59:59.999999', '12:00:00.000001+00', '0 seconds',
 NULL, '::ffff:1.2.3.4', '0.0.0.0/0', NULL, NULL, B'00000', NULL, 'null', 'null', '', NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 '{NULL}', '{NULL}', '{{{1}}}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}',
 '{NULL}', 'ok', '{NULL}', 0, ' ', '{NULL}', ROW(NULL, 0, ''), '{NULL}', '{NULL}');
INSERT INTO src.wide (id, i2, i4, i8, num, num_ps, f4, f8, d, ts, tstz) VALUES
(4, 1, 1, 1, 'Infinity', '-0.0001', 'Infinity', '-Infinity', '-infinity', 'infinity', '-infinity'),
(5, -1, -1, -1, '-Infinity', NULL, '-0', '-0', '0001-01-01 BC', '0001-12-31 23:59:59.999999 BC',
 '0044-03-15 12:00:00.000001+05:30 BC'),
(6, NULL, NULL, NULL, '0.000000000000000000000000000000000000000000000000000000000000000001', NULL, '1e-45',
 '5e-324', '2000-02-29', '2000-02-29 23:59:59.999999', '2024-03-10 02:30:00.000001+05:30');
UPDATE src.wide SET a_xml = ARRAY[E'<?xml version="1.0"?>\n<a/>'::xml, NULL, 'text "q"'] WHERE id = 1;
INSERT INTO src.wide (id) VALUES (7);  -- every other column NULL
-- one row larger than a stage block: ~9 MiB of text full of CSV and JSON specials, 3 MiB of bytea
UPDATE src.wide SET body = repeat(E'x\ty\n"z",\\ \u00fc', 700000), raw = decode(repeat('00ff5c0a22', 600000), 'hex')
WHERE id = 2;
"""

CHANGES = r"""
UPDATE src.wide SET updated_at = '2024-02-01 00:00:00+00', e = 'happy', a_e = '{ok}', comp = ROW('moved', 2, NULL),
    tstz = '0100-01-01 00:00:00+00 BC', num = 'NaN', x = '<?xml version="1.0" encoding="UTF-8"?><n/>'
WHERE id = 1;
INSERT INTO src.wide (id, updated_at, e, dom_price, dom_ints, a_comp, d, f8, body)
VALUES (8, '2024-02-01 00:00:00+00', 'sad', 0.5, '{7}', ARRAY[ROW('"q"', 8, 'n')::app.address], '2000-01-01 BC',
        'NaN', repeat('big ', 1 << 18));
"""

EXPECTED_TYPES = {
    "e": "text", "a_e": "text[]", "dom_price": "numeric(10,2)", "dom_code": "text", "dom_ints": "integer[]",
    "comp": "text", "a_comp": "text[]", "a_price": "numeric(10,2)[]", "x": "xml", "a_xml": "xml[]",
    "ch": "character(6)",
}  # fmt: skip

SHAPES = ["direct", "direct-binary", "parquet", "csv", "jsonl"]
LOAD_ZONES = {"source": "Asia/Kathmandu", "target": "America/St_Johns"}
"""The load runs in sessions of these zones (the comparison in UTC): the values must not depend on them."""


def wide_load(mode: LoadMode, columns: tuple[str, ...] | None = None) -> TableLoad:
    cursor = {"cursor": "updated_at"} if mode is LoadMode.INCREMENTAL else {}
    return TableLoad("p", TableRef("src", "src", "wide"), TableRef("dst", "dst", "wide"), mode, ("id",),
                     columns=columns, **cursor)  # fmt: skip


def load_connections(box: Sandbox) -> tuple[psycopg.Connection, psycopg.Connection]:
    source, target = box.connect("source"), box.connect("target")
    for conn, which in ((source, "source"), (target, "target")):
        conn.execute(f"SET TimeZone = '{LOAD_ZONES[which]}'")
    return source, target


def run_once(box: Sandbox, load: TableLoad, shape: str, run_id: str, store: S3Store | None) -> None:
    source, target = load_connections(box)
    window = postgres_load.decide_window(PostgresSource(source), target, load)
    if shape.startswith("direct"):
        staged, _ = postgres_load.stage(PostgresSource(source), target, load, window, load.staging_table(run_id))
    else:
        prefix = run_prefix("raw", load, run_id)
        extract(PostgresSource(source), load, window, store, prefix, shape, run_id)
        staged = load_staged(target, load, store, prefix, load.staging_table(run_id))
    postgres_load.publish(target, load, staged, run_id)


def cell_texts(box: Sandbox, which: str, schema: str, columns: list[str]) -> dict[int, tuple]:
    conn = box.connect(which)
    conn.execute(PINNED)
    select = ", ".join(f"{ident(c)}::text" for c in columns)
    return {row[0]: row[1:] for row in conn.execute(f"SELECT id, {select} FROM {schema}.wide ORDER BY id")}


def assert_same_cells(box: Sandbox, label: str, columns: list[str]) -> None:
    source, target = cell_texts(box, "source", "src", columns), cell_texts(box, "target", "dst", columns)
    assert sorted(target) == sorted(source), f"{label}: row ids differ"
    wrong = [
        f"{label}: column {column}, row id={row_id}: source {sent[:120]!r}, destination {got[:120]!r}"
        for row_id, values in source.items()
        for column, sent, got in zip(columns, values, target[row_id], strict=True)
        if sent != got
    ]
    assert not wrong, f"{len(wrong)} cell(s) differ:\n" + "\n".join(wrong[:30])


def binary_exact_columns(box: Sandbox) -> tuple[str, ...]:
    described = describe_source(box.connect("source"), wide_load(LoadMode.FULL))
    return tuple(c.column.name for c in described if c.binary_exact)


@pytest.mark.parametrize("mode", [LoadMode.FULL, LoadMode.INCREMENTAL], ids=["full", "incremental"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_value_arrives_unchanged(sandbox: Sandbox, s3_server: S3Server, shape: str, mode: LoadMode) -> None:
    sandbox.connect("source").execute(WIDE)
    columns = binary_exact_columns(sandbox) if shape == "direct-binary" else None
    load = wide_load(mode, columns)
    store = None if shape.startswith("direct") else S3Store(s3_server.client(), f"b-{uuid.uuid4().hex[:10]}")
    label = f"{shape}/{mode.value}"
    names = [c.column.name for c in describe_source(sandbox.connect("source"), load) if c.column.name != "id"]

    run_once(sandbox, load, shape, "r1", store)
    assert_same_cells(sandbox, label + " run 1", names)
    sandbox.connect("source").execute(CHANGES)
    run_once(sandbox, load, shape, "r2", store)

    assert_same_cells(sandbox, label + " run 2", names)
    target = sandbox.connect("target")
    types = dict(target.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'dst.wide'::regclass AND attnum > 0 AND NOT attisdropped"
    ).fetchall())  # fmt: skip
    checked = [c for c in EXPECTED_TYPES if c in names]
    assert {c: types[c] for c in checked} == {c: EXPECTED_TYPES[c] for c in checked}
    user_types = "SELECT count(*) FROM pg_type WHERE typname IN ('mood', 'price', 'address')"
    assert target.execute(user_types).fetchone() == (0,), "the destination needs none of the source's types"


def test_a_parquet_load_of_integers_floats_booleans_and_text_copies_binary_and_exact(
    sandbox: Sandbox, s3_server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Parts whose every column is an Arrow integer, float or bool, or text for a text-like destination
    type (an enum, a domain and a composite travel as text too) are loaded by binary COPY: extremes,
    -0, NaN, infinities, NULLs, a 9 MiB value full of CSV specials, padded char(n), all unchanged."""
    sandbox.connect("source").execute(WIDE)
    described = describe_source(sandbox.connect("source"), wide_load(LoadMode.FULL))
    columns = tuple(c.column.name for c in described if binary_copy_type(c.column.type_sql))
    assert {"id", "i2", "i4", "i8", "f4", "f8", "flag", "body", "vc", "ch", "e", "comp", "dom_code"} <= set(columns)
    assert not {"num", "tstz", "raw", "jb", "a_int", "u"} & set(columns)
    load = wide_load(LoadMode.FULL, columns)
    store = S3Store(s3_server.client(), f"b-{uuid.uuid4().hex[:10]}")
    names = [c for c in columns if c != "id"]

    with caplog.at_level(logging.INFO, logger="dagforge.stage.extract_load"):
        run_once(sandbox, load, "parquet", "r1", store)
    assert "part(s) by binary COPY" in caplog.text
    assert_same_cells(sandbox, "parquet binary run 1", names)
    sandbox.connect("source").execute(CHANGES)
    run_once(sandbox, load, "parquet", "r2", store)
    assert_same_cells(sandbox, "parquet binary run 2", names)


def test_binary_copy_is_used_only_where_exact(sandbox: Sandbox) -> None:
    sandbox.connect("source").execute(WIDE)
    exact = set(binary_exact_columns(sandbox))
    assert {"i8", "num", "f8", "tstz", "d", "jb", "a_bytea", "rtz", "mr", "body"} <= exact
    assert not exact & {"x", "a_xml", "e", "a_e", "dom_price", "dom_code", "dom_ints", "comp", "a_comp", "a_price"}
    assert len(exact) == 71 - 10  # every other column of the table


def test_a_value_the_destination_refuses_fails_at_once(sandbox: Sandbox) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.base import fail_fast_on_terminal_errors

    sandbox.connect("source").execute(
        "CREATE SCHEMA src; CREATE TABLE src.wide (id int PRIMARY KEY, v text);"
        "INSERT INTO src.wide VALUES (1, 'toolong')"
    )
    target = sandbox.connect("target")
    target.execute("CREATE SCHEMA dst; CREATE TABLE dst.wide (id int PRIMARY KEY, v varchar(3))")  # made by hand
    load = dataclasses.replace(wide_load(LoadMode.FULL), on_schema_change=SchemaChange.IGNORE)  # keep varchar(3)

    refused = pytest.raises(AirflowFailException, match=r"'v' is character varying\(3\).*value toolong would not")
    with refused, fail_fast_on_terminal_errors():
        run_once(sandbox, load, "direct", "r1", None)
    assert target.execute("SELECT count(*) FROM dst.wide").fetchone() == (0,)
    missing = pytest.raises(AirflowFailException, match=r'InvalidSchemaName: schema "app" does not exist')
    with missing, fail_fast_on_terminal_errors():  # what staging with the source's type names did
        target.execute("CREATE TABLE dst.t (e app.mood)")


def test_rows_far_larger_than_a_stage_block(sandbox: Sandbox, s3_server: S3Server) -> None:
    sandbox.connect("source").execute(
        "CREATE SCHEMA src; CREATE TABLE src.wide (id int PRIMARY KEY, body text, raw bytea, j jsonb);"
        "INSERT INTO src.wide VALUES (1, repeat(E'a,\"b\"\\n\\\\c\\t', 20 << 17),"
        " decode(repeat('00ff0a22', 5 << 20), 'hex'), jsonb_build_object('k', repeat('j', 9 << 20))),"
        " (2, 'small', '\\x00', '{}'), (3, NULL, NULL, NULL)"
    )
    store = S3Store(s3_server.client(), f"b-{uuid.uuid4().hex[:10]}")
    for fmt in ("parquet", "csv", "jsonl"):
        load = TableLoad("p", TableRef("src", "src", "wide"), TableRef("dst", "dst", "wide"), LoadMode.FULL, ("id",))
        run_once(sandbox, load, fmt, f"r-{fmt}", store)
        assert_same_cells(sandbox, f"{fmt}/full", ["body", "raw", "j"])


def test_values_do_not_depend_on_the_source_sessions_output_styles(sandbox: Sandbox) -> None:
    """A source role or database may set other output styles; text COPY then carries them
    (04/03/2024 would be read back as April 3rd, '-1 2:03:04' as -1 day +2:03:04, floats cut to 15
    digits): every read of the source pins them (:data:`dagforge.sql.postgres.PIN_EXPORT_STYLES`)."""
    source = sandbox.connect("source")
    source.execute(
        "CREATE SCHEMA src; CREATE TABLE src.wide (id int PRIMARY KEY, d date, iv interval, f8 float8, x xml);"
        "INSERT INTO src.wide VALUES (1, '2024-03-04', '-1 days -02:03:04', 0.1 + 0.2, '<a/>')"
    )
    source.execute(f"ALTER DATABASE {ident(sandbox.database)} SET DateStyle = 'SQL, DMY'")
    source.execute(f"ALTER DATABASE {ident(sandbox.database)} SET IntervalStyle = 'sql_standard'")
    source.execute(f"ALTER DATABASE {ident(sandbox.database)} SET extra_float_digits = 0")
    run_once(sandbox, wide_load(LoadMode.FULL), "direct", "r1", None)  # text COPY: xml is not binary-exact
    assert_same_cells(sandbox, "direct/full, other source styles", ["d", "iv", "f8", "x"])
