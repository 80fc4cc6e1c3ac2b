"""The publish every Postgres destination shares: staging → final table, state, checks, in one transaction.

Under the table's publish lock, in this order (docs/decisions/0008 for the ordering rules):

1. a staging whose ``stage_id`` is in the publish log was published already: nothing to do
   (the table's ``checks:`` run again, so a cleared task still reports a failing table);
2. the staging (and its key set) must be complete, else :class:`StagingLost` (stage again);
3. an older snapshot than one already published is not applied (recorded as skipped);
4. schema drift: the staged columns against the table's, by ``on_schema_change``
   (:mod:`dagforge.drift`); ``fail`` stops here, before anything is written;
5. rows: replace (full, ``deletes: hard``: the staging table swapped in where nothing depends on the
   table, :mod:`dagforge.transfer.postgres_swap`, else DELETE + INSERT) or upsert, then the deletes
   of ``deletes: hard|soft`` (by the staged key set, by the staged table in full mode, or by the
   source's ``deleted_flag``);
6. reconciliation and ``checks:`` (:mod:`dagforge.reconcile`), recorded with the watermark in
   ``_dagforge_state``; a failed ``fail`` check is raised after the COMMIT.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from dagforge import drift, reconcile
from dagforge.contracts import FILE_STATE_FIELDS, PublishOutcome, Staged, StagingLost, TableState
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.reconcile import CheckResult
from dagforge.spec.model import DELETED_AT, Deletes, LoadMode, SchemaChange
from dagforge.sql import postgres as sql
from dagforge.transfer import postgres_swap

log = logging.getLogger(__name__)


def prepare_destination(conn: psycopg.Connection, load: TableLoad) -> None:
    """Create the destination schema, the state table and the publish log when missing; upgrade older state."""
    schema = load.destination.schema
    with conn.transaction():
        for statement in sql.ensure_schema_and_state(schema):
            conn.execute(statement)
        missing = [row[0] for row in conn.execute(sql.missing_state_columns(), {"schema": schema})]
        for statement in sql.add_state_columns(schema, missing):
            conn.execute(statement)


def read_state(conn: psycopg.Connection, load: TableLoad, interval: str | None = None) -> TableState:
    """The table's state; with ``interval`` (a file source), also the file that interval loaded."""
    params = {"pipeline": load.pipeline, "table": load.destination.table}
    row = conn.execute(sql.read_state(load.destination.schema), params).fetchone()
    state = TableState(*row) if row else TableState()
    if interval is None:
        return state
    found = conn.execute(sql.read_file(load.destination.schema), {**params, "interval": interval}).fetchone()
    return dataclasses.replace(state, file=dict(zip(FILE_STATE_FIELDS, found, strict=True)) if found else None)


def publish(
    destination: psycopg.Connection,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    restage: Callable[[], Staged] | None = None,
) -> PublishOutcome:
    """Staging → final table and state, in one transaction; rebuilt first by ``restage`` when lost.

    Raises :class:`~dagforge.reconcile.ChecksFailed` after the COMMIT when a check with
    ``on_fail: fail`` failed (the publish stays).
    """
    sql.require_autocommit(destination)
    prepare_destination(destination, load)
    try:
        postgres_swap.freeze_chunks(destination, load, staged)
        outcome, results = _publish_once(destination, load, staged, run_id)
    except StagingLost as lost:
        if restage is None:
            raise TerminalError(f"{lost}; clear the stage task to stage again") from lost
        log.warning("%s: staging it again from the window the check step decided", lost)
        fresh = dataclasses.replace(restage(), stage_id=staged.stage_id)
        postgres_swap.freeze_chunks(destination, load, fresh)
        outcome, results = _publish_once(destination, load, fresh, run_id)
    for line in reconcile.log_lines(load.destination.table, results):
        (log.info if "FAILED" not in line else log.error)(line)
    failed = reconcile.failure(load.destination.table, results)
    if failed:
        raise failed
    return outcome


