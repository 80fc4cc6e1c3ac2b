"""`dagforge graph` (golden files) and `dagforge diff` on a real temporary git repository."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.cli import main
from dagforge.review.graph import FORMATS

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "graph"
EXAMPLES = sorted(p.stem for p in (REPO / "pipelines").glob("*.yml") if p.name != "defaults.yml")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("example", EXAMPLES)
def test_graph_matches_golden_file(example: str, fmt: str) -> None:
    (entry,) = [e for e in build_catalog([REPO / "pipelines"]) if e.file.stem == example]
    rendered = FORMATS[fmt](entry.dag_id, entry.config)
    expected = GOLDEN / f"{example}.{'mmd' if fmt == 'mermaid' else 'dot'}"
    if os.environ.get("DAGFORGE_UPDATE_GOLDEN"):
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(rendered)
    assert rendered == expected.read_text()


def test_graph_cli_defaults_to_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(REPO / "pipelines" / "sales_pg_to_pg.yml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR")
    assert "customers_check_customers --> customers_stage_customers" in out


ORDERS_V1 = """\
pipeline: orders
schedule: "@daily"
source: {kind: postgres, connection: shop}
destination: {kind: postgres, connection: dwh}
tables:
  - name: orders
    primary_key: [id]
    mode: full
"""
ORDERS_V2 = """\
pipeline: orders
schedule: "@hourly"
source: {kind: postgres, connection: shop}
destination: {kind: postgres, connection: dwh}
tables:
  - name: orders
    primary_key: [id]
    mode: incremental
    cursor: updated_at
  - name: invoices
    primary_key: [invoice_id]
    mode: full
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def two_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    (repo / "pipelines").mkdir(parents=True)
    (repo / "schemas").mkdir()
    shutil.copy(REPO / "schemas" / "pipeline.schema.json", repo / "schemas")
    (repo / "pipelines" / "defaults.yml").write_text("owner: data-eng\n")
    (repo / "pipelines" / "orders.yml").write_text(ORDERS_V1)
    (repo / "pipelines" / "stable.yml").write_text(ORDERS_V1.replace("orders", "stable"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", ".")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "v1")
    (repo / "pipelines" / "orders.yml").write_text(ORDERS_V2)
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qam", "v2")
    monkeypatch.chdir(repo)
    return repo


def test_diff_summarises_table_added_mode_and_schedule_changes(
    two_commits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "HEAD~1", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "pipelines/orders.yml:" in out
    assert "  - schedule @daily → @hourly" in out
    assert "  - table `invoices` added (full, key [invoice_id])" in out
    assert "  - table `orders`: mode full → incremental, cursor — → updated_at" in out
    assert "  - task `invoices.check_invoices` added" in out
    assert "--- a/pipelines/orders.yml\n+++ b/pipelines/orders.yml" in out
    assert "-  schedule: '@daily'\n+  schedule: '@hourly'" in out
    assert "stable.yml" not in out


def test_diff_markdown_is_ready_for_a_pr_comment(two_commits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "HEAD~1", "HEAD", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### dagforge: 1 pipeline file(s) changed")
    assert "#### `pipelines/orders.yml`\n- schedule @daily → @hourly" in out
    assert "```diff\n--- a/pipelines/orders.yml" in out


def test_changed_defaults_show_every_affected_pipeline(two_commits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (two_commits / "pipelines" / "defaults.yml").write_text("owner: platform\n")
    assert main(["diff", "HEAD"]) == 0  # against the working tree
    out = capsys.readouterr().out
    assert "pipelines/orders.yml:\n  - owner data-eng → platform" in out
    assert "pipelines/stable.yml:\n  - owner data-eng → platform" in out


def test_changed_schema_shows_pipelines_it_breaks(two_commits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = two_commits / "schemas" / "pipeline.schema.json"
    data = json.loads(schema.read_text())
    data["$defs"]["table"]["properties"]["mode"]["enum"] = ["full"]
    schema.write_text(json.dumps(data))
    assert main(["diff", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "pipelines/orders.yml:\n  - now INVALID: tables[0].mode:" in out
    assert "stable.yml" not in out


def test_diff_outside_git_is_a_usage_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["diff"]) == 2
    assert "git rev-parse" in capsys.readouterr().err


def test_no_changes(two_commits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "HEAD"]) == 0
    assert capsys.readouterr().out.startswith("no pipeline changes between HEAD")
