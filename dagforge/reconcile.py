"""After a publish: does the destination hold what the source held, and do the table's ``checks`` pass?

Every destination computes its figures inside its publish (under the publish lock, so no other
publish of the table moves them) and hands them here; the verdicts are the same for all kinds:

* **rows**: the destination's live rows (without soft-deleted ones) against the source's at the
  snapshot. Equal when deletes propagate (``hard``/``soft``, or a full replace); with
  ``deletes: none`` the destination may hold more (rows the source deleted), never fewer.
* **checksum** (full loads that propagate deletes): an order-independent sum of a hash of each
  row's text (every staged column) over every row, on both sides; when they differ, the
  destination names the column(s) its publish changed, or says the rows changed before it
  (stagings of older versions carry per-column sums, compared column by column).
* the table's ``checks:`` (min_rows, not_null, unique), each with ``on_fail: fail | warn``.

Only the newest snapshot reconciles: a publish that a newer one overtook (rule 2 of
docs/decisions/0008) compares nothing. A failed ``fail`` check fails the task after the publish
committed (:class:`ChecksFailed`, terminal: the data is published, a retry would change nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dagforge.contracts import Staged
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.spec.model import Deletes, LoadMode


class ChecksFailed(TerminalError):
    """A reconciliation or a ``checks:`` entry with ``on_fail: fail`` failed after the publish."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    on_fail: str = "fail"


Measure = Callable[[str, tuple[str, ...]], int]
"""``measure(kind, columns)`` on the destination's live rows: for ``not_null`` the rows with a NULL in
any of the columns, for ``unique`` the rows beyond the first of each duplicated combination."""


def reconcile(
    load: TableLoad,
    staged: Staged,
    destination_rows: int,
    destination_checksums: Mapping[str, str] | None = None,
    destination_row_checksum: str | None = None,
    explain: Callable[[], str] | None = None,
) -> list[CheckResult]:
    """Row count (and, for full loads, checksums) of the destination against the source's;
    ``explain()`` says where rows' checksums differ, asked only when they do."""
    results = []
    full = staged.load_mode == LoadMode.FULL.value
    source_rows = staged.rows if full else staged.source_rows
    deletes = load.deletes_for(staged.load_mode)
    if source_rows is not None:
        if deletes is Deletes.NONE:
            ok = destination_rows >= source_rows
            why = "at least the source's (deletes: none keeps rows the source deleted)"
        else:
            ok = destination_rows == source_rows
            why = "the same as the source's"
        detail = f"destination {destination_rows} live rows, source {source_rows} at {staged.snapshot_at}: {why}"
        results.append(CheckResult("reconcile rows", ok, ("" if ok else "MISMATCH: ") + detail))
    if full and deletes is not Deletes.NONE and staged.checksums and destination_checksums is not None:
        compared = [c for c in staged.checksums if c in destination_checksums]
        differ = [c for c in compared if staged.checksums[c] != destination_checksums[c]]
        detail = (
            f"{len(compared)} columns' checksums equal on both sides"
            if not differ
            else "checksums differ in column(s) " + ", ".join(repr(c) for c in differ)
        )
        results.append(CheckResult("reconcile checksum", not differ, detail))
    if compare_rows(load, staged) and destination_row_checksum is not None:
        ok = staged.row_checksum == destination_row_checksum
        detail = f"{len(staged.columns)} columns of every row equal on both sides"
        if not ok:
            detail = "checksums of the rows differ" + (f": {explain()}" if explain else "")
        results.append(CheckResult("reconcile checksum", ok, detail))
    return results


def compare_rows(load: TableLoad, staged: Staged) -> bool:
    """Whether a publish of ``staged`` compares rows' checksums (full loads that propagate deletes)."""
    full = staged.load_mode == LoadMode.FULL.value
    return full and staged.row_checksum is not None and load.deletes_for(staged.load_mode) is not Deletes.NONE


def evaluate_checks(checks: Sequence[Mapping[str, Any]], live_rows: int, measure: Measure) -> list[CheckResult]:
    """The table's ``checks:`` against the destination's figures."""
    results = []
    for check in checks:
        on_fail = check.get("on_fail", "fail")
        if "min_rows" in check:
            wanted = int(check["min_rows"])
            ok = live_rows >= wanted
            results.append(CheckResult(f"min_rows {wanted}", ok, f"{live_rows} live rows", on_fail))
        elif "not_null" in check:
            columns = tuple(check["not_null"])
            bad = measure("not_null", columns)
            name = f"not_null {', '.join(columns)}"
            results.append(CheckResult(name, bad == 0, f"{bad} rows with NULL", on_fail))
        elif "unique" in check:
            columns = tuple(check["unique"])
            bad = measure("unique", columns)
            name = f"unique {', '.join(columns)}"
            results.append(CheckResult(name, bad == 0, f"{bad} duplicate rows", on_fail))
    return results


def record(results: Sequence[CheckResult], run_id: str) -> str:
    """The results as JSON for the state table."""
    return json.dumps({"run_id": run_id, "results": [asdict(r) for r in results]}, ensure_ascii=False)


def log_lines(table: str, results: Sequence[CheckResult]) -> list[str]:
    lines = []
    for r in results:
        verdict = "ok" if r.ok else ("FAILED" if r.on_fail == "fail" else "failed (warn)")
        lines.append(f"{table}: {r.name}: {verdict}: {r.detail}")
    return lines


def failure(table: str, results: Sequence[CheckResult]) -> ChecksFailed | None:
    """The error to raise after the publish, or None when every ``fail`` check passed."""
    failed = [r for r in results if not r.ok and r.on_fail == "fail"]
    if not failed:
        return None
    listed = "; ".join(f"{r.name}: {r.detail}" for r in failed)
    return ChecksFailed(f"table {table}: {len(failed)} check(s) failed after the publish (which stays): {listed}")
