"""Rows the source deletes: deletes none | hard | soft, by key set, by the staged table (full mode)
or by the source's own flag, with updates and inserts in the same run, through every Postgres shape."""

from __future__ import annotations

import psycopg
import pytest

from dagforge.spec.model import Deletes, LoadMode
from tests.integration.loads import Loads, make_load

pytestmark = pytest.mark.integration

TABLE = """
CREATE TABLE src.t (id int PRIMARY KEY, v text, gone boolean NOT NULL DEFAULT false, removed_at timestamptz,
                    updated_at timestamptz NOT NULL);
INSERT INTO src.t (id, v, updated_at)
SELECT i, 'v' || i, '2024-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 5) i;
"""
CHANGES = """
DELETE FROM src.t WHERE id = 2;
UPDATE src.t SET v = 'changed', updated_at = now() WHERE id = 3;
INSERT INTO src.t (id, v, updated_at) VALUES (6, 'new', now());
"""


def rows(conn: psycopg.Connection) -> dict[int, tuple]:
    """id → (v, deleted?) of the destination; deleted is None without a soft-delete column."""
    has_soft = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'dst.t'::regclass AND attname = '_dagforge_deleted_at'"
    ).fetchone()[0]
    deleted = "_dagforge_deleted_at IS NOT NULL" if has_soft else "NULL::boolean"
    return {r[0]: r[1:] for r in conn.execute(f"SELECT id, v, {deleted} FROM dst.t ORDER BY id")}


LIVE = {1: ("v1", False), 3: ("changed", False), 4: ("v4", False), 5: ("v5", False), 6: ("new", False)}
SOFT = {**LIVE, 2: ("v2", True)}


@pytest.mark.parametrize(
    ("mode", "deletes", "expected"),
    [
        (LoadMode.INCREMENTAL, None, {k: (v, None) for k, (v, _) in {**SOFT}.items()}),
        (LoadMode.INCREMENTAL, Deletes.HARD, LIVE),
        (LoadMode.INCREMENTAL, Deletes.SOFT, SOFT),
        (LoadMode.FULL, None, {k: (v, None) for k, (v, _) in LIVE.items()}),
        (LoadMode.FULL, Deletes.NONE, {k: (v, None) for k, (v, _) in SOFT.items()}),
        (LoadMode.FULL, Deletes.SOFT, SOFT),
    ],
    ids=["incremental-default-none", "incremental-hard", "incremental-soft", "full-default-hard", "full-none",
         "full-soft"],
)  # fmt: skip
def test_deletes_with_updates_and_inserts_in_the_same_run(
    loads: Loads, mode: LoadMode, deletes: Deletes | None, expected: dict
) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", mode, deletes=deletes, cursor="updated_at")
    loads.run(load)
    loads.box.connect("source").execute(CHANGES)

    outcome = loads.run(load)

    assert outcome and outcome.applied
    if deletes is not None and deletes is not Deletes.SOFT:
        expected = {k: (v, None) for k, (v, _) in expected.items()}
    assert rows(loads.box.connect("target")) == expected


def test_a_soft_deleted_row_that_comes_back_is_live_again(loads: Loads) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", deletes=Deletes.SOFT)
    loads.run(load)
    loads.box.connect("source").execute("DELETE FROM src.t WHERE id = 2")
    loads.run(load)
    target = loads.box.connect("target")
    first_mark = target.execute("SELECT _dagforge_deleted_at FROM dst.t WHERE id = 2").fetchone()[0]
    assert first_mark is not None
    loads.box.connect("source").execute("INSERT INTO src.t (id, v, updated_at) VALUES (7, 'x', now())")
    loads.run(load)
    assert target.execute("SELECT _dagforge_deleted_at FROM dst.t WHERE id = 2").fetchone()[0] == first_mark

    loads.box.connect("source").execute("INSERT INTO src.t (id, v, updated_at) VALUES (2, 'back', now())")
    loads.run(load)

    assert rows(target)[2] == ("back", False)


@pytest.mark.parametrize("flag", ["gone", "removed_at"])
@pytest.mark.parametrize("deletes", [Deletes.HARD, Deletes.SOFT])
def test_the_sources_own_delete_flag(loads: Loads, flag: str, deletes: Deletes) -> None:
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", deletes=deletes, deleted_flag=flag)
    loads.run(load)
    mark = "gone = true" if flag == "gone" else "removed_at = now()"
    loads.box.connect("source").execute(
        f"UPDATE src.t SET {mark}, updated_at = now() WHERE id = 2; "
        "UPDATE src.t SET v = 'changed', updated_at = now() WHERE id = 3"
    )

    loads.run(load)

    found = rows(loads.box.connect("target"))
    assert found[3][0] == "changed"
    if deletes is Deletes.HARD:
        assert 2 not in found
    else:
        assert found[2] == ("v2", True)
        unmark = "gone = false" if flag == "gone" else "removed_at = NULL"
        loads.box.connect("source").execute(f"UPDATE src.t SET {unmark}, updated_at = now() WHERE id = 2")
        loads.run(load)
        assert rows(loads.box.connect("target"))[2] == ("v2", False)


def test_a_late_older_key_set_deletes_nothing(loads: Loads) -> None:
    """Run A stages before row 6 exists; run B stages and publishes with it; A publishes late."""
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", deletes=Deletes.HARD)
    loads.run(load, "r0")
    loads.box.connect("source").execute("UPDATE src.t SET v = 'a', updated_at = now() WHERE id = 1")
    late = loads.stage(load, "late")
    loads.box.connect("source").execute("INSERT INTO src.t (id, v, updated_at) VALUES (6, 'new', now())")
    loads.run(load, "newer")

    assert late is not None
    loads.publish(load, late, "late")

    found = rows(loads.box.connect("target"))
    assert 6 in found, "the older run's key set did not know row 6; it must not delete it"
    assert sorted(found) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("deletes", "flag"),
    [(Deletes.HARD, None), (Deletes.SOFT, None), (Deletes.HARD, "gone")],
    ids=["hard", "soft", "flag"],
)
def test_a_late_older_publish_never_brings_a_deleted_row_back(loads: Loads, deletes: Deletes, flag: str | None) -> None:
    """Run A stages row 2; the source deletes it; run B stages and publishes the delete; A publishes
    late. A's version of row 2 is as new as the one B deleted: only refusing A keeps it deleted."""
    loads.box.connect("source").execute(TABLE)
    load = make_load("t", deletes=deletes, deleted_flag=flag)
    loads.run(load, "r0")
    loads.box.connect("source").execute("UPDATE src.t SET v = 'a', updated_at = now() WHERE id = 2")
    late = loads.stage(load, "late")
    delete = (
        "UPDATE src.t SET gone = true, updated_at = now() WHERE id = 2" if flag else "DELETE FROM src.t WHERE id = 2"
    )
    loads.box.connect("source").execute(delete)
    loads.run(load, "newer")

    assert late is not None
    outcome = loads.publish(load, late, "late")

    assert not outcome.applied and "newer snapshot" in outcome.reason
    found = rows(loads.box.connect("target"))
    if deletes is Deletes.SOFT:
        assert found[2] == ("v2", True), "kept as last published, marked deleted"
    else:
        assert 2 not in found
