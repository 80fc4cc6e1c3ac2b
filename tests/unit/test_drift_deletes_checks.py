"""Schema drift, deletes and checks without services: the policies' decisions, the widening rules,
the reconciliation verdicts and the validation of the new keys (with lines and hints)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dagforge import drift, reconcile
from dagforge.catalog import build_catalog
from dagforge.contracts import Staged
from dagforge.loadspec import TableLoad, TableRef
from dagforge.spec.model import Deletes, LoadMode, SchemaChange

TARGET = {"id": "integer", "n": "integer", "s": "character varying(10)", "gone": "text"}
STAGED = {"id": "integer", "n": "bigint", "s": "text", "extra": "date"}


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("smallint", "integer", True),
        ("integer", "bigint", True),
        ("bigint", "integer", False),
        ("integer", "numeric", True),
        ("integer", "numeric(12,0)", True),
        ("integer", "numeric(9,0)", False),
        ("real", "double precision", True),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("character varying(10)", "text", True),
        ("text", "character varying(10)", False),
        ("numeric(10,2)", "numeric(12,4)", True),
        ("numeric(10,2)", "numeric(10,4)", False),
        ("numeric(10,2)", "numeric", True),
        ("numeric", "numeric(10,2)", False),
        ("timestamp(3) without time zone", "timestamp without time zone", True),
        ("timestamp without time zone", "timestamp with time zone", False),
        ("integer[]", "bigint[]", True),
        ("integer", "text", False),
    ],
)
def test_postgres_widening_keeps_every_value(old: str, new: str, widens: bool) -> None:
    assert drift.postgres_widens(old, new) is widens


def test_evolve_adds_widens_and_keeps_dropped_columns() -> None:
    resolution = drift.resolve("evolve", TARGET, STAGED, widens=drift.postgres_widens, table="dwh.t")
    assert [c.column for c in resolution.add] == ["extra"]
    assert [(c.column, c.old, c.new) for c in resolution.widen] == [
        ("n", "integer", "bigint"),
        ("s", "character varying(10)", "text"),
    ]
    assert resolution.null_fill == ("gone",)
    assert resolution.write == tuple(STAGED)
    assert any("a rename is a drop plus an add" in note for note in resolution.notes)
    assert '"column": "extra"' in (resolution.record() or "")


def test_evolve_refuses_what_does_not_widen_and_names_every_column() -> None:
    with pytest.raises(drift.SchemaChangeRefused) as refused:
        drift.resolve("evolve", {"id": "integer", "a": "bigint", "k": "text"}, {"id": "integer", "a": "date"},
                      widens=drift.postgres_widens, primary_key=["id", "k"], table="dwh.t")  # fmt: skip
    message = str(refused.value)
    assert "'a' changed type from bigint to date" in message
    assert "'k' (text) is gone from the source" in message
    assert "Nothing was written" in message


def test_fail_refuses_any_change_and_ignore_writes_the_shared_columns() -> None:
    with pytest.raises(drift.SchemaChangeRefused, match="'extra' \\(date\\) is new in the source"):
        drift.resolve(SchemaChange.FAIL, TARGET, STAGED, widens=drift.postgres_widens)
    ignored = drift.resolve(SchemaChange.IGNORE, TARGET, STAGED, widens=drift.postgres_widens)
    assert ignored.write == ("id", "n", "s") and not ignored.add and not ignored.widen


def test_no_change_writes_every_staged_column_and_records_nothing() -> None:
    same = drift.resolve("fail", STAGED, STAGED, widens=drift.postgres_widens)
    assert same.write == tuple(STAGED) and same.record() is None


def test_the_soft_delete_column_is_never_a_drop() -> None:
    assert drift.diff_columns({**STAGED, "_dagforge_deleted_at": "timestamp with time zone"}, STAGED) == []


def load(mode: LoadMode = LoadMode.INCREMENTAL, **extra) -> TableLoad:
    return TableLoad("p", TableRef("s", "src", "t"), TableRef("d", "dst", "t"), mode, ("id",), "u", **extra)


def test_default_deletes_follow_the_window() -> None:
    incremental = load()
    assert incremental.deletes_for("incremental") is Deletes.NONE
    assert incremental.deletes_for("full") is Deletes.HARD, "a forced full reload replaces the table"
    assert load(deleted_flag="gone").delete_mode is Deletes.SOFT
    assert load(deletes=Deletes.HARD).stages_keys("incremental")
    assert not load(deletes=Deletes.HARD, deleted_flag="gone").stages_keys("incremental")
    assert not load(deletes=Deletes.HARD).stages_keys("full")
    assert TableLoad.from_dict(load(deletes=Deletes.SOFT, checks=({"min_rows": 1},)).to_dict()) == load(
        deletes=Deletes.SOFT, checks=({"min_rows": 1},)
    )


def staged(**extra) -> Staged:
    return Staged("_stg", 10, ["id"], snapshot_at="2024-01-01T00:00:00Z", **extra)


def test_reconcile_verdicts() -> None:
    (rows,) = reconcile.reconcile(load(deletes=Deletes.HARD), staged(source_rows=12), 12)
    assert rows.ok
    (rows,) = reconcile.reconcile(load(), staged(source_rows=12), 13)
    assert rows.ok, "deletes: none may hold more"
    (rows,) = reconcile.reconcile(load(), staged(source_rows=12), 11)
    assert not rows.ok and "destination 11 live rows, source 12" in rows.detail
    full = staged(load_mode="full", checksums={"id": "1", "v": "2"})
    results = reconcile.reconcile(load(LoadMode.FULL), full, 10, {"id": "1", "v": "3"})
    assert [r.ok for r in results] == [True, False]
    assert "'v'" in results[1].detail
    error = reconcile.failure("t", results)
    assert error and "reconcile checksum" in str(error)


def test_checks_verdicts_and_warnings() -> None:
    figures = {("not_null", ("a",)): 0, ("unique", ("b",)): 3}
    results = reconcile.evaluate_checks(
        [{"min_rows": 5}, {"not_null": ["a"]}, {"unique": ["b"], "on_fail": "warn"}],
        4,
        lambda kind, columns: figures[(kind, columns)],
    )
    assert [(r.name, r.ok) for r in results] == [("min_rows 5", False), ("not_null a", True), ("unique b", False)]
    error = reconcile.failure("t", results)
    assert error and "1 check(s) failed" in str(error) and "min_rows 5: 4 live rows" in str(error)
    assert "unique b: failed (warn): 3 duplicate rows" in reconcile.log_lines("t", results)[2]


def errors_of(tmp_path: Path, tables: str, top: str = "") -> list[str]:
    text = textwrap.dedent(
        f"""\
        pipeline: p
        {top}
        source: {{kind: postgres, connection: a}}
        destination: {{kind: postgres, connection: b, schema: r}}
        tables:
        """
    ) + textwrap.indent(textwrap.dedent(tables), "  ")
    (tmp_path / "p.yml").write_text(text)
    return [str(e) for entry in build_catalog([tmp_path]) for e in entry.errors]


def test_policy_typos_get_a_hint_with_their_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "- {name: t, on_schema_change: ignor}\n", top="on_schema_change: evolv")
    assert any(":2:19: on_schema_change:" in e and "did you mean 'evolve'" in e for e in errors), errors
    assert any("tables[0].on_schema_change" in e and "did you mean 'ignore'" in e for e in errors), errors


def test_deletes_need_a_key_and_a_flag_needs_incremental(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
        - name: a
          deletes: soft
        - name: b
          deleted_flag: gone
          primary_key: [id]
        - name: c
          mode: incremental
          cursor: u
          primary_key: [id]
          deleted_flag: gone
          deletes: none
        """,
    )
    assert any(":7:14: tables[0].deletes:" in e and "matches rows by 'primary_key'" in e for e in errors), errors
    assert any("tables[1].deleted_flag: 'deleted_flag' applies to mode: incremental" in e for e in errors), errors
    assert any("tables[2].deleted_flag:" in e and "deletes: none keeps them" in e for e in errors), errors


