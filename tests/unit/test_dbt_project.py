"""A dbt project read without dbt, its validation with the dbt file and line, and its tasks in the
plan (no services, no dbt installed needed)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog
from dagforge.dbt.project import DbtProjectError, load_project
from dagforge.review.graph import task_nodes

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "tests" / "golden" / "render" / "dbt_postgres" / "pipelines"


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def test_models_refs_sources_and_tests_are_read_with_their_lines() -> None:
    project = load_project(SHOP / "dbt" / "shop")

    assert project.name == "shop"
    assert project.order() == ["stg_customers", "stg_orders", "customer_totals"]
    totals = project.models["customer_totals"]
    assert [(c.names, c.line) for c in totals.refs] == [(("stg_customers",), 2), (("stg_orders",), 3)]
    assert [(c.names, c.line) for c in project.models["stg_orders"].sources] == [(("shop", "orders"), 3)]
    assert (totals.tests, project.models["stg_orders"].tests, project.models["stg_customers"].tests) == (3, 1, 0)
    assert project.sources[("finance", "rates")].external
    assert not project.sources[("shop", "orders")].external


def test_select_and_exclude_follow_dbts_graph_operators() -> None:
    project = load_project(SHOP / "dbt" / "shop")

    assert project.select(["+customer_totals"]) == ["stg_customers", "stg_orders", "customer_totals"]
    assert project.select(["stg_orders+"]) == ["stg_orders", "customer_totals"]
    assert project.select([], ["stg_customers+"]) == ["stg_orders"]
    with pytest.raises(KeyError):
        project.select(["nope"])


def test_commented_refs_do_not_count_and_a_ref_cycle_names_its_file(tmp_path: Path) -> None:
    write(tmp_path / "p", {
        "dbt_project.yml": "name: p\n",
        "models/a.sql": "-- select * from {{ ref('b') }}\n{# {{ ref('c') }} #}\nselect 1 from {{ ref(\"b\") }}\n",
        "models/b.sql": "select * from {{ ref('a') }}\n",
    })  # fmt: skip
    project = load_project(tmp_path / "p")
    assert [(c.names, c.line) for c in project.models["a"].refs] == [(("b",), 3)]
    with pytest.raises(DbtProjectError, match=r"p/models/a.sql: models ref each other in a cycle: a -> b -> a"):
        project.order()


def test_broken_projects_say_which_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DbtProjectError, match=r"missing/dbt_project.yml: missing: not a dbt project"):
        (tmp_path / "missing").mkdir() or load_project(tmp_path / "missing")
    write(tmp_path / "bad", {"dbt_project.yml": "name: bad\nmodels:\n  bad: [unclosed\n"})
    with pytest.raises(DbtProjectError, match=r"bad/dbt_project.yml:4: not valid YAML"):
        load_project(tmp_path / "bad")
    write(
        tmp_path / "twice", {"dbt_project.yml": "name: t\n", "models/x/m.sql": "select 1", "models/y/m.sql": "select 2"}
    )
    with pytest.raises(DbtProjectError, match=r"twice/models/y/m.sql: a second model named 'm'"):
        load_project(tmp_path / "twice")


def pipeline_errors(folder: Path, dbt: str) -> list[str]:
    (folder / "shop.yml").write_text(
        (SHOP / "shop.yml").read_text().split("transform:")[0] + "transform:\n  dbt:\n" + textwrap.indent(dbt, "    ")
    )
    return [str(e) for entry in build_catalog([folder]) for e in entry.errors]


def test_validation_names_the_pipeline_key_and_the_dbt_file_and_line(tmp_path: Path) -> None:
    shutil.copytree(SHOP / "dbt", tmp_path / "dbt")
    (tmp_path / "dbt" / "shop" / "models" / "staging" / "stg_orders.sql").write_text(
        "select *\nfrom {{ source('shop', 'orders') }}\njoin {{ source('shop', 'refunds') }} using (id)\n"
    )
    errors = pipeline_errors(tmp_path, "project: dbt/shop\nselect: [customer_totalz]\n")
    assert any("shop.yml:11:14: transform.dbt.select[0]: no model 'customer_totalz'" in e for e in errors), errors
    assert any("did you mean 'customer_totals'" in e for e in errors), errors

    errors = pipeline_errors(tmp_path, "project: dbt/shop\n")
    assert any(
        "transform.dbt.project: shop/models/staging/stg_orders.sql:3: source('shop', 'refunds') is not declared" in e
        for e in errors
    ), errors

    (tmp_path / "dbt" / "shop" / "models" / "staging" / "sources.yml").write_text(
        "sources:\n  - name: shop\n    tables: [{name: orders}, {name: refunds}, {name: customers}]\n"
    )
    errors = pipeline_errors(tmp_path, "project: dbt/shop\n")
    assert any(
        "stg_orders.sql:3: source('shop', 'refunds') is not a table this pipeline loads (customers, orders)" in e
        for e in errors
    ), errors
    assert any("mark it meta: {dagforge: external} in shop/models/staging/sources.yml" in e for e in errors), errors

    errors = pipeline_errors(tmp_path, "project: dbt/nowhere\n")
    assert any("transform.dbt.project: dbt project 'dbt/nowhere': nowhere: no such folder" in e for e in errors), errors


def test_the_plan_has_a_task_per_model_and_its_tests_after_the_loads() -> None:
    (entry,) = build_catalog([SHOP])
    assert entry.valid, entry.errors
    nodes = {n.task_id: n for n in task_nodes(entry.config)}

    assert {t for t in nodes if t.startswith("dbt.")} == {
        "dbt.stg_orders_run", "dbt.stg_orders_test", "dbt.stg_customers_run",
        "dbt.customer_totals_run", "dbt.customer_totals_test",
    }  # fmt: skip
    assert nodes["dbt.stg_orders_run"].upstream == ("orders.publish_orders",)
    assert set(nodes["dbt.customer_totals_run"].upstream) == {"dbt.stg_customers_run", "dbt.stg_orders_test"}
    task = entry.config["tasks"]["customer_totals_run"]
    assert task["trigger_rule"] == "none_failed_min_one_success"
    assert task["dbt_vars"] == {"dagforge_schema": "reporting"}
    assert task["profile"] == {"kind": "postgres", "connection": "sales_dwh", "schema": "shop_analytics"}


def test_yaml_inside_a_dbt_project_is_not_read_as_pipelines(tmp_path: Path) -> None:
    shutil.copytree(SHOP, tmp_path / "pipelines")
    assert [e.dag_id for e in build_catalog([tmp_path / "pipelines"])] == ["shop"]
