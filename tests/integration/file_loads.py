"""Drive an HTTP file table through check → extract → load → publish, into the Postgres warehouse
(staged in S3) or BigQuery (staged in GCS): the step functions the operators call, with a real
local HTTP server (:class:`~dagforge.devservices.http_files.FileServer`) in front of the files."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from dagforge.contracts import Manifest, PublishOutcome, RunInfo, Window
from dagforge.devservices.http_files import FileServer
from dagforge.loadspec import TableLoad, TableRef
from dagforge.sources.http import HttpEndpoint, HttpSource
from dagforge.spec.model import LoadMode
from dagforge.stage.extract_load import extract, load_staged, run_prefix
from dagforge.transfer import postgres_load

DESTINATIONS = ("postgres", "bigquery")


def month_run(month: str) -> RunInfo:
    """The run of a monthly schedule whose interval starts at ``month`` (``2024-01``)."""
    year, number = map(int, month.split("-"))
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=dt.UTC)
    return RunInfo(f"scheduled__{start.isoformat()}", start.isoformat(), end.isoformat())


class FileLoads:
    """One destination's world: a schema (or dataset), a bucket, and the HTTP server."""

    def __init__(self, kind: str, server: FileServer, world: dict[str, Any]):
        self.kind, self.server, self.world = kind, server, world
        self.manifests: list[Manifest] = []
        self.endpoint = HttpEndpoint(server.url)
        """What the source connection gives (base URL, headers, auth)."""

    @property
    def root(self) -> Path:
        return self.server.root

    def load(self, name: str, url: str, columns: dict[str, str], mode: LoadMode = LoadMode.INTERVAL,
             **options: Any) -> TableLoad:  # fmt: skip
        schema = self.world["schema"]
        missing = options.pop("missing", "skip" if "{{" in url else "fail")
        return TableLoad(
            "files", TableRef("", "", name), TableRef("", schema, name), mode, tuple(options.pop("primary_key", ())),
            source_kind="http",
            source_options={"url": url, "format": options.pop("format", _format(url)), "columns": columns,
                            "missing": missing, **options},
        )  # fmt: skip

    def source(self, **kwargs: Any) -> HttpSource:
        return HttpSource(self.endpoint, backoff=0.01, **kwargs)

    def decide(self, load: TableLoad, run: RunInfo, *, force_full: bool = False) -> Window:
        if self.kind == "postgres":
            target = self.world["target"]
            return postgres_load.decide_window(self.source(), target, load, force_full=force_full, run=run)
        from dagforge.bigquery import load as bq

        client, ds = self.world["client"], self.world["dataset"]
        state = lambda interval=None: bq.read_state(client, ds, load, interval)  # noqa: E731
        return self.source().decide(load, state, run, force_full=force_full)

    def stage(self, load: TableLoad, window: Window, run_id: str, source: HttpSource | None = None) -> Any:
        encoding = "bigquery" if self.kind == "bigquery" else "postgres"
        prefix = run_prefix("raw", load, run_id)
        manifest = extract(source or self.source(), load, window, self.world["store"], prefix, "parquet", run_id,
                           encoding=encoding)  # fmt: skip
        self.manifests.append(manifest)
        staging = load.staging_table(run_id)
        if self.kind == "postgres":
            return load_staged(self.world["target"], load, self.world["store"], prefix, staging)
        from dagforge.bigquery import load as bq

        return bq.load_staging(self.world["client"], self.world["dataset"], load, manifest, staging, run_id)

    def publish(self, load: TableLoad, staged: Any, run_id: str) -> PublishOutcome:
        if self.kind == "postgres":
            return postgres_load.publish(self.world["target"], load, staged, run_id)
        from dagforge.bigquery import load as bq

        return bq.publish(self.world["client"], self.world["dataset"], load, staged, run_id)

    def run(self, load: TableLoad, month: str, *, force_full: bool = False, run_id: str | None = None) -> Any:
        """One run for ``month``: the outcome, or the window when the check found nothing to load."""
        run = month_run(month)
        run_id = run_id or f"{run.run_id}_{uuid.uuid4().hex[:6]}"
        window = self.decide(load, run, force_full=force_full)
        if not window.new_rows:
            return window
        return self.publish(load, self.stage(load, window, run_id), run_id)

    def rows(self, load: TableLoad, columns: list[str], order: str) -> list[tuple]:
        """The destination table's rows (those columns, as text), ordered."""
        if self.kind == "postgres":
            names = ", ".join(f't."{c}"::text AS c{i}' for i, c in enumerate(columns))
            query = f'SELECT {names} FROM "{load.destination.schema}"."{load.destination.table}" t ORDER BY t."{order}"'
            return [tuple(r) for r in self.world["target"].execute(query).fetchall()]
        ds = self.world["dataset"]
        names = ", ".join(f"CAST(t.`{c}` AS STRING) AS c{i}" for i, c in enumerate(columns))
        query = f"SELECT {names} FROM {ds.table_sql(load.destination.table)} t ORDER BY t.`{order}`"
        return [tuple(r.values()) for r in self.world["client"].query(query).result()]

    def count(self, load: TableLoad) -> int:
        if self.kind == "postgres":
            table = f'"{load.destination.schema}"."{load.destination.table}"'
            return self.world["target"].execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        ds = self.world["dataset"]
        query = f"SELECT count(*) FROM {ds.table_sql(load.destination.table)}"
        return int(next(iter(self.world["client"].query(query).result()))[0])


def _format(url: str) -> str:
    from dagforge.plan.shapes import file_format

    return file_format({"url": url}) or "csv"