def _publish_once(
    destination: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str
) -> tuple[PublishOutcome, list[CheckResult]]:
    dest = load.destination
    keys = {"pipeline": load.pipeline, "table": dest.table, "stage_id": staged.stage_id or staged.staging_table}
    with destination.transaction():
        destination.execute(sql.publish_lock(), {"lock_key": f"{dest.schema}.{dest.table}"})
        done = destination.execute(sql.find_published(dest.schema), keys).fetchone()
        if done:
            _drop_staging(destination, dest.schema, staged)
            outcome, rows, by_run = done
            results = _checks(destination, load, staged) if _target_exists(destination, load) else []
            return PublishOutcome(rows, outcome == "applied", f"published already by run {by_run} ({outcome})"), results
        _check_staging(destination, dest.schema, staged)
        newer = _newer_published(destination, load, staged, keys)
        results: list[CheckResult] = []
        if isinstance(newer, str):
            result = PublishOutcome(0, False, f"not applied: {newer}")
        elif newer:
            result = PublishOutcome(
                0, False, f"not applied: a newer snapshot ({newer[0]:%Y-%m-%d %H:%M:%S.%f %Z}, run {newer[1]}) "
                f"is published already; this {staged.load_mode} one is from {staged.snapshot_at}",
            )  # fmt: skip
        else:
            result, results = _apply(destination, load, staged, run_id)
        outcome = "applied" if result.applied else "skipped: older snapshot"
        record = {**keys, "run_id": run_id, "outcome": outcome, "rows": result.rows, "snapshot_at": staged.snapshot_at}
        destination.execute(sql.record_published(dest.schema), record)
        destination.execute(sql.prune_published(dest.schema), keys)
        _drop_staging(destination, dest.schema, staged)
    drop_abandoned_staging(destination, dest.schema)
    return result, results


def _newer_published(
    conn: psycopg.Connection, load: TableLoad, staged: Staged, keys: dict[str, Any]
) -> tuple | str | None:
    """What makes this publish too old, if anything (rule 2 of docs/decisions/0008): a newer
    snapshot of the table, or (file sources) of the same interval; for ``append`` also the same
    file appended already (a message)."""
    schema, params = load.destination.schema, {**keys, "snapshot_at": staged.snapshot_at}
    if not staged.per_interval:
        return conn.execute(sql.newer_snapshot_published(schema, staged.load_mode), params).fetchone()
    params["interval"] = staged.interval
    newer = conn.execute(sql.newer_file_published(schema), params).fetchone()
    if newer or LoadMode(staged.load_mode) is LoadMode.INTERVAL:
        return newer
    loaded = conn.execute(sql.read_file(schema), params).fetchone()
    sha256 = (staged.source or {}).get("sha256")
    if loaded and sha256 and loaded[4] == sha256:
        return f"run {loaded[6]} appended this file ({sha256[:12]}…) for interval {staged.interval} already"
    return None


def _record_file(conn: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str) -> None:
    """Which file the interval loaded (file sources), in the publish transaction."""
    conn.execute(sql.write_file(load.destination.schema), staged.file_record(load.pipeline, load.destination.table,
                                                                             run_id))  # fmt: skip


def _drop_staging(conn: psycopg.Connection, schema: str, staged: Staged) -> None:
    conn.execute(sql.drop_staging(schema, staged.staging_table))
    if staged.key_table:
        conn.execute(sql.drop_staging(schema, staged.key_table))


def drop_abandoned_staging(conn: psycopg.Connection, schema: str) -> None:
    """Drop staging tables of runs that never published (older than a day); a publish that still
    needs one stages it again (StagingLost), so this is safe whatever is running."""
    for (name,) in conn.execute(sql.abandoned_staging(), {"schema": schema}).fetchall():
        log.info("dropping %s.%s: staging of a run that never published", schema, name)
        conn.execute(sql.drop_staging(schema, name))


def _columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, tuple[str, bool]]:
    rows = conn.execute(sql.table_columns(), {"schema": schema, "table": table}).fetchall()
    return {name: (type_sql, not_null) for name, type_sql, not_null in rows}


def _types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    return {name: type_sql for name, (type_sql, _) in _columns(conn, schema, table).items()}


def _target_exists(conn: psycopg.Connection, load: TableLoad) -> bool:
    params = {"schema": load.destination.schema, "table": load.destination.table}
    return conn.execute(sql.table_exists(), params).fetchone()[0]


