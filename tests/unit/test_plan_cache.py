"""The plan cache never serves a plan made from other inputs, and a parse is right without it."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.folder import Selection, read_folder
from dagforge.plancache import CACHE_ENV, PlanCache

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(examples_folder: Path) -> Path:
    return examples_folder


def _configs(folder: Path, cache: PlanCache) -> dict:
    return {e.dag_id: e.config for e in read_folder(folder, cache).entries}


def test_second_parse_comes_from_the_cache_and_equals_a_fresh_compile(folder: Path, tmp_path: Path) -> None:
    cache = PlanCache(tmp_path / "cache")
    first = read_folder(folder, cache)
    assert (first.from_cache, first.compiled) == (0, 2)
    second = read_folder(folder, PlanCache(tmp_path / "cache"))
    assert (second.from_cache, second.compiled) == (2, 0)
    assert {e.dag_id: e.config for e in second.entries} == _configs(folder, PlanCache(None))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: (f / "sales_pg_to_pg.yml").write_text(
            (f / "sales_pg_to_pg.yml").read_text().replace("owner: ", "owner: x", 1)
            if "owner: " in (f / "sales_pg_to_pg.yml").read_text()
            else (f / "sales_pg_to_pg.yml").read_text() + "tags: [changed]\n"
        ),
        lambda f: (f / "defaults.yml").write_text((f / "defaults.yml").read_text() + "\nretries: 7\n"),
        lambda f: [p.write_text(p.read_text() + "\n-- changed\n") for p in sorted((f / "transforms").rglob("*.sql"))],
        lambda f: (f / "dbt" / "flights" / "models" / "marts" / "fct_new.sql").write_text(
            "select * from {{ ref('stg_flights') }}\n"
        ),
    ],
    ids=["pipeline file", "defaults.yml", "transform SQL", "a dbt model added"],
)
def test_any_changed_input_is_compiled_again(folder: Path, tmp_path: Path, change) -> None:
    cache_dir = tmp_path / "cache"
    read_folder(folder, PlanCache(cache_dir))
    change(folder)
    cached = _configs(folder, PlanCache(cache_dir))
    assert cached == _configs(folder, PlanCache(None))
    assert cached != _configs_before(folder)


def _configs_before(folder: Path) -> dict:
    """The two examples as the repository's own files compile (the label is the same: pipelines/…)."""
    wanted = set(_configs(folder, PlanCache(None)))
    return {e.dag_id: e.config for e in build_catalog([REPO / "pipelines"]) if e.dag_id in wanted}


def test_a_torn_or_foreign_entry_is_a_miss_and_is_rewritten(folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    read_folder(folder, PlanCache(cache_dir))
    entries = sorted(cache_dir.glob("*/*.json"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # torn
    other = json.loads(entries[1].read_text())
    other["key"] = "0" * 64  # an entry that does not belong to its name
    entries[1].write_text(json.dumps(other))
    again = read_folder(folder, PlanCache(cache_dir))
    assert (again.from_cache, again.compiled) == (0, 2)
    assert read_folder(folder, PlanCache(cache_dir)).from_cache == 2


def test_invalid_files_are_never_served_from_the_cache(folder: Path, tmp_path: Path) -> None:
    (folder / "broken.yml").write_text("pipeline: broken\nsource: {kind: postgres}\n")
    cache_dir = tmp_path / "cache"
    read_folder(folder, PlanCache(cache_dir))
    parsed = read_folder(folder, PlanCache(cache_dir))
    (broken,) = [e for e in parsed.entries if e.dag_id == "broken"]
    assert not broken.valid and any("connection" in str(e) or "destination" in str(e) for e in broken.errors)


def _read_only(paths: list[Path], on: bool) -> None:
    """Unwritable for real: permissions, or the immutable attribute for root (which ignores permissions)."""
    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True)
        else:
            path.chmod(0o500 if on else 0o700)


def test_a_read_only_cache_is_read_but_not_written(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache baked into an image, say: its plans are used, nothing is written, nothing fails."""
    cache_dir = tmp_path / "cache"
    read_folder(folder, PlanCache(cache_dir))
    sales = folder / "sales_pg_to_pg.yml"
    sales.write_text(sales.read_text() + "tags: [read-only]\n")
    unwritable = [cache_dir, *cache_dir.iterdir()]
    _read_only(unwritable, True)
    try:
        monkeypatch.setenv(CACHE_ENV, str(cache_dir))
        cache = PlanCache.from_env(None)
        parsed = read_folder(folder, cache)
        assert (parsed.from_cache, parsed.compiled, cache.writable) == (1, 1, False)
        assert {e.dag_id: e.config for e in parsed.entries} == _configs(folder, PlanCache(None))
        assert "read-only here" in caplog.text
    finally:
        _read_only(unwritable, False)


def test_cache_location_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    assert PlanCache.from_env(tmp_path / "default").folder is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert PlanCache.from_env(tmp_path / "default").folder == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    assert PlanCache.from_env(tmp_path / "default").folder == tmp_path / "default"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant a config that names code to import: no cache
    assert PlanCache.from_env(shared).folder is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert PlanCache.from_env(blocked / "cache").folder is None


def _parse_in_child(args: tuple[str, str]) -> dict:
    folder, cache_dir = args
    return {e.dag_id: e.config for e in read_folder(Path(folder), PlanCache(Path(cache_dir))).entries}


def test_processes_parsing_at_once_share_one_cache(folder: Path, tmp_path: Path) -> None:
    for i in range(12):  # more files, so the writers overlap
        text = (folder / "sales_pg_to_pg.yml").read_text().replace("pipeline: sales_pg_to_pg", f"pipeline: s{i}")
        (folder / f"s{i}.yml").write_text(text)
    expected = _configs(folder, PlanCache(None))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_parse_in_child, [(str(folder), str(tmp_path / "cache"))] * 8)
    assert all(result == expected for result in results)
    assert not list((tmp_path / "cache").glob("*/.tmp-*"))  # no temporary file left behind
    assert read_folder(folder, PlanCache(tmp_path / "cache")).from_cache == len(expected)


def test_one_dag_alone_uses_the_cache(folder: Path, tmp_path: Path) -> None:
    read_folder(folder, PlanCache(tmp_path / "cache"))
    alone = read_folder(folder, PlanCache(tmp_path / "cache"), Selection(dag_id="flights_to_dwh"))
    assert [e.dag_id for e in alone.entries] == ["flights_to_dwh"]
    assert (alone.from_cache, alone.compiled) == (1, 0)
