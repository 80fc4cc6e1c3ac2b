"""Validation of generate pipelines: one test per rule, each with its line."""

import textwrap
from pathlib import Path

import pytest

from dagforge.catalog import build_catalog

HEAD = """\
pipeline: gen
source: {kind: generate, seed: 1}
destination: {kind: postgres, connection: app}
tables:
"""
MEMBER = """\
  - name: member
    rows_per_run: 5
    columns:
      member_id: {sequence: true}
      name: {faker: name}
"""


def errors_for(tmp_path: Path, tables: str) -> list[str]:
    (tmp_path / "gen.yml").write_text(HEAD + textwrap.dedent(tables))
    return [
        f"{e.line}:{e.column}: {e.key_path}: {e.message}" for entry in build_catalog([tmp_path]) for e in entry.errors
    ]


def test_valid_generate_pipeline(tmp_path: Path) -> None:
    assert errors_for(tmp_path, MEMBER) == []


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("{faker: nam}", "10:16: tables[0].columns.x.faker: Faker has no provider 'nam'"),
        (
            "{faker: date_between, start: -3d}",
            "10:16: tables[0].columns.x.faker: Faker provider 'date_between' rejected",
        ),
        ("{faker: name, choice: [a]}", "10:8: tables[0].columns.x: give exactly one of faker, sequence"),
        ("{type: text}", "10:8: tables[0].columns.x: give exactly one of faker, sequence, choice, range, reference"),
        ("{choice: [a, b], weights: [1]}", "10:17: tables[0].columns.x.choice: weights has 1 values but choice has 2"),
        ("{range: {min: 5, max: 1}}", "10:16: tables[0].columns.x.range: range min 5 is greater than max 1"),
        ("{range: {min: -1y, max: 2024-02-30}}", "10:16: tables[0].columns.x.range: range: day is out of range"),
        ("{range: {min: 1, max: today}}", "10:16: tables[0].columns.x.range: range min and max must both be numbers"),
        ("{template: '{{ nme }}'}", "10:19: tables[0].columns.x.template: template uses nme: not a column"),
        ("{template: '{{ name'}", "10:19: tables[0].columns.x.template: template does not parse"),
        ("{choice: [a], colour: red}", "10:22: tables[0].columns.x.colour: unknown key 'colour'"),
        ("{faker: name, null_fraction: 2}", "10:37: tables[0].columns.x.null_fraction: 2 is greater than the maximum"),
        (
            "{faker: name, type: 'text; drop'}",
            '10:28: tables[0].columns.x.type: "text; drop" is not valid: a SQL type such as',
        ),
    ],
)
def test_column_rules(tmp_path: Path, column: str, expected: str) -> None:
    errors = errors_for(tmp_path, MEMBER + f"      x: {column}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_reference_rules(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        MEMBER
        + """\
  - name: rent
    rows_per_run: 5
    columns:
      rent_id: {sequence: true}
      a: {reference: nobody.id}
      b: {reference: member.nope}
      c: {reference: member.name}
""",
    )
    assert errors == [
        "14:20: tables[1].columns.a.reference: 'nobody' is not a table of this pipeline (member, rent)",
        "15:20: tables[1].columns.b.reference: 'nope' is not a column of member",
        "16:20: tables[1].columns.c.reference: member.name must be its table's primary key or a unique column",
    ]


def test_reference_cycle_is_rejected(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        """\
  - name: a
    rows_per_run: 1
    columns: {id: {sequence: true}, b_id: {reference: b.id}}
  - name: b
    rows_per_run: 1
    columns: {id: {sequence: true}, a_id: {reference: a.id}}
""",
    )
    assert errors == ["5:1: tables: tables reference each other in a cycle: a -> b"]


def test_template_cycle_is_rejected(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        """\
  - name: t
    rows_per_run: 1
    columns: {id: {sequence: true}, x: {template: '{{ y }}'}, y: {template: '{{ x }}'}}
""",
    )
    assert errors == ["7:12: tables[0].columns: table t: templates read each other in a cycle"]


def test_table_level_rules(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        """\
  - name: t
    rows_per_run: {min: 9, max: 2}
    unique: [emial]
    columns: {name: {faker: name}}
""",
    )
    assert errors == [
        "6:17: tables[0].rows_per_run: min 9 is greater than max 2",
        "7:12: tables[0].unique[0]: 'emial' is not a column of t",
        "8:12: tables[0].columns: needs a sequence column or an explicit primary_key",
    ]


def test_copy_keys_are_refused_on_generated_tables(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, MEMBER + "    mode: incremental\n")
    assert errors == [
        "10:3: tables[0].mode: unknown key 'mode'; allowed keys: columns, name, primary_key, rows_per_run, unique"
    ]


def test_templates_evaluate_in_a_sandbox() -> None:
    import datetime as dt
    import random

    from faker import Faker
    from jinja2.exceptions import SecurityError

    from dagforge.generate.columns import RowContext, TemplateGenerator

    ctx = RowContext(fake=Faker(), rng=random.Random(1), row={"day": dt.date(2024, 1, 1)})
    assert TemplateGenerator("x", {"template": "{{ day + days(2) }}"}).value(ctx) == dt.date(2024, 1, 3)
    assert TemplateGenerator("x", {"template": "d{{ day.year }}"}).value(ctx) == "d2024"
    with pytest.raises(SecurityError):
        TemplateGenerator("x", {"template": "{{ day.__class__ }}"}).value(ctx)