def _prepare_target(
    conn: psycopg.Connection, load: TableLoad, staged: Staged, staged_types: dict[str, str]
) -> drift.Resolution:
    """Create the table when missing, else apply the schema-change policy; add the soft-delete column."""
    dest = load.destination
    if not _target_exists(conn, load):
        log.info("creating %s.%s from the source's column types", dest.schema, dest.table)
        for statement in sql.create_target_like(dest.schema, dest.table, staged.staging_table, load.primary_key):
            conn.execute(statement)
        resolution = drift.Resolution(write=tuple(staged.columns))
    else:
        target = _columns(conn, dest.schema, dest.table)
        resolution = drift.resolve(
            load.on_schema_change,
            {name: kind for name, (kind, _) in target.items()},
            {name: staged_types[name] for name in staged.columns},
            widens=drift.postgres_widens,
            primary_key=load.primary_key,
            table=f"{dest.schema}.{dest.table}",
        )
        for note in resolution.notes:
            log.warning(note)
        statements = [sql.add_column(dest.schema, dest.table, c.column, c.new or "") for c in resolution.add]
        statements += [sql.widen_column(dest.schema, dest.table, c.column, c.new or "") for c in resolution.widen]
        statements += [sql.drop_not_null(dest.schema, dest.table, c) for c in resolution.null_fill if target[c][1]]
        for statement in statements:
            conn.execute(statement)
        if load.on_schema_change is SchemaChange.IGNORE:
            _refuse_inexact(conn, load, staged, resolution)
    if load.deletes_for(staged.load_mode) is Deletes.SOFT:
        conn.execute(sql.add_column(dest.schema, dest.table, DELETED_AT, "timestamptz"))
    return resolution


def _refuse_inexact(conn: psycopg.Connection, load: TableLoad, staged: Staged, resolution: drift.Resolution) -> None:
    """Under ``ignore`` the destination's types stay: a staged value they would round is refused, not rounded."""
    dest = load.destination
    for change in resolution.changes:
        if change.change != "type" or drift.postgres_widens(change.new or "", change.old or ""):
            continue
        query = sql.inexact_value(dest.schema, staged.staging_table, change.column, change.old or "", change.new or "")
        try:
            found = conn.execute(query).fetchone()
        except psycopg.errors.DataError as exc:
            found = (f"({exc.diag.message_primary})",)
        if found:
            raise TerminalError(
                f"table {dest.schema}.{dest.table}: column {change.column!r} is {change.old} in the destination and "
                f"{change.new} in the source; the value {found[0]} would not arrive unchanged "
                "(on_schema_change: ignore keeps the destination's types; use evolve to widen it). Nothing was written."
            )


def _apply(
    destination: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str
) -> tuple[PublishOutcome, list[CheckResult]]:
    dest = load.destination
    full, deletes = staged.load_mode == LoadMode.FULL.value, load.deletes_for(staged.load_mode)
    staged_types = _types(destination, dest.schema, staged.staging_table)  # read once, for every step below
    existed = _target_exists(destination, load)
    resolution = _prepare_target(destination, load, staged, staged_types)
    if staged.interval is not None:
        _record_file(destination, load, staged, run_id)
    if staged.per_interval:
        return _apply_interval(destination, load, staged, run_id, resolution)
    params = {"snapshot_at": staged.snapshot_at}
    deleted = 0
    measured: list[CheckResult] = []

    def measure_staging(conn: psycopg.Connection) -> bool:  # the swap's rows, before readers have to wait (0013)
        measured[:] = _reconcile(conn, load, staged, resolution, staged_types, staged.staging_table)
        return True

    written, swapped = _write_rows(destination, load, staged, resolution, staged_types, existed, measure_staging)
    # deletes by key set: only the newest snapshot may decide what is gone (a late older one may not)
    newest = (
        full
        or not destination.execute(
            sql.newer_snapshot_published(dest.schema, LoadMode.FULL.value),
            {"pipeline": load.pipeline, "table": dest.table, "snapshot_at": staged.snapshot_at},
        ).fetchone()
    )
    for statement in _delete_statements(load, staged) if newest else []:
        deleted += destination.execute(statement, params).rowcount
    results = measured  # swapped: the table is the staging table, measured just before the swap
    if not swapped:
        results = _reconcile(destination, load, staged, resolution, staged_types) if newest else []
    watermark, cursor_type = staged.watermark, staged_types.get(load.cursor or "")
    if load.cursor and watermark is None:  # staged by an older version, which did not record it
        query = sql.staged_max_cursor(dest.schema, dest.table if swapped else staged.staging_table, load.cursor)
        watermark = destination.execute(query).fetchone()[0]
    state = {
        "pipeline": load.pipeline,
        "table": dest.table,
        "cursor": load.cursor,
        "watermark": watermark,
        "mode": load.mode.value,
        "rows": staged.rows,
        "run_id": run_id,
        "snapshot_at": staged.snapshot_at,
        "zone_digest": staged.zone_digest,
        "schema_changes": resolution.record(),
        "reconciliation": reconcile.record(results, run_id) if results else None,
        "key_digest": staged.key_digest if newest else None,
    }
    knows_deletes = newest and not full and deletes is not Deletes.NONE
    destination.execute(sql.write_state(dest.schema, cursor_type, full, knows_deletes), state)
    kind = "replaced the table with" if full and deletes is Deletes.HARD else "upserted"
    gone = {Deletes.HARD: f", deleted {deleted}", Deletes.SOFT: f", marked {deleted} deleted"}.get(deletes, "")
    how = "swapped in, " if swapped else ""
    return PublishOutcome(written, True, f"{kind} {staged.rows} staged rows ({how}{written} written{gone})"), results


