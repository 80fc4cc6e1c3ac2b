"""`dagforge validate`: every error, with its file, line, column and key path."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.cli import main

VALID = """\
pipeline: {id}
source: {{kind: postgres, connection: src}}
destination: {{kind: postgres, connection: dst, schema: dwh}}
tables:
  - name: orders
    primary_key: [id]
    mode: incremental
    cursor: updated_at
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(folder: Path) -> list[str]:
    return [str(e) for entry in build_catalog([folder]) for e in entry.errors]


def test_valid_folder_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a"))
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""


def test_mixed_folder_reports_every_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "good.yml", VALID.format(id="good"))
    write(
        tmp_path,
        "bad.yml",
        """\
        pipeline: bad
        schedul: "@daily"
        source: {kind: postgres, connection: src}
        destination: {kind: postgres, connection: dst}
        tables:
          - name: orders
            mode: incremental
          - name: "drop table x;"
            mode: sometimes
        """,
    )
    write(tmp_path, "syntax.yml", "pipeline: [oops\n")
    code = main(["validate", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    bad = str(tmp_path / "bad.yml")
    assert f"{bad}:2:1: schedul: unknown key 'schedul'; did you mean 'schedule'?" in out
    assert any(line.startswith(f"{bad}:7:11: tables[0].mode: mode 'incremental' needs 'cursor'") for line in out)
    assert any(line.startswith(f"{bad}:7:11: tables[0].mode: mode 'incremental' needs 'primary_key'") for line in out)
    assert any(
        line.startswith(f'{bad}:8:11: tables[1].name: "drop table x;" is not valid: a plain SQL name') for line in out
    )
    assert f'{bad}:9:11: tables[1].mode: string "sometimes" is not one of full, incremental' in out
    assert any(line.startswith(f"{tmp_path / 'syntax.yml'}:2:1: <file>: YAML syntax error") for line in out)
    assert not any(str(tmp_path / "good.yml") in line for line in out)


def test_line_format_is_file_line_col_path_message(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a").replace("cursor: updated_at", "cursor: 12"))
    (error,) = errors_of(tmp_path)
    assert error == f"{tmp_path / 'a.yml'}:8:13: tables[0].cursor: expected string, got integer 12"


def test_boolean_surprise_gets_a_hint(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a") + "owner: no\n")
    (error,) = errors_of(tmp_path)
    assert "owner: expected string, got boolean false" in error and "quote the value" in error


def test_duplicate_pipeline_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, "one.yml", VALID.format(id="same"))
    write(tmp_path, "two.yml", VALID.format(id="same"))
    errors = errors_of(tmp_path)
    assert len(errors) == 2
    assert errors[0].endswith(f"pipeline: pipeline id 'same' is also used by {tmp_path / 'two.yml'}")
    assert ":1:11: " in errors[0]


def test_defaults_apply_and_their_errors_point_at_defaults_file(tmp_path: Path) -> None:
    write(tmp_path, "defaults.yml", "owner: team\nretries: -1\n")
    write(tmp_path, "a.yml", VALID.format(id="a"))
    (error,) = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'defaults.yml'}:2:10: retries: ")


def test_pipeline_overrides_defaults(tmp_path: Path) -> None:
    write(tmp_path, "defaults.yml", "owner: team\nschedule: '@daily'\n")
    write(tmp_path, "a.yml", VALID.format(id="a") + "schedule: '@hourly'\n")
    (entry,) = build_catalog([tmp_path])
    assert entry.config["schedule"] == "@hourly"
    assert entry.config["default_args"]["owner"] == "team"


def test_unknown_key_in_defaults_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "defaults.yml", "ownr: team\n")
    write(tmp_path, "a.yml", VALID.format(id="a"))
    (error,) = errors_of(tmp_path)
    assert error == f"{tmp_path / 'defaults.yml'}:1:1: ownr: unknown key 'ownr'; did you mean 'owner'?"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("schedule: '@sometimes'\n", "schedule: unknown preset '@sometimes'"),
        ("schedule: '61 * * * *'\n", "schedule: '61 * * * *' is neither a cron expression"),
        ("start_date: 2024-13-01\n", 'start_date: "2024-13-01" is not a valid date'),
        ("retry_delay: 5 minutes\n", 'retry_delay: "5 minutes" is not valid: a duration'),
    ],
)
def test_pipeline_level_rules(tmp_path: Path, extra: str, expected: str) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a") + extra)
    (error,) = errors_of(tmp_path)
    assert expected in error


