"""After a BigQuery publish: reconcile the target with the source and run the table's ``checks:``.

Every figure comes from one query (:func:`dagforge.bigquery.sql.figures`), so they describe one
state of the target: whether this publish applied (the guard of rule 2, read again), whether its
snapshot is still the newest published, the live rows (without soft-deleted ones) and each
check's measure. Verdicts are :mod:`dagforge.reconcile`'s, the same for every destination.

Reconciliation compares row counts only: the source's checksums are sums of Postgres
``hashtextextended``, which BigQuery cannot compute (``destination_checksums=None``). It runs only
for the newest snapshot, and not on a retry that found its publish committed already (the
target may have moved on since that snapshot): the ``checks:`` run there again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagforge.bigquery import sql
from dagforge.bigquery.sql import Dataset
from dagforge.contracts import Staged
from dagforge.loadspec import TableLoad
from dagforge.reconcile import CheckResult, ChecksFailed, evaluate_checks, failure, log_lines, reconcile, record
from dagforge.spec.model import DELETED_AT


@dataclass(frozen=True)
class Verdict:
    applied: bool
    """False when a newer snapshot was published first (this publish changed nothing)."""
    results: tuple[CheckResult, ...] = ()
    failure: ChecksFailed | None = None
    record: str | None = None
    """The results as JSON for the state row (None: nothing to record)."""


def measures(checks: Sequence[Mapping[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    """The (kind, columns) figures the checks need, each once."""
    wanted: list[tuple[str, tuple[str, ...]]] = []
    for check in checks:
        for kind in ("not_null", "unique"):
            if kind in check and (kind, tuple(check[kind])) not in wanted:
                wanted.append((kind, tuple(check[kind])))
    return wanted


def figures_query(
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    state_table: str,
    target_columns: Collection[str],
    too_old: str | None = None,
):
    """The one query after a publish, and the measures it computes (in its ``m0``… order).

    ``too_old`` is the publish's own guard (rule 2), when the destination computed it."""
    state, target = ds.table_sql(state_table), ds.table_sql(load.destination.table)
    table = load.destination.table
    wanted = measures(load.checks)
    flags = [
        too_old or sql.newer_snapshot(state, load.pipeline, table, staged.load_mode, staged.snapshot_at),
        sql.this_snapshot_is_newest(state, load.pipeline, table, staged.snapshot_at),
    ]
    live = sql.live_rows() if DELETED_AT in target_columns else None
    return sql.figures(target, live=live, measures=wanted, flags=flags), wanted


def after_publish(
    client: Any,
    ds: Dataset,
    load: TableLoad,
    staged: Staged,
    run_id: str,
    state_table: str,
    target_columns: Collection[str],
    submitted: bool,
    progress: Callable[..., None],
    too_old: str | None = None,
) -> Verdict:
    """Reconciliation (when this publish applied, is the newest and ran in this attempt) and checks."""
    query, wanted = figures_query(ds, load, staged, state_table, target_columns, too_old)
    row = next(iter(client.query(query, location=ds.location).result()))
    name = ds.table_id(load.destination.table)
    if row["f0"]:
        progress("%s: not reconciled: a newer snapshot was published before this one", name)
        return Verdict(False)
    results: list[CheckResult] = []
    if not submitted:
        progress("%s: reconciliation skipped: an earlier attempt committed this publish and the table may have "
                 "moved on since its snapshot (%s); running the checks again", name, staged.snapshot_at)  # fmt: skip
    elif not row["f1"] or staged.snapshot_at is None:
        progress("%s: reconciliation and checks skipped: a newer snapshot was published meanwhile", name)
        return Verdict(True)
    else:
        results += reconcile(load, staged, int(row["live_rows"]))
    found = {m: int(row[f"m{i}"]) for i, m in enumerate(wanted)}
    results += evaluate_checks(load.checks, int(row["live_rows"]), lambda kind, cols: found[(kind, tuple(cols))])
    for line in log_lines(name, results):
        progress("%s", line)
    return Verdict(True, tuple(results), failure(name, results), record(results, run_id) if results else None)
