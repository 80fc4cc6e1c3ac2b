"""The HTTP file source: one file per run interval (CSV, CSV.gz, Parquet, JSONL), typed by the spec.

``decide`` (the check step) renders the table's URL for the run's data interval, asks the server
for the file's size and validators (:func:`~dagforge.sources.http_fetch.probe`) and compares them
with what the destination recorded for the interval (``_dagforge_files``): an unchanged file is
"nothing new", a 404 is "not published yet" (``missing: skip``) or a failure (``missing: fail``).
The window carries the URL, the interval and the file's identity (``Window.scope``), so a retry,
a restage or a late run reads what the check decided.

``read`` streams the download (resumed across dropped connections) into the parser
(:mod:`~dagforge.sources.file_formats`), which yields typed Arrow record batches; bad rows are
reported with their line and dropped up to ``max_bad_rows``. Nothing is held whole in memory.
Under ``mode: interval`` every row carries the interval's start in ``_dagforge_interval``: the
destination replaces exactly the rows of that interval.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from dagforge.contracts import Column, PartSink, PartWriter, RunInfo, SourceSnapshot, TableState, Window
from dagforge.errors import TerminalError
from dagforge.loadspec import TableLoad
from dagforge.sources.http_urls import render_url, utc
from dagforge.spec.model import INTERVAL_COLUMN, LoadMode

log = logging.getLogger(__name__)

INTERVAL_TYPE = "timestamp with time zone"
BAD_ROWS_SHOWN = 10


@dataclass(frozen=True)
class HttpEndpoint:
    """Where relative URLs point and how to ask: from an optional Airflow ``http`` connection."""

    base_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> HttpEndpoint:
        """An Airflow connection: ``host`` (with or without a scheme), ``schema`` (the scheme),
        ``port``, ``login``/``password`` (basic auth), and headers as the extra (or its ``headers`` key)."""
        host = (conn.host or "").rstrip("/")
        if host and "://" not in host:
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        extra = conn.extra_dejson or {}
        headers = extra.get("headers") if isinstance(extra.get("headers"), dict) else extra
        headers = {str(k): str(v) for k, v in headers.items() if isinstance(v, str | int | float)}
        auth = (conn.login, conn.password or "") if conn.login else None
        return cls(host, headers, auth)

    def url(self, url: str) -> str:
        """A table's URL: absolute as written, or relative to the connection's base URL."""
        if urlsplit(url).scheme:
            return url
        if not self.base_url:
            raise TerminalError(f"the URL {url!r} is relative and the source has no connection with a base URL")
        return urljoin(self.base_url.rstrip("/") + "/", url.lstrip("/"))


@dataclass(frozen=True)
class FileOptions:
    """A table's file options, as the plan writes them into ``TableLoad.source_options``."""

    url: str
    format: str
    columns: dict[str, str]
    csv: dict[str, Any] = field(default_factory=dict)
    max_bad_rows: int = 0
    missing: str = "skip"

    @classmethod
    def of(cls, load: TableLoad) -> FileOptions:
        data = dict(load.source_options or {})
        return cls(
            url=data["url"],
            format=data.get("format", "csv"),
            columns=dict(data["columns"]),
            csv=dict(data.get("csv") or {}),
            max_bad_rows=int(data.get("max_bad_rows") or 0),
            missing=data.get("missing", "skip"),
        )


def interval_key(load: TableLoad, run: RunInfo) -> str:
    """Which interval a run loads: its data interval's start (UTC, ISO) under ``mode: interval`` and
    ``append``; ``""`` (the table as a whole) under ``full``."""
    if load.mode is LoadMode.FULL:
        return ""
    if run.data_interval_start is None:
        raise TerminalError(
            f"table {load.destination.table}: mode {load.mode.value} needs a run with a data interval "
            "(a scheduled run or a backfill); this run has none"
        )
    return utc(run.data_interval_start).isoformat()


def same_file(recorded: Mapping[str, Any] | None, now: Mapping[str, Any]) -> bool:
    """Whether a probe shows the file the destination recorded: equal ETag (and size), else equal
    size and Last-Modified. Without validators nothing can tell: never "the same"."""
    if not recorded:
        return False
    if recorded.get("etag") and now.get("etag"):
        return recorded["etag"] == now["etag"] and recorded.get("size") == now.get("size")
    if recorded.get("last_modified") and now.get("last_modified"):
        return recorded["last_modified"] == now["last_modified"] and recorded.get("size") == now.get("size")
    return False


