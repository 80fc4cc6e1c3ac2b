"""Benchmark: dagforge's HTTP file source → GCS → BigQuery (local emulators) against a hand-written script.

Usage (from the repo root)::

    .venv/bin/python bench/http_to_bq.py [--rows 200000] [--repeat 2] [--keep-dir DIR]
    .venv/bin/python bench/http_to_bq.py --rows 1000000,5000000
    .venv/bin/python bench/http_to_bq.py --rows 1000000 --profile      # + one cProfile'd project run

One monthly taxi-like CSV.gz per size (``dagforge.devservices.tripdata.write_month``, 2024-01, cached
under ``.dagforge/bench/http_to_bq/``) is served by a real local HTTP server
(``dagforge.devservices.http_files.FileServer``, a thread of this process); the GCS and BigQuery
emulators come from ``dagforge.devservices.gcp.running_gcp``. Then, per size, ``--repeat`` times each,
alternating which side goes first:

* project: what the Airflow operators of ``pipelines/taxi_to_bigquery.yml`` call for one month under
  ``mode: interval``: ``HttpSource.decide`` (the check step, timed apart), then ``extract(...,
  "parquet", encoding="bigquery")`` (download, parse and type, part files of 500,000 rows, upload,
  manifest) → ``load_staging`` (a load job into staging) → ``publish`` (the interval's DELETE + INSERT
  and the state and file rows in one transaction, the table's ``not_null`` check, staging dropped):
  "end to end";
* hand-written: ``requests.get(stream=True)`` → ``pyarrow.csv.open_csv`` over the gunzipped body with an
  explicit typed schema → ``pq.ParquetWriter`` parts of 500,000 rows → upload each to GCS → one load job
  (``load_table_from_uri``, WRITE_TRUNCATE, explicit schema). No staging, no MERGE/DELETE, no state, no
  check: it does less, so the ratio is conservative.

Every run happens in a fresh spawned child process, which reports its own peak RSS (``ru_maxrss``).
Buckets and the dataset exist before the timer starts (created in the child, untimed); the dataset is
dropped before every run and the emulators are let go idle; one small untimed run of each side warms
the emulators up first. Each run also measures the CPU that other processes on the machine used
meanwhile (``/proc/stat``); a run during which they took more than ``--max-others`` of a core is run
again (``--retries``). The emulators are stand-ins (BigQuery's runs on DuckDB): indicative only.

Progress goes to stderr, information to stdout: ``info rows=N project end-to-end …``, ``info rows=N
hand-written …`` and ``ratio …`` lines (medians; speed ratio = hand-written time / project time).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# Only light modules at the top: a spawned child imports this module again, and what it imports
# here would count in both sides' peak RSS. Each side imports its own libraries in its function.
from harness import (  # noqa: E402
    ROOT,
    bench_main,
    code_version,
    cpu_s,
    in_child,
    log,
    machine_busy_s,
    peak_rss_mb,
    print_profile,
    process_cpu_s,
    process_peak_mb,
    save_summary,
    short,
)

PIPELINE = ROOT / "pipelines" / "taxi_to_bigquery.yml"
CACHE = ROOT / ".dagforge" / "bench" / "http_to_bq"
TRIPDATA = ROOT / "dagforge" / "devservices" / "tripdata.py"
PROJECT = "dagforge-local"  # dagforge.devservices.gcp.PROJECT, without importing it here
DATASET = "bench"
LOCATION = "US"
YEAR, MONTH = 2024, 1
ROWS_PER_PART = 500_000
"""As the project's extract (dagforge.stage.extract_load.ROWS_PER_PART)."""
HAND_TABLE = "trips_hand"
WARMUP_ROWS = 20_000