def _write_rows(
    conn: psycopg.Connection,
    load: TableLoad,
    staged: Staged,
    resolution: drift.Resolution,
    staged_types: dict[str, str],
    existed: bool,
    measure_staging: Callable[[psycopg.Connection], bool],
) -> tuple[int, bool]:
    """The staged rows into the table: the staging table swapped in (a full replace of a table that
    takes it, docs/decisions/0013; ``measure_staging`` measures it before the exclusive lock) or the
    statements of :func:`_row_statements`. Rows written, swapped."""
    if existed and postgres_swap.swap_in(conn, load, staged, resolution, measure_staging):
        return staged.rows, True
    written = 0
    for statement in _row_statements(load, staged, resolution, staged_types):
        written = conn.execute(statement, {"snapshot_at": staged.snapshot_at}).rowcount
    return written, False


def _apply_interval(
    conn: psycopg.Connection, load: TableLoad, staged: Staged, run_id: str, resolution: drift.Resolution
) -> tuple[PublishOutcome, list[CheckResult]]:
    """``interval``: the rows this interval loaded before are replaced by the staged ones; ``append``:
    the staged rows are added. The table's state row records the run (no watermark)."""
    dest, deleted = load.destination, 0
    if LoadMode(staged.load_mode) is LoadMode.INTERVAL:
        deleted = conn.execute(sql.delete_interval(dest.schema, dest.table), {"interval": staged.interval}).rowcount
    insert = sql.insert_all(dest.schema, dest.table, staged.staging_table, list(resolution.write), _casts(resolution))
    written = conn.execute(insert).rowcount
    results = _checks(conn, load, staged)
    state = {
        "pipeline": load.pipeline, "table": dest.table, "cursor": None, "watermark": None, "mode": load.mode.value,
        "rows": staged.rows, "run_id": run_id, "snapshot_at": staged.snapshot_at, "zone_digest": None,
        "schema_changes": resolution.record(), "reconciliation": reconcile.record(results, run_id) if results else None,
        "key_digest": None,
    }  # fmt: skip
    conn.execute(sql.write_state(dest.schema, None, False), state)
    if LoadMode(staged.load_mode) is LoadMode.APPEND:
        return PublishOutcome(written, True, f"appended {written} rows for interval {staged.interval}"), results
    reason = f"replaced interval {staged.interval}: {deleted} rows it loaded before, {written} rows now"
    return PublishOutcome(written, True, reason), results


def _casts(resolution: drift.Resolution) -> dict[str, str]:
    """Under ``ignore`` the destination's types stay: values go in as them (checked exact by _refuse_inexact)."""
    widened = {c.column for c in resolution.widen}
    return {c.column: c.old or "" for c in resolution.changes
            if c.change == "type" and c.column in resolution.write and c.column not in widened}  # fmt: skip


