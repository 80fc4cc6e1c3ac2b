"""dags/pipelines.py as Airflow parses it: valid pipelines load, broken ones become stand-ins."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def parse_dags_folder(pipelines: Path, monkeypatch: pytest.MonkeyPatch, dag_id: str | None = None):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("DAGFORGE_PIPELINES_DIR", str(pipelines))
    if dag_id:
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    for name in ("defaults.yml", "sales_pg_to_pg.yml"):
        shutil.copy(REPO / "pipelines" / name, tmp_path / name)
    (tmp_path / "other.yml").write_text(
        "pipeline: other\nsource: {kind: postgres, connection: a}\ndestination: {kind: postgres, connection: b}\n"
        "tables: [{name: t}]\n"
    )
    (tmp_path / "broken.yml").write_text(
        "pipeline: broken_orders\nsource: {kind: postgres, connection: a}\n"
        "destination: {kind: postgres, connection: b}\ntables:\n  - name: orders\n    mode: incremental\n"
    )
    (tmp_path / "not yaml.yml").write_text("pipeline: [\n")
    return tmp_path


def test_broken_pipeline_becomes_standin_and_others_still_load(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bag = parse_dags_folder(mixed_folder, monkeypatch)

    assert bag.import_errors == {}
    assert set(bag.dags) == {"sales_pg_to_pg", "other", "broken_orders", "not_yaml"}
    assert "invalid" not in bag.dags["sales_pg_to_pg"].tags
    assert len(bag.dags["sales_pg_to_pg"].tasks) == 6
    standin = bag.dags["broken_orders"]
    assert "invalid" in standin.tags
    assert "broken.yml:6:11: tables[0].mode: mode 'incremental' needs 'cursor'" in standin.doc_md
    (task,) = standin.tasks
    assert task.task_id == "show_errors"
    assert any("needs 'primary_key'" in line for line in task.errors)
    syntax = bag.dags["not_yaml"]
    assert "invalid" in syntax.tags and "YAML syntax error" in syntax.doc_md


def test_parsing_for_one_task_builds_only_that_dag(mixed_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bag = parse_dags_folder(mixed_folder, monkeypatch, dag_id="other")
    assert set(bag.dags) == {"other"}


def test_build_failure_becomes_standin(mixed_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagforge import airflow_loader

    def explode(entry):
        raise RuntimeError(f"operator rejected {entry.dag_id}")

    monkeypatch.setattr(airflow_loader, "build_dag", explode)
    namespace: dict = {}
    added = airflow_loader.register_pipelines(namespace, mixed_folder)

    assert set(added) == {"sales_pg_to_pg", "other", "broken_orders", "not_yaml"}
    assert "invalid" in namespace["other"].tags
    assert "building the DAG failed: operator rejected other" in namespace["other"].doc_md


def test_missing_pipelines_folder_adds_nothing_and_does_not_raise(tmp_path: Path) -> None:
    from dagforge.airflow_loader import register_pipelines

    namespace: dict = {}
    assert register_pipelines(namespace, tmp_path / "nowhere") == []
    assert namespace == {}


def test_loading_dags_turns_dag_factory_telemetry_off() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY"}
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]);"
        "from dagfactory import settings; print('telemetry', settings.enable_telemetry)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "pipelines.py")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "telemetry False" in result.stdout


def test_the_trigger_form_offers_a_pick_list_of_tables_and_requires_neither_reload_field(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = parse_dags_folder(mixed_folder, monkeypatch, "sales_pg_to_pg").dags["sales_pg_to_pg"]
    params = dag.params.dump()
    assert params == {"full_refresh": False, "full_refresh_tables": []}
    tables = dag.params.get_param("full_refresh_tables").schema
    # Airflow's form renders a multi-select for an array with "examples", and marks a field
    # required unless its type admits null
    assert tables["examples"] == ["tb_trx_src", "customers"] and "null" in tables["type"]
    assert "null" in dag.params.get_param("full_refresh").schema["type"]
    dag.params.validate()  # the defaults are valid values


def test_the_doc_is_ours_alone(mixed_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagforge.catalog import build_catalog

    bag = parse_dags_folder(mixed_folder, monkeypatch)
    (entry,) = [e for e in build_catalog([mixed_folder]) if e.dag_id == "sales_pg_to_pg"]
    assert bag.dags["sales_pg_to_pg"].doc_md == entry.config["doc_md"]  # no "YML DAG" dump appended
    assert "YML DAG" not in bag.dags["sales_pg_to_pg"].doc_md


def test_the_loader_logs_what_it_read(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dagforge.airflow_loader import register_pipelines

    caplog.set_level("INFO", logger="dagforge.airflow_loader")
    register_pipelines({}, mixed_folder)
    register_pipelines({}, mixed_folder)
    first, second = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dagforge: ")][-2:]
    assert "4 DAGs from 4 files" in first
    assert "stand-ins: " in first and "broken.yml" in first and "not yaml.yml" in first
    assert "2 plans from the cache, 2 files compiled" in second  # the two valid ones; broken ones again


def test_shard_loader_files_split_the_pipelines_and_the_plain_loader_steps_aside(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "pipelines.py", dags / "pipelines.py")
    for index in range(3):
        shutil.copy(REPO / "dags" / "pipelines.py", dags / f"pipelines_shard_{index}_of_3.py")
    monkeypatch.setenv("DAGFORGE_PIPELINES_DIR", str(mixed_folder))
    bag = DagBag(dag_folder=str(dags))

    assert bag.import_errors == {}
    assert set(bag.dags) == {"sales_pg_to_pg", "other", "broken_orders", "not_yaml"}
    files = {dag_id: Path(dag.fileloc).name for dag_id, dag in bag.dags.items()}
    assert "pipelines.py" not in files.values() and len(set(files.values())) >= 2
    one = DagBag(dag_folder=str(dags / files["other"]))  # each DAG always in the same shard file
    assert set(one.dags) <= set(bag.dags) and "other" in one.dags
