"""The contracts between the steps of a table load, shared by every source, stage and destination.

A load is check → (stage | extract → load) → publish, each step a task whose result (XCom) the
next step reads. What travels between them is defined here, once:

* :class:`Window`: what the check step decided to read (full, or rows from a watermark on).
* :class:`SourceSnapshot`: what one read of the source saw, taken in one consistent snapshot:
  the source's clock at the snapshot (``snapshot_at``), the cursor range, and the digest of the
  lookback zone (see :func:`dagforge.sql.postgres.zone_digest`).
* :class:`Staged`: rows waiting in a staging table, with the snapshot they came from, the window
  (so a publish can rebuild a staging table that was lost) and ``stage_id``, the identity of this
  staging (so a publish retried after its COMMIT is recognised and does nothing).
* :class:`TableState`: what the destination remembers of a table (``_dagforge_state``).
* :class:`PublishOutcome`: what a publish did.

The ordering rules every destination enforces with these (docs/decisions/0008):

1. a row is never replaced by an older version of it (the staged cursor must be >= the target's);
2. a full replace applies only when its snapshot is not older than any snapshot published before;
   an incremental publish only when its snapshot is not older than the last full replace;
3. the watermark never moves backwards (typed comparison); the lookback digest moves with it;
4. publishes of one table are serialized by a lock in the destination, taken first in the publish
   transaction; a publish whose ``stage_id`` is recorded as published is a no-op.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from dagforge.errors import TerminalError

_T = TypeVar("_T")


def _from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build a contract from an XCom dict, ignoring keys this version does not know."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Window:
    """What the next load reads: everything, or rows from ``watermark`` (minus lookback) on."""

    load_mode: str
    watermark: str | None
    new_rows: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SourceSnapshot:
    """What one consistent read of the source saw, beside the rows themselves."""

    snapshot_at: str | None = None
    """The source's clock when the read's snapshot was taken (ISO 8601, UTC): orders full snapshots."""
    watermark_min: str | None = None
    watermark_max: str | None = None
    """The cursor's range over the rows read (text), None without a cursor or rows."""
    zone_digest: str | None = None
    """Digest of (key, cursor) of the rows from ``watermark_max`` minus lookback on: what the check compares."""
    source_rows: int | None = None
    """Live rows of the whole source table (without those its ``deleted_flag`` marks): reconciliation."""
    key_digest: str | None = None
    """Loads that stage the key set: count and order-independent hash of every key (:func:`~dagforge.sql.
    postgres.key_digest`)."""
    checksums: dict[str, str] | None = None
    """Full loads: per column, an order-independent checksum over every row (:func:`~dagforge.sql.postgres.
    column_checksums`), compared with the destination's after the publish."""


def new_stage_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Staged:
    staging_table: str
    rows: int
    columns: list[str]
    load_mode: str = "incremental"
    """How publish applies it: ``full`` replaces the table, ``incremental`` upserts."""
    watermark: str | None = None
    """The highest cursor value staged, when the stage step knows it."""
    snapshot_at: str | None = None
    zone_digest: str | None = None
    stage_id: str = ""
    """This staging's identity: the key under which its publish is recorded (idempotent retries)."""
    window: dict[str, Any] | None = None
    """The check step's window (:meth:`Window.to_dict`), for rebuilding a lost staging table."""
    key_table: str | None = None
    """Every primary key of the source at the same snapshot, staged beside the rows (incremental
    deletes): destination rows whose key is not in it are deleted."""
    key_rows: int | None = None
    source_rows: int | None = None
    checksums: dict[str, str] | None = None
    key_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Staged:
        return _from_dict(cls, data)

    @classmethod
    def of(
        cls,
        staging_table: str,
        rows: int,
        columns: list[str],
        window: Window,
        snapshot: SourceSnapshot,
        stage_id: str | None = None,
        *,
        key_table: str | None = None,
        key_rows: int | None = None,
    ) -> Staged:
        return cls(
            staging_table,
            rows,
            columns,
            window.load_mode,
            snapshot.watermark_max,
            snapshot.snapshot_at,
            snapshot.zone_digest,
            stage_id or new_stage_id(),
            window.to_dict(),
            key_table,
            key_rows,
            snapshot.source_rows,
            snapshot.checksums,
            snapshot.key_digest,
        )

    @property
    def source_window(self) -> Window:
        if self.window is None:  # staged by a version that did not record it: no retry can help
            raise TerminalError(
                f"staging {self.staging_table} carries no window to rebuild it from; clear the check task"
            )
        return Window.from_dict(self.window)


@dataclass(frozen=True)
class TableState:
    """A table's row in ``_dagforge_state`` (None everywhere for a table never published)."""

    watermark: str | None = None
    zone_digest: str | None = None
    key_digest: str | None = None
    """Digest of every source key at the last load that tracked deletes: a delete alone changes it."""


@dataclass(frozen=True)
class PublishOutcome:
    rows: int
    """Rows applied to the final table (0 when nothing was applied)."""
    applied: bool
    reason: str


class StagingLost(Exception):
    """A staging table (or the files behind it) is gone or incomplete: stage it again, then publish.

    Not a TerminalError: a warehouse restart empties UNLOGGED tables, a staging table expires, a
    bucket is cleaned; the publish step rebuilds it from the window the check step decided.
    """


class ObjectMissing(StagingLost):
    """An object a manifest names (or the manifest itself) is not in the store: extract again."""