def _row_statements(
    load: TableLoad, staged: Staged, resolution: drift.Resolution, staged_types: dict[str, str]
) -> list[str]:
    """Replace or upsert the staged rows; rows the source's own ``deleted_flag`` marks are deleted
    (hard) or written with their deletion time (soft)."""
    dest, write = load.destination, list(resolution.write)
    full, deletes = staged.load_mode == LoadMode.FULL.value, load.deletes_for(staged.load_mode)
    flagged = None
    if load.deleted_flag:
        if load.deleted_flag not in staged_types:
            raise TerminalError(
                f"deleted_flag {load.deleted_flag!r} is not a column of the staged rows ({', '.join(staged.columns)})"
            )
        flagged = sql.flag_set("s", load.deleted_flag, staged_types[load.deleted_flag])
    casts = _casts(resolution)
    if full and deletes is Deletes.HARD:
        where = f"NOT ({flagged})" if flagged else None
        return sql.publish_replace(dest.schema, dest.table, staged.staging_table, write, where, casts)
    upsert = {
        "casts": casts,
        "null_fill": resolution.null_fill,
        "cursor": None if full else load.cursor,  # a full snapshot is the newest: it writes every row as it is
        "deleted_at": "NULL::timestamptz" if deletes is Deletes.SOFT else None,
    }
    statements: list[str] = []
    if flagged and deletes is Deletes.HARD:
        statements.append(sql.delete_flagged(dest.schema, dest.table, staged.staging_table, load.primary_key,
                                             flagged, upsert["cursor"]))  # fmt: skip
        upsert["where"] = f"NOT ({flagged})"
    elif flagged and deletes is Deletes.SOFT:
        upsert["deleted_at"] = f"CASE WHEN {flagged} THEN CAST(%(snapshot_at)s AS timestamptz) END"
    statements += sql.publish_upsert(dest.schema, dest.table, staged.staging_table, write, load.primary_key, **upsert)
    return statements


def _delete_statements(load: TableLoad, staged: Staged) -> list[str]:
    """Rows the source no longer has: by the staged key set (incremental) or the staged table (full)."""
    dest = load.destination
    full, deletes = staged.load_mode == LoadMode.FULL.value, load.deletes_for(staged.load_mode)
    if deletes is Deletes.NONE or (full and deletes is Deletes.HARD) or (load.deleted_flag and not full):
        return []  # nothing to delete, the replace did it, or the source's flag did
    keys = staged.staging_table if full else staged.key_table
    if keys is None:
        raise TerminalError(
            f"table {dest.table}: deletes: {deletes.value} needs the source's keys, which this staging "
            "lacks (staged by an older version); clear the stage task"
        )
    build = sql.delete_missing if deletes is Deletes.HARD else sql.mark_missing
    return [build(dest.schema, dest.table, keys, load.primary_key)]


def _reconcile(
    conn: psycopg.Connection,
    load: TableLoad,
    staged: Staged,
    resolution: drift.Resolution,
    staged_types: dict[str, str],
    table: str | None = None,
) -> list[CheckResult]:
    """The destination's figures against the source's, inside the publish transaction (of ``table``:
    the staging table about to be swapped in; default the destination table)."""
    dest = load.destination
    table = table or dest.table
    relation, where = sql.qualified(dest.schema, table), _live(load, staged)
    for statement in sql.PIN_TEXT_FORMS:
        conn.execute(statement)
    if reconcile.compare_rows(load, staged):
        figures = _RowFigures(conn, load, staged, resolution, staged_types, table, where)
        live_rows, checksum = figures.measure()
        results = reconcile.reconcile(load, staged, live_rows, None, checksum, figures.explain)
        return results + _checks(conn, load, staged, live_rows, table)
    live_rows = conn.execute(sql.count_where(relation, where)).fetchone()[0]
    checksums = None
    if (
        staged.load_mode == LoadMode.FULL.value
        and staged.checksums
        and load.deletes_for(staged.load_mode) is not Deletes.NONE
    ):  # staged by a version before row checksums: per column
        cast = _cast_to_staged(conn, load, table, staged_types)
        compared = [c for c in resolution.write if c in staged.checksums]
        query = sql.column_checksums(relation, [(c, cast(c)) for c in compared],
                                     [(k, cast(k)) for k in load.primary_key], where)  # fmt: skip
        checksums = dict(zip(compared, conn.execute(query).fetchone(), strict=True)) if compared else {}
    results = reconcile.reconcile(load, staged, live_rows, checksums)
    return results + _checks(conn, load, staged, live_rows, table)


def _cast_to_staged(
    conn: psycopg.Connection, load: TableLoad, table: str, staged_types: dict[str, str]
) -> Callable[[str], str | None]:
    """A column of ``table`` whose type is not the staged one is read as the staged type (prints alike)."""
    target_types = _types(conn, load.destination.schema, table)  # after the drift DDL

    def cast(name: str) -> str | None:
        return staged_types[name] if target_types.get(name) != staged_types.get(name) else None

    return cast


