"""spec → dag-factory config: task names, groups, arguments; golden files for `render`."""

import os
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.cli import render_entry
from dagforge.loadspec import TableLoad
from dagforge.plan.shapes import SHAPES

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REPO = Path(__file__).resolve().parents[2]
CASES = sorted(p.name for p in (GOLDEN / "render").iterdir() if p.is_dir())


def sales_example():
    return next(e for e in build_catalog([REPO / "pipelines"]) if e.dag_id == "sales_pg_to_pg")


def check_golden(rendered: str, expected: Path) -> None:
    if os.environ.get("DAGFORGE_UPDATE_GOLDEN"):
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(rendered)
    assert rendered == expected.read_text()


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden_file(case: str) -> None:
    """Inputs written for the test (tests/golden/render/<case>/pipelines)."""
    folder = GOLDEN / "render" / case
    (entry,) = build_catalog([folder / "pipelines"])
    assert entry.valid, entry.errors
    check_golden(render_entry(entry), folder / "expected.yml")


@pytest.mark.parametrize("dag_id", sorted(e.dag_id for e in build_catalog([REPO / "pipelines"])))
def test_example_render_matches_golden_file(dag_id: str) -> None:
    """The example pipelines, read from pipelines/ itself."""
    (entry,) = [e for e in build_catalog([REPO / "pipelines"]) if e.dag_id == dag_id]
    check_golden(render_entry(entry), GOLDEN / "render_examples" / f"{dag_id}.yml")


def test_render_is_deterministic_and_independent_of_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = [render_entry(e) for e in build_catalog([REPO / "pipelines"])]
    monkeypatch.chdir(tmp_path)
    assert [render_entry(e) for e in build_catalog([REPO / "pipelines"])] == first


def test_example_tasks_read_like_the_yaml() -> None:
    entry = sales_example()
    config = entry.config
    assert list(config["task_groups"]) == ["tb_trx_src", "customers"]
    assert list(config["tasks"]) == [
        "check_tb_trx_src",
        "stage_tb_trx_src",
        "publish_tb_trx_src",
        "check_customers",
        "stage_customers",
        "publish_customers",
    ]
    publish = config["tasks"]["publish_customers"]
    assert publish["dependencies"] == ["stage_customers"]
    assert publish["upstream_task_id"] == "customers.stage_customers"
    load = TableLoad.from_dict(publish["load"])
    assert (load.source.table, load.destination.schema, load.cursor, load.lookback) == (
        "customers",
        "reporting",
        "updated_at",
        "10m",
    )
    assert config["tags"][:3] == ["dagforge", "postgres_to_postgres", "destination:postgres"]


def test_load_roundtrip_and_staging_name_fits_postgres() -> None:
    entry = sales_example()
    payload = entry.config["tasks"]["check_customers"]["load"]
    load = TableLoad.from_dict(payload)
    assert load.to_dict() == payload
    long = TableLoad.from_dict({**payload, "destination": {**payload["destination"], "table": "x" * 63}})
    name = long.staging_table("manual__2024-01-01T00:00:00+00:00")
    assert len(name.encode()) <= 63
    assert name != long.staging_table("another run")


def test_every_shape_operator_is_importable_by_dotted_path() -> None:
    import importlib

    entry = sales_example()
    for task in entry.config["tasks"].values():
        module, _, name = task["operator"].rpartition(".")
        assert hasattr(importlib.import_module(module), name)
    assert SHAPES


def test_doc_links_the_yaml_file_when_a_source_url_is_set(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "defaults.yml").write_text("source_url: https://git.example.com/data/blob/main/\n")
    (folder / "a.yml").write_text(
        "pipeline: a\nsource: {kind: postgres, connection: s}\ndestination: {kind: postgres, connection: d}\n"
        "tables: [{name: t}]\n"
    )
    (entry,) = build_catalog([folder])
    assert (
        "Defined in [`pipelines/a.yml`](https://git.example.com/data/blob/main/pipelines/a.yml)"
        in (entry.config["doc_md"])
    )
