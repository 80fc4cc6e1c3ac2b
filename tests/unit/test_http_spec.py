"""The HTTP file source in the spec: validation with lines, the plan it compiles to, the type map."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dagforge.bigquery.types import bigquery_type
from dagforge.catalog import build_catalog
from dagforge.cli import main
from dagforge.loadspec import table_loads
from dagforge.sources.file_types import FILE_TYPES, declared_type, markdown_table
from dagforge.sources.http_urls import render_url, template_problems
from dagforge.spec.model import LoadMode

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
pipeline: files
schedule: "@monthly"
source: {{kind: http, connection: tlc}}
stage: {{kind: gcs, connection: gcp, bucket: lake{stage_extra}}}
destination: {{kind: bigquery, connection: gcp, project: my-project, dataset: d}}
tables:
  - name: trips
    url: "{url}"
    mode: interval
    columns:
      id: {id_type}
      fare: numeric(10,2)
{extra}"""


def write(folder: Path, **values: str) -> Path:
    fields = {"url": "trips_{{ data_interval_start | month }}.csv.gz", "id_type": "integer", "stage_extra": "",
              "extra": "", **values}  # fmt: skip
    path = folder / "files.yml"
    path.write_text(textwrap.dedent(PIPELINE.format(**fields)))
    return path


def errors_of(folder: Path) -> list[str]:
    return [str(e) for entry in build_catalog([folder]) for e in entry.errors]


def test_a_valid_file_pipeline_compiles_to_a_file_table_load(tmp_path: Path) -> None:
    write(tmp_path)
    (entry,) = build_catalog([tmp_path])
    assert entry.errors == []
    (load,) = table_loads(entry.config)
    assert load.source_kind == "http" and load.mode is LoadMode.INTERVAL
    assert load.source_options == {
        "url": "trips_{{ data_interval_start | month }}.csv.gz", "format": "csv.gz",
        "columns": {"id": "integer", "fare": "numeric(10,2)"}, "csv": {}, "max_bad_rows": 0, "missing": "skip",
    }  # fmt: skip
    assert "http_gcs_bigquery" in entry.config["tags"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"url": "t_{{ data_interval_start | quarter }}.csv"}, "files.yml:8:10: tables[0].url: unknown filter"),
        ({"url": "t_{{ ds }}.csv"}, "files.yml:8:10: tables[0].url: unknown name 'ds' in the URL template"),
        ({"url": "t_{{ data_interval_start | month .csv"}, "tables[0].url: the URL template does not parse"),
        ({"url": "https://example.com/export"}, "tables[0].url: the URL's ending does not say the file's format"),
        ({"id_type": "currency"}, "files.yml:11:11: tables[0].columns.id: unknown column type"),
        ({"stage_extra": ", format: jsonl"}, "stage.format: an http source writes typed parquet parts, not 'jsonl'"),
        ({"extra": "    primary_key: [trip_id]\n"}, "tables[0].primary_key[0]: 'trip_id' is not among the table's"),
        ({"extra": "    cursor: id\n"}, "tables[0].cursor"),
        ({"extra": "    mode: incremental\n"}, "tables[0]"),
    ],
)
def test_file_tables_are_validated_with_their_line(tmp_path: Path, values: dict[str, str], expected: str) -> None:
    write(tmp_path, **values)
    errors = errors_of(tmp_path)
    assert any(expected in e for e in errors), errors


def test_mode_incremental_is_refused_for_a_file_table(tmp_path: Path) -> None:
    write(tmp_path, extra="")
    text = (tmp_path / "files.yml").read_text().replace("mode: interval", "mode: incremental")
    (tmp_path / "files.yml").write_text(text)
    errors = errors_of(tmp_path)
    assert any("tables[0].mode" in e and "interval" in e for e in errors), errors


def test_an_http_source_needs_a_stage(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("stage:")))
    assert any("source.kind: an http source stages its files in object storage" in e for e in errors_of(tmp_path))


def test_url_templates_render_the_documented_helpers() -> None:
    start, end = "2024-03-01T00:00:00+00:00", "2024-04-01T00:00:00+00:00"
    template = (
        "{{ data_interval_start | month }}/{{ data_interval_start | year }}/{{ data_interval_start | date }}/"
        "{{ data_interval_start | nodash }}/{{ data_interval_start | month_nodash }}/"
        "{{ data_interval_end | strftime('%Y_%m') }}"
    )
    assert template_problems(template) == []
    assert render_url(template, start, end) == "2024-03/2024/2024-03-01/20240301/202403/2024_04"
    assert render_url("plain.csv", None, None) == "plain.csv"


@pytest.mark.parametrize("row", FILE_TYPES, ids=lambda row: row.written)
def test_every_declared_type_maps_to_a_bigquery_type(row) -> None:
    examples = {"numeric(p,s), numeric(p)": "numeric(12,2)", "varchar(n)": "varchar(20)"}
    written = examples.get(row.written, row.written.split(",")[0].strip())
    kind = declared_type(written)
    assert bigquery_type(kind.type_sql).field_type  # the one map every source's types go through


def test_the_readme_shows_the_file_type_table() -> None:
    assert markdown_table() in (REPO / "README.md").read_text()


def test_columns_prints_a_block_to_paste(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_text("id,fare,at,note\n1,2.5,2024-01-01 10:00:00,x\n2,3.25,2024-01-02 11:00:00,y\n")
    assert main(["columns", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "columns:\n  id: bigint\n  fare: double precision\n  at: timestamp\n  note: text\n" in out
