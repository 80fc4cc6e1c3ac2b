"""Chunked loads without services: the key ranges, the chunks' stagings as one, the spec's rules."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.contracts import Chunk, Staged, Window, split_range
from dagforge.errors import TerminalError
from dagforge.sql import postgres as sql


def ranges(low, high, **how) -> list[tuple[int | None, int | None]]:
    return [(c.low, c.high) for c in split_range("id", low, high, **how)]


def test_ranges_cover_min_to_max_once_with_open_ends() -> None:
    assert ranges(1, 100, count=4) == [(None, 26), (26, 51), (51, 76), (76, None)]
    assert ranges(-10, 10, count=3) == [(None, -3), (-3, 4), (4, None)]
    assert ranges(0, 999, size=300) == [(None, 250), (250, 500), (500, 750), (750, None)]  # ceil(1000 / 300) = 4


def test_never_more_chunks_than_values_and_one_for_an_empty_table() -> None:
    assert ranges(1, 3, count=10) == [(None, 2), (2, 3), (3, None)]
    assert ranges(5, 5, count=4) == [(None, None)]
    assert ranges(None, None, count=4) == [(None, None)]
    assert len(split_range("id", 1, 10**9, size=1)) == 256  # MAX_CHUNKS


def test_the_last_chunk_of_a_not_null_column_takes_no_nulls() -> None:
    nullable, not_null = split_range("id", 1, 100, count=2), split_range("id", 1, 100, count=2, not_null=True)
    assert [c.takes_nulls for c in nullable] == [False, True] and not any(c.takes_nulls for c in not_null)
    assert [c.describe() for c in not_null] == ["id < 51", "id >= 51"]
    assert nullable[1].describe() == "id >= 51 or NULL"
    assert sql.chunk_where("id", 51, None) == '("id" >= 51 OR "id" IS NULL)'
    assert sql.chunk_where("id", 51, None, nulls=False) == '"id" >= 51'
    assert sql.chunk_where("id", 1, 51, nulls=False) == sql.chunk_where("id", 1, 51) == '"id" >= 1 AND "id" < 51'
    assert sql.chunk_where("id", None, None, nulls=False) == sql.chunk_where("id", None, None) == ""
    assert Chunk.of(Chunk("id", 1, 2, 51, None).window(Window("full", None, True, "x"))).not_null is False  # older


def test_a_chunk_describes_itself_and_narrows_a_window() -> None:
    window = Chunk("id", 3, 4, 76, None).window(Window("full", None, True, "full mode"))
    assert window.reason == "full mode; chunk 4 of 4 (id >= 76 or NULL)"
    assert Chunk.of(window) == Chunk("id", 3, 4, 76, None)
    assert Chunk.of(Window("full", None, True, "x")) is None


def part(index: int, count: int, rows: int, snapshot: str, checksums: dict[str, str], stage_id: str) -> Staged:
    window = Chunk("id", index, count, None, None).window(Window("full", None, True, "full"))
    return Staged("stg", rows, ["id", "v"], "full", None, snapshot, None, stage_id, window.to_dict(),
                  checksums=checksums)  # fmt: skip


def test_combine_sums_rows_and_checksums_takes_the_oldest_snapshot_and_a_stable_id() -> None:
    a = part(0, 2, 10, "2026-12-01T10:00:02+00:00", {"id": "5", "v": "-7"}, "aaaa")
    b = part(1, 2, 5, "2026-12-01T10:00:01+00:00", {"id": "100", "v": "9"}, "bbbb")

    combined = Staged.combine([b, a])

    assert (combined.rows, combined.snapshot_at) == (15, "2026-12-01T10:00:01+00:00")
    assert combined.checksums == {"id": "105", "v": "2"}
    assert (
        combined.stage_id
        == Staged.combine([a, b]).stage_id
        != Staged.combine([a, part(1, 2, 5, "t", {}, "c")]).stage_id
    )
    assert [Chunk.of(w).index for w in combined.chunk_windows()] == [0, 1]
    assert "chunk" not in combined.source_window.scope


def test_combine_sums_row_checksums_only_of_chunks_that_hashed_alike() -> None:
    """A sum of hashes of unlike kinds would compare as a false mismatch: no figure rather than a wrong one."""
    hashes = {"id": "int8"}
    a = dataclasses.replace(part(0, 2, 1, "t", {}, "a"), row_checksum="5", row_hashes=hashes)
    b = dataclasses.replace(part(1, 2, 1, "t", {}, "b"), row_checksum="-2", row_hashes=dict(hashes))

    assert (Staged.combine([a, b]).row_checksum, Staged.combine([a, b]).row_hashes) == ("3", hashes)
    assert Staged.combine([a, dataclasses.replace(b, row_hashes=None)]).row_checksum is None


def test_combine_refuses_a_missing_or_doubled_chunk() -> None:
    a, b = part(0, 3, 1, "t", {}, "a"), part(1, 3, 1, "t", {}, "b")
    with pytest.raises(TerminalError, match=r"chunks staged: \[0, 1\], planned by the check step: 3"):
        Staged.combine([a, b])
    with pytest.raises(TerminalError, match="chunks staged"):
        Staged.combine([a, a, b])


def errors_of(tmp_path: Path, table: str, stage: str = "") -> list[str]:
    text = (
        textwrap.dedent(
            """\
        pipeline: p
        source: {kind: postgres, connection: a}
        destination: {kind: postgres, connection: b, schema: r}
        """
        )
        + stage
        + "tables:\n"
        + textwrap.indent(textwrap.dedent(table), "  ")
    )
    (tmp_path / "p.yml").write_text(text)
    return [str(e) for entry in build_catalog([tmp_path]) for e in entry.errors]


def test_chunks_rules_name_the_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "- {name: t, primary_key: [a, b], mode: incremental, cursor: u, chunks: {count: 2}}\n")
    assert any(":5:42: tables[0].mode: chunks: needs mode: full" in e for e in errors), errors
    assert any("tables[0].chunks: chunks: name the integer column to split by" in e for e in errors), errors
    errors = errors_of(tmp_path, "- {name: t, primary_key: [a], chunks: {by: a, count: 2, size: 3}}\n")
    assert any("give either count (how many chunks) or size" in e for e in errors), errors
    errors = errors_of(tmp_path, "- {name: t, primary_key: [a], columns: [a], chunks: {by: b, count: 2}}\n")
    assert any("tables[0].chunks.by: 'columns' must include the chunks' column 'b'" in e for e in errors), errors
    stage = "stage: {kind: s3, connection: m, bucket: x}\n"
    errors = errors_of(tmp_path, "- {name: t, primary_key: [a], chunks: {count: 0}}\n", stage)
    assert any("only Postgres → Postgres loads without a stage" in e for e in errors), errors
    assert any("tables[0].chunks.count" in e for e in errors), errors
    assert errors_of(tmp_path, "- {name: t, primary_key: [a], chunks: {count: 4}}\n") == []
