"""COPY CSV output cut anywhere, back into blocks of whole rows with their counts (dagforge.sources.copy_rows)."""

from __future__ import annotations

import csv
import io
import random

import pytest

from dagforge.sources.copy_rows import count_rows, message_blocks, whole_row_blocks

NASTY = ["", "plain", 'a "quoted" word', "two\nlines", '"', '""', "\n", 'end with quote"', "comma, inside", "\r\n"]


def _postgres_csv(rows: list[list[str | None]]) -> bytes:
    """As Postgres's COPY … (FORMAT csv) prints rows: NULL unquoted empty, '' quoted, quotes doubled."""
    out = io.StringIO()
    for row in rows:
        fields = []
        for value in row:
            if value is None:
                fields.append("")
            elif value == "" or any(ch in value for ch in ',"\n\r'):
                fields.append('"' + value.replace('"', '""') + '"')
            else:
                fields.append(value)
        out.write(",".join(fields) + "\n")
    return out.getvalue().encode()


def _rows(seed: int, count: int) -> list[list[str | None]]:
    rng = random.Random(seed)
    return [[rng.choice([*NASTY, None, str(rng.random())]) for _ in range(3)] for _ in range(count)]


def _cut(data: bytes, seed: int, most: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, at = [], 0
    while at < len(data):
        step = rng.randint(1, most)
        pieces.append(data[at : at + step])
        at += step
    return pieces


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("most", [1, 7, 64, 5000])
def test_blocks_cut_anywhere_come_back_as_whole_rows_counted(seed: int, most: int) -> None:
    rows = _rows(seed, 300)
    data = _postgres_csv(rows)
    blocks = list(whole_row_blocks(_cut(data, seed, most)))

    assert b"".join(block for block, _ in blocks) == data
    assert sum(n for _, n in blocks) == len(rows)
    parsed = [list(csv.reader(io.StringIO(block.decode(), newline=""))) for block, _ in blocks]
    assert [len(p) for p in parsed] == [n for _, n in blocks]  # each block parses into exactly its rows
    assert [len(r) for p in parsed for r in p] == [3] * len(rows)


def test_a_value_longer_than_many_chunks_waits_for_its_end() -> None:
    big = "x\n" * 50_000 + '"'
    data = _postgres_csv([["a"], [big], ["b"]])
    blocks = list(whole_row_blocks(_cut(data, 1, 1000)))

    assert sum(n for _, n in blocks) == 3
    assert b"".join(block for block, _ in blocks) == data
    assert blocks[0] == (b"a\n", 1)  # cut before the long row began, not held back by it


def test_json_lines_count_by_their_own_quote_character() -> None:
    lines = b'{"a": "x \\" y"}\n{"b": "\\n"}\n' * 1000  # JSON's quotes are data to a \x01-quoted COPY
    blocks = list(whole_row_blocks(_cut(lines, 3, 333), quote=b"\x01"))

    assert sum(n for _, n in blocks) == 2000
    assert all(block.endswith(b"\n") for block, _ in blocks)


def test_message_blocks_count_one_row_per_message() -> None:
    messages = [b"1,a\n", b'2,"x\ny"\n', b"3,c\n"] * 500_000
    blocks = list(message_blocks(messages, block_bytes=1 << 16))

    assert sum(n for _, n in blocks) == 1_500_000
    assert all(len(block) < (1 << 16) + 10 for block, _ in blocks)


def test_count_rows_ignores_newlines_inside_quotes() -> None:
    assert count_rows(b'1,"a\nb"\n2,""\n3,"""\n"""\n') == 3
    assert count_rows(b"1,a\n2,b") == 2
    assert count_rows(b"") == 0
