"""dagforge.folder: a parse for one DAG or one shard gives exactly what the whole-folder parse gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.folder import UNKNOWN, Selection, quick_pipeline_id, read_folder, shard_of
from dagforge.plancache import PlanCache

REPO = Path(__file__).resolve().parents[2]
TABLE = "source: {kind: postgres, connection: a}\ndestination: {kind: postgres, connection: b}\ntables: [{name: t}]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pipeline: orders\n" + TABLE, "orders"),
        ("# a comment\npipeline: orders   # trailing comment\n" + TABLE, "orders"),
        ("pipeline: 'orders'\n" + TABLE, UNKNOWN),  # quoted: let YAML decide
        ("pipeline: 123\n" + TABLE, UNKNOWN),  # an int, not an id
        ("pipeline: true\n" + TABLE, UNKNOWN),
        ("pipeline: a\npipeline: b\n" + TABLE, UNKNOWN),  # a duplicate key is an error in full
        ("pipeline: a\n---\npipeline: b\n", UNKNOWN),  # two documents
        ('{"pipeline": "orders"}\n', UNKNOWN),
        ("  pipeline: nested\n", UNKNOWN),
        ("pipeline: 2024-01-01\n" + TABLE, "2024-01-01"),  # dates stay strings in our loader
        (None, UNKNOWN),
    ],
)
def test_quick_pipeline_id_is_sure_or_says_unknown(text: str | None, expected: object) -> None:
    assert quick_pipeline_id(text) == expected


@pytest.fixture
def tricky_folder(examples_folder: Path) -> Path:
    """Valid examples, broken files, a duplicate id, file names that collide with ids, a misleading line."""
    folder = examples_folder
    (folder / "a_first.yml").write_text("pipeline: twin\n" + TABLE)
    (folder / "b_second.yml").write_text("pipeline: twin\n" + TABLE)
    (folder / "twin.yml").write_text("pipeline: other_name\n" + TABLE)  # its stem is the twins' id
    (folder / "no_id.yml").write_text(TABLE)  # named after the file
    (folder / "not yaml.yml").write_text("pipeline: [\n")
    (folder / "numeric.yml").write_text("pipeline: 42\n" + TABLE)
    (folder / "bad_mode.yml").write_text(
        "pipeline: bad_mode\n" + TABLE.replace("[{name: t}]", "[{name: t, mode: incremental}]")
    )
    # the one pipeline: line at column 0 sits inside a quoted string; the real key is quoted
    (folder / "misleading.yml").write_text(
        '"pipeline": real_id\ndescription: "first line\npipeline: fake_id\n  end"\n' + TABLE
    )
    sub = folder / "team"
    sub.mkdir()
    (sub / "sales_pg_to_pg.yml").write_text("pipeline: team_sales\n" + TABLE)
    return folder


def _summary(entries) -> dict[str, tuple[str, bool, tuple[str, ...]]]:
    return {e.dag_id: (e.display, e.valid, tuple(str(x) for x in e.errors)) for e in entries}


def _whole(folder: Path) -> dict:
    return _summary(read_folder(folder, PlanCache(None)).entries)


def test_whole_folder_parse_matches_the_catalog(tricky_folder: Path) -> None:
    parsed = _whole(tricky_folder)
    catalog = {e.dag_id: (e.valid, len(e.errors)) for e in build_catalog([tricky_folder])}
    assert {k: (v[1], len(v[2])) for k, v in parsed.items()} == catalog
    assert parsed["twin"][1] is False and "is also used by pipelines/b_second.yml" in parsed["twin"][2][0]
    assert parsed["other_name"][1] and parsed["b_second"][1] is False
    assert parsed["sales_pg_to_pg"][1] and parsed["flights_to_dwh"][1]
    assert "real_id" in parsed and "fake_id" not in parsed


@pytest.mark.parametrize("cached", [False, True])
def test_each_dag_alone_is_what_the_whole_parse_gives(tricky_folder: Path, tmp_path: Path, cached: bool) -> None:
    whole = _whole(tricky_folder)
    cache = PlanCache(tmp_path / "cache") if cached else PlanCache(None)
    if cached:
        read_folder(tricky_folder, cache)  # warm it, as the dag-processor does
    for dag_id, expected in whole.items():
        alone = read_folder(tricky_folder, cache, Selection(dag_id=dag_id))
        assert _summary(alone.entries) == {dag_id: expected}, dag_id


def test_a_dag_alone_reads_ids_from_lines_and_compiles_one_file(tricky_folder: Path, tmp_path: Path) -> None:
    parsed = read_folder(tricky_folder, PlanCache(tmp_path / "cache"), Selection(dag_id="sales_pg_to_pg"))
    assert [e.dag_id for e in parsed.entries] == ["sales_pg_to_pg"]
    # unsure lines (quoted key, int, broken YAML, no id) were loaded in full; the rest were not
    assert parsed.compiled <= 6 and parsed.quick_ids >= parsed.files - 6


def test_an_unknown_dag_id_gives_nothing(tricky_folder: Path) -> None:
    assert read_folder(tricky_folder, PlanCache(None), Selection(dag_id="no_such_dag")).entries == []


def test_shards_split_the_folder_without_overlap(tricky_folder: Path) -> None:
    whole = _whole(tricky_folder)
    seen: dict = {}
    for index in range(3):
        part = _summary(read_folder(tricky_folder, PlanCache(None), Selection(shard=(index, 3))).entries)
        assert not set(part) & set(seen)
        seen.update(part)
    assert seen == whole
    assert shard_of("pipelines/orders.yml", 7) == shard_of("pipelines/orders.yml", 7)


def test_labels_do_not_depend_on_the_working_directory(tricky_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _whole(tricky_folder)
    monkeypatch.chdir(tricky_folder / "team")
    assert _whole(Path(os.path.relpath(tricky_folder))) == first
    assert first["bad_mode"][2][0].startswith("pipelines/bad_mode.yml:")


def test_discover_walks_in_path_order_and_skips_hidden_and_defaults(tmp_path: Path) -> None:
    from dagforge.spec.files import discover

    root = tmp_path / "pipelines"
    for relative in ("b.yml", "a.yaml", "a/z.yml", "a-b/c.yml", "a/b/c.yml", "defaults.yml", "x.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(TABLE)
    for hidden in (".git/h.yml", ".hidden.yml", "a/.tmp/h.yml"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_text(TABLE)
    (root / "linked.yml").symlink_to(root / "b.yml")
    (root / "dir.yml").mkdir()  # a folder named like a file is no pipeline

    found = [f.relative_to(root).as_posix() for f, _root in discover([root])]
    assert found == sorted(found, key=lambda p: Path(p).parts)
    assert found == ["a/b/c.yml", "a/z.yml", "a-b/c.yml", "a.yaml", "b.yml", "linked.yml"]


def test_a_parse_served_by_the_cache_imports_no_validator_compiler_or_airflow(
    tricky_folder: Path, tmp_path: Path
) -> None:
    """What keeps a task's start cheap: a warm one-DAG read loads none of the heavy modules."""
    import subprocess
    import sys

    read_folder(tricky_folder, PlanCache(tmp_path / "cache"))  # warm, as the dag-processor leaves it
    code = (
        "import sys; from pathlib import Path; from dagforge.folder import Selection, read_folder;"
        "from dagforge.plancache import PlanCache;"
        "r = read_folder(Path(sys.argv[1]), PlanCache(Path(sys.argv[2])), Selection(dag_id='flights_to_dwh'));"
        "assert [e.dag_id for e in r.entries] == ['flights_to_dwh'] and r.from_cache == 1, r;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'jsonschema', 'faker', 'pyarrow')"
        " or m in ('dagforge.plan', 'dagforge.spec.rules', 'dagforge.spec.schema') or m.startswith('dagforge.plan.'));"
        "assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tricky_folder), str(tmp_path / "cache")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