@dataclasses.dataclass
class _RowFigures:
    """The live rows of ``table`` and a figure that equals the source's row checksum exactly when
    the table holds the staged rows' values: one scan when every staged column is written (or the
    table is the staging, swapped in); otherwise the source against the staging (every column) and
    the staging against the table (the columns written). :meth:`explain` says where they differ."""

    conn: psycopg.Connection
    load: TableLoad
    staged: Staged
    resolution: drift.Resolution
    staged_types: dict[str, str]
    table: str
    where: str

    def measure(self) -> tuple[int, str]:
        dest, staged = self.load.destination, self.staged
        relation, cast = sql.qualified(dest.schema, self.table), self._cast()
        written = self._written()
        hashed = staged.row_hashes
        query = sql.row_checksum(relation, [(c, cast(c)) for c in written], self.where, hashed)
        rows, checksum = self.conn.execute(query).fetchone()
        if len(written) == len(staged.columns):
            return rows, checksum
        staging = sql.qualified(dest.schema, staged.staging_table)

        def staging_checksum(columns: list[str]) -> str:
            return self.conn.execute(sql.row_checksum(staging, [(c, None) for c in columns], "", hashed)).fetchone()[1]

        if staging_checksum(written) != checksum:
            return rows, "(the publish changed values)"  # never a sum: differs from the source's
        return rows, staging_checksum(staged.columns)

    def explain(self) -> str:
        """Which column(s) the publish changed (per-column sums over the staging and the table), or
        that the staged rows already differ from the source's."""
        before = "the staged rows differ from the source's: the values changed between the source and the staging table"
        dest, staged = self.load.destination, self.staged
        if self.table == staged.staging_table:
            return before
        cast, written = self._cast(), self._written()
        key = [k for k in self.load.primary_key if k in written]
        sums = []
        for table, to, where in ((staged.staging_table, lambda _: None, ""), (self.table, cast, self.where)):
            relation = sql.qualified(dest.schema, table)
            query = sql.column_checksums(relation, [(c, to(c)) for c in written], [(k, to(k)) for k in key], where)
            sums.append(self.conn.execute(query).fetchone())
        differ = [c for c, a, b in zip(written, *sums, strict=True) if a != b]
        if not differ:
            return before
        named = ", ".join(repr(c) for c in differ)
        return f"the publish changed column(s) {named} (a trigger, a default, a cast?)"

    def _written(self) -> list[str]:
        """The staged columns the table holds, in staged order (all of them: the staging swapped in)."""
        swapped = self.table == self.staged.staging_table
        return [c for c in self.staged.columns if swapped or c in self.resolution.write]

    def _cast(self) -> Callable[[str], str | None]:
        return _cast_to_staged(self.conn, self.load, self.table, self.staged_types)


def _checks(
    conn: psycopg.Connection, load: TableLoad, staged: Staged, live_rows: int | None = None, table: str | None = None
) -> list[CheckResult]:
    """The table's ``checks:`` on its live rows (of ``table``, default the destination table)."""
    if not load.checks:
        return []
    relation = sql.qualified(load.destination.schema, table or load.destination.table)
    where = _live(load, staged)
    if live_rows is None:
        live_rows = conn.execute(sql.count_where(relation, where)).fetchone()[0]

    def measure(kind: str, columns: tuple[str, ...]) -> int:
        query = (sql.null_rows if kind == "not_null" else sql.duplicate_rows)(relation, columns, where)
        return int(conn.execute(query).fetchone()[0])

    return reconcile.evaluate_checks(load.checks, live_rows, measure)


def _live(load: TableLoad, staged: Staged) -> str:
    """The condition of a live row (not soft-deleted), or empty when the table soft-deletes nothing."""
    return sql.live() if load.deletes_for(staged.load_mode) is Deletes.SOFT else ""


def _check_staging(conn: psycopg.Connection, schema: str, staged: Staged) -> None:
    for table, rows, what in ((staged.staging_table, staged.rows, "rows"), (staged.key_table, staged.key_rows, "keys")):
        if table is None:
            continue
        if not conn.execute(sql.table_exists(), {"schema": schema, "table": table}).fetchone()[0]:
            raise StagingLost(f"staging table {schema}.{table} is gone")
        found = conn.execute(sql.count_rows(schema, table)).fetchone()[0]
        if found != rows:
            raise StagingLost(f"staging table {schema}.{table} holds {found} {what}, the stage step wrote {rows}")