def clients() -> tuple[Any, Any]:
    """BigQuery and GCS clients with anonymous credentials; the emulators' addresses come from
    ``BIGQUERY_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST`` (the parent sets them, children inherit them)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    anonymous = AnonymousCredentials()
    return bigquery.Client(project=PROJECT, credentials=anonymous), storage.Client(PROJECT, anonymous)


def month_run(run_id: str) -> dict[str, str]:
    """The RunInfo fields of the monthly run for YEAR-MONTH (as tests/integration/file_loads.month_run)."""
    import datetime as dt

    start = dt.datetime(YEAR, MONTH, 1, tzinfo=dt.UTC)
    end = dt.datetime(YEAR + MONTH // 12, MONTH % 12 + 1, 1, tzinfo=dt.UTC)
    return {"run_id": run_id, "data_interval_start": start.isoformat(), "data_interval_end": end.isoformat()}


def _finish(result: dict[str, Any], rss_before: float, cpu_before: float) -> dict[str, Any]:
    import pyarrow as pa

    result["cpu_s"] = cpu_s() - cpu_before
    result["child_cpu_total_s"] = cpu_s()  # the whole child, imports and untimed setup included
    result["rss_before_mb"] = rss_before
    result["peak_rss_mb"] = peak_rss_mb()
    result["arrow_peak_mb"] = pa.default_memory_pool().max_memory() / 2**20
    return result


# --- the project (runs in its own child process) --------------------------------------------------


def _timed_parquet_writer(phases: dict[str, float]) -> None:
    """Count the time spent in ``pq.ParquetWriter.write_table``/``close`` (``write_batch`` calls
    ``write_table``; dagforge.stage.formats looks the class up at call time); one clock reading per
    batch, negligible next to a batch's work."""
    import pyarrow.parquet as pq

    base = pq.ParquetWriter

    class TimedWriter(base):  # type: ignore[misc, valid-type]
        def write_table(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            super().write_table(*args, **kwargs)
            phases["parquet_write_s"] += time.perf_counter() - started

        def close(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            super().close(*args, **kwargs)
            phases["parquet_write_s"] += time.perf_counter() - started

    pq.ParquetWriter = TimedWriter


def project_run(load_dict: dict, stage: dict, server_url: str, run_id: str, profile: str | None = None) -> dict:
    """decide (decide_s, untimed otherwise) → extract (extract_s) → load_staging (load_s) → publish (publish_s)."""
    from dagforge.bigquery import load as bq
    from dagforge.contracts import RunInfo
    from dagforge.loadspec import TableLoad
    from dagforge.sources.http import HttpEndpoint, HttpSource
    from dagforge.stage.extract_load import extract, read_manifest, run_prefix
    from dagforge.stage.gcs_store import GCSStore

    phases = {"parquet_write_s": 0.0, "upload_s": 0.0}

    class TimedStore(GCSStore):
        def upload_file(self, path: Path, key: str) -> None:
            started = time.perf_counter()
            super().upload_file(path, key)
            phases["upload_s"] += time.perf_counter() - started

    _timed_parquet_writer(phases)
    load = TableLoad.from_dict(load_dict)
    bq_client, gcs_client = clients()
    store = TimedStore(gcs_client, f"project-{run_id}".lower().replace("_", "-"), LOCATION)
    store.ensure_bucket()  # the bucket of a deployment exists: not timed (extract's own check is)
    ds = bq.Dataset(PROJECT, DATASET, LOCATION)
    bq.create_dataset(bq_client, ds)  # the dataset branch's job, not timed
    source = HttpSource(HttpEndpoint(server_url))
    started = time.perf_counter()
    window = source.decide(load, lambda interval=None: bq.read_state(bq_client, ds, load, interval),
                           RunInfo(**month_run(run_id)))  # fmt: skip
    decide_s = time.perf_counter() - started
    if not window.new_rows:
        raise RuntimeError(f"project: the check step found nothing to load: {window.reason}")
    prefix = run_prefix(stage.get("prefix"), load, run_id)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    manifest = extract(source, load, window, store, prefix, stage.get("format", "parquet"), run_id,
                       encoding=stage.get("encoding", "bigquery"))  # fmt: skip
    extracted, rss_extract = time.perf_counter(), peak_rss_mb()
    staged = bq.load_staging(bq_client, ds, load, read_manifest(store, prefix), load.staging_table(run_id), run_id)
    loaded = time.perf_counter()
    outcome = bq.publish(bq_client, ds, load, staged, run_id)
    finished = time.perf_counter()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    result = {
        "seconds": finished - started,
        "decide_s": decide_s,
        "extract_s": extracted - started,
        "load_s": loaded - extracted,
        "publish_s": finished - loaded,
        **phases,
        "peak_rss_extract_mb": rss_extract,
        "manifest_rows": manifest.rows,
        "staged_rows": staged.rows,
        "published_rows": outcome.rows,
        "applied": outcome.applied,
        "parts": len(manifest.parts),
        "bytes": sum(p["bytes"] for p in manifest.parts),
        "bad_rows": (manifest.source or {}).get("bad_rows"),
        "table": load.destination.table,
        "bucket": store.bucket_name,
    }
    # download + gunzip + parse + typing + the interval column + the cast to the encoding, and the manifest
    result["download_parse_s"] = result["extract_s"] - phases["parquet_write_s"] - phases["upload_s"]
    return _finish(result, rss_before, cpu_before)


# --- the hand-written baseline (runs in its own child process) --------------------------------------


def hand_schema() -> Any:
    """The declared columns (tripdata.COLUMNS) as a typed Arrow schema: what a data engineer writes."""
    import pyarrow as pa

    money = pa.decimal128(10, 2)
    return pa.schema([
        ("VendorID", pa.int64()), ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")), ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()), ("RatecodeID", pa.int64()), ("store_and_fwd_flag", pa.string()),
        ("PULocationID", pa.int64()), ("DOLocationID", pa.int64()), ("payment_type", pa.int64()),
        ("fare_amount", money), ("tip_amount", money), ("total_amount", money),
    ])  # fmt: skip


def hand_bq_schema() -> list[Any]:
    from google.cloud import bigquery

    kinds = {"int64": "INT64", "timestamp[us]": "DATETIME", "double": "FLOAT64", "string": "STRING"}
    fields = []
    for field in hand_schema():
        if str(field.type).startswith("decimal"):
            fields.append(bigquery.SchemaField(field.name, "NUMERIC", precision=10, scale=2))
        else:
            fields.append(bigquery.SchemaField(field.name, kinds[str(field.type)]))
    return fields


def hand_written_run(url: str, run_id: str, compression: str) -> dict:
    """GET → open_csv (typed) → ParquetWriter parts → upload each → one load job, phases timed by hand."""
    import tempfile

    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq
    import requests
    from google.cloud import bigquery

    bq_client, gcs_client = clients()
    bucket = gcs_client.create_bucket(f"hand-{run_id}".lower().replace("_", "-"), location=LOCATION)
    dataset = bigquery.Dataset(f"{PROJECT}.{DATASET}")
    dataset.location = LOCATION
    bq_client.create_dataset(dataset, exists_ok=True)
    schema, table_id = hand_schema(), f"{PROJECT}.{DATASET}.{HAND_TABLE}"
    phases = {"download_parse_s": 0.0, "parquet_write_s": 0.0, "upload_s": 0.0}
    uris: list[str] = []
    rows, part_bytes = 0, 0
    rss_before, cpu_before = peak_rss_mb(), cpu_s()
    started = time.perf_counter()
    with requests.get(url, stream=True, timeout=60) as resp, tempfile.TemporaryDirectory() as tmp:
        resp.raise_for_status()
        options = pv.ConvertOptions(column_types=schema)
        reader = pv.open_csv(pa.input_stream(resp.raw, compression="gzip"), convert_options=options)
        writer, path, in_part = None, None, 0

        def upload(path: Path) -> None:
            nonlocal part_bytes
            t = time.perf_counter()
            blob = bucket.blob(f"trips/{run_id}/{path.name}")
            blob.upload_from_filename(str(path))
            uris.append(f"gs://{bucket.name}/{blob.name}")
            part_bytes += path.stat().st_size
            path.unlink()
            phases["upload_s"] += time.perf_counter() - t

        while True:
            t = time.perf_counter()
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                phases["download_parse_s"] += time.perf_counter() - t
                break
            phases["download_parse_s"] += time.perf_counter() - t
            t = time.perf_counter()
            if writer is None:
                path = Path(tmp) / f"part-{len(uris):05d}.parquet"
                writer = pq.ParquetWriter(path, batch.schema, compression=compression)
            writer.write_batch(batch)
            rows += batch.num_rows
            in_part += batch.num_rows
            if in_part >= ROWS_PER_PART:
                writer.close()
                phases["parquet_write_s"] += time.perf_counter() - t
                upload(path)
                writer, in_part = None, 0
            else:
                phases["parquet_write_s"] += time.perf_counter() - t
        if writer is not None:
            t = time.perf_counter()
            writer.close()
            phases["parquet_write_s"] += time.perf_counter() - t
            upload(path)
    extracted = time.perf_counter()
    config = bigquery.LoadJobConfig(
        schema=hand_bq_schema(),
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    job = bq_client.load_table_from_uri(uris, table_id, job_config=config, location=LOCATION)
    job.result()
    finished = time.perf_counter()
    result = {
        "seconds": finished - started,
        "extract_s": extracted - started,
        "load_s": finished - extracted,
        **phases,
        "parsed_rows": rows,
        "parts": len(uris),
        "bytes": part_bytes,
        "table": HAND_TABLE,
        "bucket": bucket.name,
    }
    return _finish(result, rss_before, cpu_before)


# --- the parent: files, servers, alternation, checks ----------------------------------------------


def taxi_load() -> tuple[dict, dict]:
    """The ``trips`` table load and the extract's stage block, compiled from pipelines/taxi_to_bigquery.yml."""
    from dagforge.catalog import build_catalog
    from dagforge.devservices.tripdata import COLUMNS
    from dagforge.loadspec import table_loads

    (entry,) = build_catalog([PIPELINE])
    if entry.errors:
        raise RuntimeError(f"{PIPELINE}: {entry.errors}")
    (load,) = table_loads(entry.config)
    if load.source_options["columns"] != COLUMNS:
        raise RuntimeError("pipelines/taxi_to_bigquery.yml declares other columns than tripdata.COLUMNS")
    stage = next(t["stage"] for name, t in entry.config["tasks"].items() if name.startswith("extract_"))
    return load.to_dict(), stage


def month_file(rows: int) -> Path:
    """The month's CSV.gz of ``rows`` trips, from the cache (keyed by rows and tripdata.py's content)."""
    from dagforge.devservices import tripdata

    version = hashlib.sha1(TRIPDATA.read_bytes()).hexdigest()[:10]
    folder = CACHE / f"{rows}-{version}"
    path = folder / tripdata.file_name(YEAR, MONTH)
    if path.exists():
        return path
    making = CACHE / f".{rows}-{version}-{os.getpid()}"
    shutil.rmtree(making, ignore_errors=True)
    making.mkdir(parents=True)
    log(f"writing {rows:,} rows to {folder} (cached for the next runs)")
    started = time.perf_counter()
    tripdata.write_month(making, YEAR, MONTH, rows)
    log(f"written in {time.perf_counter() - started:.1f} s")
    try:
        making.rename(folder)
    except OSError:  # another run made it meanwhile
        shutil.rmtree(making, ignore_errors=True)
    return path


def reset_dataset(client: Any) -> None:
    client.delete_dataset(f"{PROJECT}.{DATASET}", delete_contents=True, not_found_ok=True)


def table_facts(client: Any, table: str) -> tuple[int, str]:
    """Row count and ``SUM(total_amount)`` of a published table: both sides must agree."""
    query = f"SELECT COUNT(*), CAST(SUM(total_amount) AS STRING) FROM `{PROJECT}.{DATASET}.{table}`"
    count, total = next(iter(client.query(query, location=LOCATION).result()))
    return int(count), str(total)


def drop_bucket(gcs_client: Any, name: str) -> None:
    bucket = gcs_client.bucket(name)
    for blob in gcs_client.list_blobs(name):
        blob.delete()
    bucket.delete()


class Runner:
    """One side's run in a fresh child, with the emulators' and the file server's CPU around it."""

    def __init__(self, gcp: Any, args: argparse.Namespace, load: dict, stage: dict):
        self.gcp, self.args, self.load, self.stage = gcp, args, load, stage
        self.bq_client, self.gcs_client = clients()
        self.emulators = {"bigquery": gcp.bigquery.process.pid, "gcs": gcp.gcs.process.pid}
        self.stamp = time.strftime("%Y%m%dt%H%M%S")

    def settle(self) -> float:
        return _settle(list(self.emulators.values()))

    def run(self, side: str, server: Any, rows: int, tag: str, profile: str | None = None) -> dict:
        from dagforge.devservices import tripdata

        reset_dataset(self.bq_client)
        settle_s = self.settle()
        run_id = f"scheduled__{YEAR}-{MONTH:02d}-01_{self.stamp}_{rows}_{tag}"
        before = {name: process_cpu_s(pid) for name, pid in self.emulators.items()}
        server_cpu, machine = cpu_s(), machine_busy_s()  # this process only serves the file meanwhile
        if side == "project":
            result = in_child(project_run, self.load, self.stage, server.url, run_id, profile)
        else:
            url = server.url_for(tripdata.file_name(YEAR, MONTH))
            result = in_child(hand_written_run, url, run_id, self.args.hand_compression)
        result["file_server_cpu_s"] = cpu_s() - server_cpu
        result["settle_s"] = settle_s
        for name, pid in self.emulators.items():
            result[f"{name}_emulator_cpu_s"] = process_cpu_s(pid) - before[name]
        ours = result["child_cpu_total_s"] + result["file_server_cpu_s"]
        ours += sum(result[f"{name}_emulator_cpu_s"] for name in self.emulators)
        result["others_cpu_s"] = max(0.0, machine_busy_s() - machine - ours)  # other sessions' jobs
        result["rows"], result["total_amount"] = table_facts(self.bq_client, result["table"])
        drop_bucket(self.gcs_client, result["bucket"])
        if result["rows"] != rows:
            raise RuntimeError(f"{side}: {result['rows']} rows in BigQuery, not {rows}")
        return result


SETTLE_WINDOW_S, SETTLE_CPU_S, SETTLE_MAX_S = 0.5, 0.05, 30.0


def _settle(pids: list[int]) -> float:
    """Wait until the emulators are idle (under 10 % of a core over half a second): the BigQuery emulator
    (DuckDB, persistent) keeps working for a while after a dataset is dropped, which slowed whichever
    run came next. How long it took; gives up after SETTLE_MAX_S."""
    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_MAX_S:
        before = sum(process_cpu_s(pid) for pid in pids)
        time.sleep(SETTLE_WINDOW_S)
        if sum(process_cpu_s(pid) for pid in pids) - before < SETTLE_CPU_S:
            break
    return time.perf_counter() - started


def clean_run(runner: Runner, side: str, server: Any, rows: int, rep: int, args: argparse.Namespace) -> dict:
    """One run; again (up to ``--retries`` times) while other processes took more than ``--max-others``
    of a core meanwhile (another session's test suite on the 2 cores makes single runs 20-50 % slower)."""
    for attempt in range(args.retries + 1):
        result = runner.run(side, server, rows, f"{side[0]}{rep}{'abcdefghij'[attempt]}")
        result["discarded_runs"] = attempt
        share = result["others_cpu_s"] / result["seconds"]
        log(f"rows={rows:,} rep {rep}/{args.repeat} {side}: {describe(side, result)}")
        if share <= args.max_others:
            return result
        then = "running it again" if attempt < args.retries else "kept, flagged (others_cpu_s in the results)"
        log(f"other processes used {share:.0%} of a core during that run: {then}")
    return result


def measure_size(runner: Runner, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    from dagforge.devservices.http_files import FileServer

    path = month_file(rows)
    runs: dict[str, list[dict]] = {"project": [], "hand": []}
    with FileServer(path.parent) as server:
        for rep in range(1, args.repeat + 1):
            order = ("project", "hand") if rep % 2 else ("hand", "project")
            for side in order:
                runs[side].append(clean_run(runner, side, server, rows, rep, args))
        profile = None
        if args.profile:
            from harness import RESULTS

            RESULTS.mkdir(parents=True, exist_ok=True)
            profile = str(RESULTS / f"http_to_bq_project_{rows}_{time.strftime('%Y%m%dT%H%M%S')}.prof")
            runner.run("project", server, rows, "prof", profile)
            log(f"cProfile of one project run (not in the medians): {profile}")
    totals = {r["total_amount"] for side in runs.values() for r in side}
    if len(totals) != 1:
        raise RuntimeError(f"rows={rows}: SUM(total_amount) differs between the runs: {sorted(totals)}")
    return {"rows": rows, "file_bytes": path.stat().st_size, "project_runs": runs["project"],
            "hand_runs": runs["hand"], "profile": profile}  # fmt: skip


def describe(side: str, r: dict) -> str:
    common = (
        f"{r['seconds']:.2f} s; download+parse {r['download_parse_s']:.2f}, parquet {r['parquet_write_s']:.2f}, "
        f"upload {r['upload_s']:.2f}, load {r['load_s']:.2f}"
    )
    if side == "project":
        common += f", publish {r['publish_s']:.2f} (extract {r['extract_s']:.2f}; decide {r['decide_s']:.2f})"
    return (
        f"{common}; CPU {r['cpu_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
        f"(before {r['rss_before_mb']:.0f}); emulator CPU BigQuery {r['bigquery_emulator_cpu_s']:.2f} s, "
        f"GCS {r['gcs_emulator_cpu_s']:.2f} s; file server CPU {r['file_server_cpu_s']:.2f} s; "
        f"emulators idle after {r['settle_s']:.1f} s; other processes' CPU {r['others_cpu_s']:.2f} s"
    )


def warm_up(runner: Runner) -> None:
    """One small run of each side, not counted: the emulators' first jobs are slower."""
    from dagforge.devservices.http_files import FileServer

    path = month_file(WARMUP_ROWS)
    with FileServer(path.parent) as server:
        for side in ("project", "hand"):
            runner.run(side, server, WARMUP_ROWS, f"warm{side[0]}")
    log("warm-up done")


# --- report ---------------------------------------------------------------------------------------

MEDIAN_KEYS = (
    "seconds", "extract_s", "load_s", "download_parse_s", "parquet_write_s", "upload_s", "cpu_s",
    "bigquery_emulator_cpu_s", "gcs_emulator_cpu_s", "file_server_cpu_s", "others_cpu_s",
)  # fmt: skip


def medians(runs: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in keys if key in runs[0]}


def summarize(args: argparse.Namespace, sizes: list[dict], extra: dict) -> dict:
    for size in sizes:
        size["project"] = medians(size["project_runs"], (*MEDIAN_KEYS, "publish_s", "decide_s"))
        size["hand"] = medians(size["hand_runs"], MEDIAN_KEYS)
        for side in ("project", "hand"):
            size[side]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in size[f"{side}_runs"])
            size[side]["rss_before_mb"] = max(r["rss_before_mb"] for r in size[f"{side}_runs"])
            size[side]["staged_mib"] = size[f"{side}_runs"][0]["bytes"] / 2**20
            size[side]["parts"] = size[f"{side}_runs"][0]["parts"]
        size["speed_ratio"] = size["hand"]["seconds"] / size["project"]["seconds"]
        size["extract_ratio"] = size["hand"]["extract_s"] / size["project"]["extract_s"]
    return {"rows": [s["rows"] for s in sizes], "repeat": args.repeat, "hand_compression": args.hand_compression,
            "sizes": sizes, **extra}  # fmt: skip


def report(s: dict) -> None:
    for size in s["sizes"]:
        n, p, h = size["rows"], size["project"], size["hand"]
        mib = size["file_bytes"] / 2**20
        print(f"info rows={n} file {mib:.1f} MiB CSV.gz; {s['repeat']} run(s) of each side, medians")
        print(
            f"info rows={n} project end-to-end {p['seconds']:.2f} s (extract {p['extract_s']:.2f} s), "
            f"peak RSS {p['peak_rss_mb']:.0f} MB"
        )
        print(f"info rows={n} hand-written {h['seconds']:.2f} s, peak RSS {h['peak_rss_mb']:.0f} MB")
        print(
            f"info rows={n} project steps: extract {p['extract_s']:.2f} s, load_staging {p['load_s']:.2f} s, "
            f"publish {p['publish_s']:.2f} s (decide {p['decide_s']:.2f} s, not in end-to-end)"
        )
        print(f"info rows={n} hand-written steps: extract {h['extract_s']:.2f} s, load job {h['load_s']:.2f} s")
        for name, m in (("project", p), ("hand-written", h)):
            print(
                f"info rows={n} {name} extract phases: download+parse {m['download_parse_s']:.2f} s, parquet write "
                f"{m['parquet_write_s']:.2f} s, upload {m['upload_s']:.2f} s; client CPU {m['cpu_s']:.2f} s; "
                f"emulator CPU BigQuery {m['bigquery_emulator_cpu_s']:.2f} s, GCS {m['gcs_emulator_cpu_s']:.2f} s; "
                f"RSS before the timer {m['rss_before_mb']:.0f} MB; staged {m['parts']} part(s), "
                f"{m['staged_mib']:.1f} MiB"
            )
        again = {side: sum(r["discarded_runs"] for r in size[f"{side}_runs"]) for side in ("project", "hand")}
        print(
            f"info rows={n} other processes' CPU per run (median): project {p['others_cpu_s']:.2f} s, hand-written "
            f"{h['others_cpu_s']:.2f} s; runs done again because of them: {again['project']} / {again['hand']}"
        )
        print(f"ratio rows={n} speed project/hand-written {size['speed_ratio']:.2f} (target >= 0.9)")
        print(f"ratio rows={n} extract project/hand-written {size['extract_ratio']:.2f} (for information)")
    sizes = s["sizes"]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        label = f"{short(last['rows'])}/{short(first['rows'])}"
        for side, name in (("project", "project"), ("hand", "hand-written")):
            value = last[side]["peak_rss_mb"] / first[side]["peak_rss_mb"]
            print(f"ratio rss {label} {name} {value:.2f}" + (" (target: flat)" if side == "project" else ""))
    print(
        "info the hand-written side does less: no staging table, no interval DELETE + INSERT, no state or file "
        "row, no check (no idempotent publish), so the speed ratio is conservative"
    )
    print(f"info hand-written Parquet compression: {s['hand_compression']} (the project writes zstd)")
    for name in ("bigquery", "gcs"):
        if s.get(f"{name}_emulator_peak_rss_mb"):
            print(f"info peak RSS: {name} emulator {s[f'{name}_emulator_peak_rss_mb']:.0f} MB (in neither side)")
    print(f"info code: git HEAD {s['git_head']}, dagforge sha1 {s['dagforge_sha1']}")
    print("info GCS and BigQuery are local emulators (BigQuery on DuckDB): figures are indicative")
    for size in sizes:
        if size.get("profile"):
            print_profile(size["profile"])


def save(summary: dict) -> None:
    save_summary(f"http_to_bq_{'_'.join(short(n) for n in summary['rows'])}", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="200000", help="comma-separated file sizes in rows (default 200000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side per size, alternating (default 2)")
    parser.add_argument("--keep-dir", type=Path, help="put the emulators' data and logs here and keep them")
    parser.add_argument("--hand-compression", default="snappy", choices=("snappy", "zstd", "none"),
                        help="the hand-written side's Parquet compression (default: pyarrow's, snappy)")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="one more project run per size under cProfile")
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="a run during which other processes used more than this share of a core is run "
                        "again (default 0.10)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=3, help="how often such a run is repeated (default 3)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up runs")
    args = parser.parse_args(argv)
    try:
        args.rows = [int(text.replace("_", "")) for text in args.rows.split(",") if text.strip()]
    except ValueError:
        parser.error("--rows takes comma-separated integers")
    if not args.rows or min(args.rows) < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    return args


def run(args: argparse.Namespace, base: Path) -> dict:
    from dagforge.devservices.gcp import running_gcp

    load, stage = taxi_load()
    files = {rows: month_file(rows) for rows in args.rows}  # before the emulators start
    log(f"files: {', '.join(f'{short(n)} {p.stat().st_size / 2**20:.0f} MiB' for n, p in files.items())}")
    log(f"starting the GCS and BigQuery emulators under {base}")
    with running_gcp(base / "gcp", base) as gcp:
        os.environ.update(gcp.environment())  # before any client is made; the spawned children inherit it
        runner = Runner(gcp, args, load, stage)
        if args.warmup:
            warm_up(runner)
        sizes = [measure_size(runner, rows, args) for rows in args.rows]
        reset_dataset(runner.bq_client)
        extra = {
            "bigquery_emulator_peak_rss_mb": process_peak_mb(gcp.bigquery.process.pid),
            "gcs_emulator_peak_rss_mb": process_peak_mb(gcp.gcs.process.pid),
            "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **code_version(),
        }
        log("stopping the emulators")
    return summarize(args, sizes, extra)


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