def test_table_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yml",
        """\
        pipeline: a
        source: {kind: postgres, connection: src}
        destination: {kind: postgres, connection: dst}
        tables:
          - {name: orders, primary_key: [id], mode: full, lookback: 1h}
          - {name: orders, primary_key: [id], mode: incremental, cursor: ts, columns: [id]}
          - {name: other, target: orders}
        """,
    )
    errors = errors_of(tmp_path)
    assert any(":5:" in e and "'lookback' only applies to mode: incremental" in e for e in errors)
    assert any(":6:" in e and "tables[1].name: table name 'orders' appears twice" in e for e in errors)
    assert any(":6:" in e and "'columns' must include 'ts'" in e for e in errors)
    assert any(":7:" in e and "tables[2].target: destination table 'orders' appears twice" in e for e in errors)


BIGQUERY = "destination: {kind: bigquery, connection: gcp, project: my-project, dataset: raw}"


def test_a_destination_that_needs_a_stage_says_so(tmp_path: Path) -> None:
    text = VALID.format(id="a").replace("destination: {kind: postgres, connection: dst, schema: dwh}", BIGQUERY)
    write(tmp_path, "a.yml", text)  # BigQuery loads from a bucket
    (error,) = errors_of(tmp_path)
    assert ":3:21: destination.kind: postgres → bigquery goes through object storage: add a stage (kind: gcs)" in error


def test_not_supported_yet_combinations_list_what_is(tmp_path: Path) -> None:
    text = VALID.format(id="a").replace("destination: {kind: postgres, connection: dst, schema: dwh}", BIGQUERY)
    write(tmp_path, "a.yml", text + "stage: {kind: s3, connection: minio, bucket: lake}\n")
    (error,) = errors_of(tmp_path)
    assert ":2:16: source.kind: this combination of kinds is not supported yet" in error
    assert (
        "postgres → s3 → postgres, postgres → gcs → postgres, postgres → gcs → bigquery, "
        "http → s3 → postgres, http → gcs → postgres, http → gcs → bigquery, generate"
    ) in error


def test_csv_stage_cannot_feed_bigquery(tmp_path: Path) -> None:
    text = VALID.format(id="a").replace("destination: {kind: postgres, connection: dst, schema: dwh}", BIGQUERY)
    write(tmp_path, "a.yml", text + "stage: {kind: gcs, connection: gcp, bucket: lake, format: csv}\n")
    (error,) = errors_of(tmp_path)
    assert ":9:" in error and "stage.format: a bigquery destination loads parquet or jsonl files, not 'csv'" in error


def test_bigquery_project_ids_are_checked(tmp_path: Path) -> None:
    text = VALID.format(id="a").replace("destination: {kind: postgres, connection: dst, schema: dwh}", BIGQUERY)
    write(
        tmp_path,
        "a.yml",
        text.replace("my-project", "My_Project") + "stage: {kind: gcs, connection: gcp, bucket: lake}\n",
    )
    (error,) = errors_of(tmp_path)
    assert "destination.project: " in error and "a project id: 6-30 lowercase letters" in error


def test_unknown_source_kind_lists_choices(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a").replace("kind: postgres, connection: src", "kind: postgress"))
    (error,) = errors_of(tmp_path)
    assert "source.kind: string \"postgress\" is not one of postgres, generate, http; did you mean 'postgres'?" in error


def test_non_mapping_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", "- just\n- a list\n")
    (error,) = errors_of(tmp_path)
    assert "a pipeline file must be a mapping" in error


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yml")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--bogus"])
    assert exc.value.code == 2


def test_validate_never_imports_airflow(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", VALID.format(id="a"))
    write(tmp_path, "b.yml", "pipeline: !!python/name:os.system\n")
    code = (
        "import sys; from dagforge.cli import main; rc = main(['validate', sys.argv[1]]);"
        "assert not any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules), 'airflow imported';"
        "sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "b.yml:1:11: pipeline: tag 'tag:yaml.org,2002:python/name:os.system' is not allowed" in result.stdout


def test_example_pipelines_are_valid() -> None:
    entries = build_catalog([Path(__file__).resolve().parents[2] / "pipelines"])
    assert entries and all(entry.valid for entry in entries), [str(e) for x in entries for e in x.errors]


def test_defaults_file_named_explicitly_is_checked_as_defaults(tmp_path: Path) -> None:
    good = write(tmp_path, "defaults.yml", "owner: team\n")
    assert main(["validate", str(good)]) == 0
    (tmp_path / "sub").mkdir()
    bad = write(tmp_path / "sub", "defaults.yml", "tables: []\n")
    (error,) = [str(e) for entry in build_catalog([bad]) for e in entry.errors]
    assert error.startswith(f"{bad}:1:1: tables: unknown key 'tables'")