def test_checks_are_one_kind_each_and_name_selected_columns(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
        - name: t
          columns: [id, email]
          checks:
            - {min_rows: 1, unique: [id]}
            - {not_null: [emial]}
            - {unique: [id], on_fail: warnn}
        """,
    )
    assert any("tables[0].checks[0]: a check needs exactly one of" in e for e in errors), errors
    assert any("checks[1].not_null[0]: 'emial' is not among" in e and "did you mean 'email'" in e for e in errors)
    assert any("checks[2].on_fail" in e and "did you mean 'warn'" in e for e in errors), errors


def test_sql_for_deletes_casts_and_delete_aware_state() -> None:
    from dagforge.sql import postgres as sql

    (upsert,) = sql.publish_upsert("d", "t", "stg", ["id", "m"], ["id"], "u", casts={"m": "mood"},
                                   deleted_at="NULL::timestamptz", null_fill=("gone",))  # fmt: skip
    assert 'SELECT s."id", CAST(s."m" AS mood), NULL::timestamptz FROM "d"."stg" s' in upsert
    assert '"gone" = NULL' in upsert and 'COALESCE(t."_dagforge_deleted_at"' in upsert
    assert "NOT EXISTS" in sql.delete_missing("d", "t", "_dagforge_key_x", ["id"])
    assert sql.flag_set("s", "gone", "boolean") == 's."gone" IS TRUE'
    assert sql.flag_set("s", "gone_at", "timestamp with time zone") == 's."gone_at" IS NOT NULL'
    plain = sql.write_state("d", "bigint", full=False)
    aware = sql.write_state("d", "bigint", full=False, knows_deletes=True)
    assert "full_snapshot_at = NULLIF(s.full_snapshot_at" in plain
    assert "GREATEST(COALESCE(s.full_snapshot_at" in aware, "an incremental publish with deletes counts as full"