class HttpSource:
    """The HTTP file source kind (:class:`dagforge.contracts.Source`)."""

    kind = "http"

    def __init__(
        self,
        endpoint: HttpEndpoint | None = None,
        session: Any = None,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        progress: Callable[[str], None] | None = None,
    ):
        import requests

        self.endpoint = endpoint or HttpEndpoint()
        self.session = session or requests.Session()
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.progress = progress or log.info

    def close(self) -> None:
        self.session.close()

    def request_args(self) -> dict[str, Any]:
        return {"headers": dict(self.endpoint.headers), "auth": self.endpoint.auth, "timeout": self.timeout,
                "retries": self.retries, "backoff": self.backoff}  # fmt: skip

    def decide(
        self, load: TableLoad, state: Callable[..., TableState], run: RunInfo | None = None, *, force_full: bool = False
    ) -> Window:
        from dagforge.sources.http_fetch import FileMissing, probe, redact

        run = run or RunInfo()
        options = FileOptions.of(load)
        key = interval_key(load, run)
        url = self.endpoint.url(render_url(options.url, run.data_interval_start, run.data_interval_end))
        scope: dict[str, Any] = {"url": url, "interval": key, "interval_start": run.data_interval_start,
                                 "interval_end": run.data_interval_end}  # fmt: skip
        mode = load.mode.value
        try:
            remote = probe(self.session, url, **self.request_args())
        except FileMissing as missing:
            if options.missing == "fail":
                raise TerminalError(f"{missing} (missing: fail)") from missing
            return Window(mode, None, False, f"{missing}: not published (yet); skipping this interval", scope)
        scope["file"] = remote.to_dict()
        shown = redact(url)
        if force_full:
            return Window(mode, None, True, f"a reload was asked for when the run was triggered: {shown}", scope)
        last = state(key)
        if same_file(last.file, remote.to_dict()):
            loaded = last.file or {}
            return Window(mode, None, False, f"{shown} is unchanged since run {loaded.get('run_id')} loaded it "
                          f"({loaded.get('rows')} rows, ETag {loaded.get('etag')}): nothing new", scope)  # fmt: skip
        what = "changed since it was last loaded" if last.file else "not loaded before"
        size = f"{remote.size / 1e6:.1f} MB" if remote.size is not None else "size unknown"
        return Window(mode, None, True, f"{shown} ({size}, ETag {remote.etag}): {what}", scope)

    @contextlib.contextmanager
    def read(self, load: TableLoad, window: Window) -> Iterator[HttpRead]:
        yield HttpRead(self, load, window)


class HttpRead:
    """One download of the window's file, parsed into typed record batches (:class:`~dagforge.contracts.SourceRead`)."""

    def __init__(self, source: HttpSource, load: TableLoad, window: Window):
        from dagforge.sources.file_types import declared_type

        self.source, self.load, self.window = source, load, window
        self.options = FileOptions.of(load)
        self.scope = dict(window.scope or {})
        if "url" not in self.scope:
            raise TerminalError(f"table {load.destination.table}: the check step's window names no URL; clear it")
        self.declared = {name: declared_type(text) for name, text in self.options.columns.items()}
        self.columns = [Column(name, kind.type_sql) for name, kind in self.declared.items()]
        if LoadMode(window.load_mode) is not LoadMode.FULL:
            self.columns.append(Column(INTERVAL_COLUMN, INTERVAL_TYPE, not_null=True))
        self.started_at = dt.datetime.now(dt.UTC).isoformat()
        self.rows = 0
        self.bad_rows: list[Any] = []
        self.facts: dict[str, Any] = {}

    def key_columns(self) -> list[Column] | None:
        return None  # a file is the whole truth of its interval: nothing to delete by key

    def write_keys(self, writer: PartWriter, folder: Path, sink: PartSink) -> None:
        raise TypeError("a file source stages no key set")

    def write_rows(self, writer: PartWriter, folder: Path, sink: PartSink) -> None:
        from dagforge.sources.http_fetch import Download

        url, say = self.scope["url"], self.source.progress
        with Download(self.source.session, url, chunk_bytes=1 << 20, progress=say,
                      **self.source.request_args()) as stream:  # fmt: skip
            writer.write_batches(self._batches(stream, folder), self.columns, folder, sink)
            self.facts = dict(stream.facts)
        say(f"read {self.rows} rows from {self.facts.get('url', url)} ({len(self.bad_rows)} bad row(s) skipped)")

    def _batches(self, stream: Any, folder: Path) -> Iterator[Any]:
        import pyarrow as pa

        from dagforge.sources.file_formats import Column as FileColumn
        from dagforge.sources.file_formats import CsvOptions, read_batches

        columns = [FileColumn(name, kind) for name, kind in self.declared.items()]
        spool = Path(tempfile.mkdtemp(prefix="spool-", dir=folder))
        batches: Iterable[pa.RecordBatch] = read_batches(
            stream, self.options.format, columns, csv=CsvOptions.from_dict(self.options.csv),
            max_bad_rows=self.options.max_bad_rows, bad_rows=self.bad_rows, spool_dir=spool,
        )  # fmt: skip
        interval = self._interval_value()
        stamp = pa.scalar(interval, pa.timestamp("us", tz="UTC")) if interval is not None else None
        last = time.monotonic()
        for batch in batches:
            if stamp is not None:
                constant = pa.repeat(stamp, batch.num_rows)
                batch = batch.append_column(pa.field(INTERVAL_COLUMN, constant.type, nullable=False), constant)
            self.rows += batch.num_rows
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                self.source.progress(f"parsed {self.rows} rows so far")
            yield batch

    def _interval_value(self) -> dt.datetime | None:
        if LoadMode(self.window.load_mode) is LoadMode.FULL:
            return None
        return dt.datetime.fromisoformat(self.scope["interval"])

    def snapshot(self) -> SourceSnapshot:
        """The read's start (the worker's clock, microseconds) orders it against other reads of the
        same interval (docs/decisions/0008, 0012)."""
        return SourceSnapshot(snapshot_at=self.started_at)

    def manifest_facts(self) -> dict[str, Any]:
        shown = [{"line": b.line, "reason": b.reason} for b in self.bad_rows[:BAD_ROWS_SHOWN]]
        return {
            "kind": "http",
            "interval": self.scope.get("interval"),
            **self.facts,
            "rows": self.rows,
            "bad_rows": len(self.bad_rows),
            "bad_row_samples": shown,
        }
