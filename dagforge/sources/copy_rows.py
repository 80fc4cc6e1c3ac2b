"""COPY CSV output as blocks of whole rows, each with its row count (:data:`dagforge.contracts.RowBlock`).

A stage file writer needs whole rows (Arrow parses a block as complete rows; a CSV part ends at a
row) and how many rows each part holds (the manifest lists them). Two producers give it that:

* :func:`message_blocks`: psycopg's own COPY reader hands Python one message per row; they are
  gathered into blocks of about 1 MB, counted one by one (a Python step per row).
* :func:`whole_row_blocks`: the COPY relay (:mod:`dagforge.sources.pg_relay`) hands over 1 MB
  blocks cut anywhere; each is cut again after its last row end. A newline ends a row unless it
  lies inside a quoted value, and in Postgres CSV a quote character is either a value's opening
  or closing quote or one of a doubled pair, so the number of quotes before a newline tells which
  (even: outside). Every count and search here is a ``bytes`` method: no Python step per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dagforge.contracts import RowBlock

BLOCK_BYTES = 1 << 20


def message_blocks(messages: Iterable[bytes], block_bytes: int = BLOCK_BYTES) -> Iterator[RowBlock]:
    """One COPY message per row, gathered into blocks of about ``block_bytes``."""
    block, rows = bytearray(), 0
    for message in messages:
        block += message
        rows += 1
        if len(block) >= block_bytes:
            yield bytes(block), rows
            block, rows = bytearray(), 0
    if rows:
        yield bytes(block), rows


def count_rows(block: bytes, quote: bytes = b'"') -> int:
    """Rows in ``block``, whole CSV rows that start outside a quoted value: its newlines less those
    inside quoted values (the odd pieces between quote characters)."""
    newlines = block.count(b"\n")
    if newlines and quote in block:
        newlines -= b"".join(block.split(quote)[1::2]).count(b"\n")
    if block and not block.endswith(b"\n"):
        newlines += 1  # a last row without its newline (COPY always ends rows with one)
    return newlines


def whole_row_blocks(chunks: Iterable[bytes], quote: bytes = b'"') -> Iterator[RowBlock]:
    """``chunks`` (COPY CSV output cut anywhere) as blocks of whole rows with their row counts.

    A row longer than the chunks waits for its end; the search then covers only the new bytes
    (a newline already passed inside a quoted value stays inside one), so a huge value costs one
    pass over its bytes, not one per chunk.
    """
    pending = bytearray()
    odd = False  # an odd number of quotes in pending: its end lies inside a quoted value
    for chunk in chunks:
        if not chunk:
            continue
        start = len(pending)
        pending += chunk
        odd_at_end = odd ^ bool(chunk.count(quote) & 1)
        cut = _last_row_end(pending, start, quote, odd_at_end)
        odd = odd_at_end
        if cut:
            block = bytes(pending[:cut])
            del pending[:cut]
            yield block, count_rows(block, quote)
    if pending:
        rest = bytes(pending)
        yield rest, count_rows(rest, quote)


def _last_row_end(pending: bytearray, start: int, quote: bytes, odd_at_end: bool) -> int:
    """The offset just after the last newline at or after ``start`` that lies outside quoted values
    (0: none), walking back newline by newline with the quote parity (``odd_at_end`` for the end)."""
    end = len(pending)
    newline = pending.rfind(b"\n", start)
    if newline < 0:
        return 0
    odd = odd_at_end ^ bool(pending.count(quote, newline, end) & 1)
    while odd:
        earlier = pending.rfind(b"\n", start, newline)
        if earlier < 0:
            return 0
        odd ^= bool(pending.count(quote, earlier, newline) & 1)
        newline = earlier
    return newline + 1
