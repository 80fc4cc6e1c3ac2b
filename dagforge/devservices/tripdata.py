"""Taxi-trip-like monthly CSV.gz files, for the demo, the tests and ``bench/http_to_bq.py``.

Deterministic per (year, month, seed): the same call writes the same bytes, so an HTTP server
serving them gives stable ETags. The columns are the NYC yellow-taxi file's (a subset), with the
types ``pipelines/taxi_to_bigquery.yml`` declares. Written in blocks with Arrow's CSV writer, every
column built by numpy and Arrow compute (no Python per row), so a million rows take about 5 s
(most of it gzip) and little memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
from pathlib import Path
from typing import Any

COLUMNS: dict[str, str] = {
    "VendorID": "integer",
    "tpep_pickup_datetime": "timestamp",
    "tpep_dropoff_datetime": "timestamp",
    "passenger_count": "integer",
    "trip_distance": "double precision",
    "RatecodeID": "integer",
    "store_and_fwd_flag": "text",
    "PULocationID": "integer",
    "DOLocationID": "integer",
    "payment_type": "integer",
    "fare_amount": "numeric(10,2)",
    "tip_amount": "numeric(10,2)",
    "total_amount": "numeric(10,2)",
}
"""What ``pipelines/taxi_to_bigquery.yml`` declares (the same order as the file)."""

BLOCK_ROWS = 200_000
GZIP_LEVEL = 6
"""gzip's own default (``gzip`` on the command line): the file is 1 % larger than at Python's 9 and
written twice as fast; compression was most of the time at 9."""


def file_name(year: int, month: int) -> str:
    return f"yellow_tripdata_{year:04d}-{month:02d}.csv.gz"


def _money(cents: Any) -> Any:
    """Integer cents (a numpy int64 array) as ``12.50``-style text: the cents are the unscaled
    values of a decimal128(18,2) array (16 bytes each, little-endian), which Arrow prints."""
    import numpy as np
    import pyarrow as pa

    unscaled = np.empty((len(cents), 2), dtype=np.int64)
    unscaled[:, 0] = cents
    unscaled[:, 1] = cents >> 63  # the high word: the sign extended
    decimals = pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(unscaled)])
    return decimals.cast(pa.string())


def write_month(folder: Path, year: int, month: int, rows: int, *, seed: int = 0, bad_lines: int = 0) -> Path:
    """``folder/yellow_tripdata_YYYY-MM.csv.gz`` with ``rows`` trips in that month (and ``bad_lines``
    rows whose fare is not a number, spread through the file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    path = folder / file_name(year, month)
    start = dt.datetime(year, month, 1)
    seconds = ((dt.datetime(year + month // 12, month % 12 + 1, 1)) - start).total_seconds()
    rng = np.random.default_rng([seed, year, month])
    bad_at = set(np.linspace(0, rows - 1, bad_lines, dtype=np.int64).tolist()) if bad_lines else set()
    with gzip.GzipFile(path, "wb", compresslevel=GZIP_LEVEL, mtime=0) as out:
        out.write((",".join(COLUMNS) + "\n").encode())
        for first in range(0, rows, BLOCK_ROWS):
            count = min(BLOCK_ROWS, rows - first)
            pickup = np.datetime64(start, "s") + rng.integers(0, int(seconds), count).astype("timedelta64[s]")
            dropoff = pickup + rng.integers(60, 3600, count).astype("timedelta64[s]")
            fare_cents = rng.integers(250, 9000, count)
            tip_cents = rng.integers(0, 2000, count)
            fare = _money(fare_cents)
            if bad_at:
                bad = np.isin(np.arange(first, first + count), np.fromiter(bad_at, np.int64, len(bad_at)))
                fare = pc.if_else(pa.array(bad), pa.scalar("n/a"), fare)
            total = fare_cents + tip_cents + 100
            table = pa.table({
                "VendorID": rng.integers(1, 3, count, dtype=np.int32),
                "tpep_pickup_datetime": pa.array(pickup).cast(pa.string()),
                "tpep_dropoff_datetime": pa.array(dropoff).cast(pa.string()),
                "passenger_count": rng.integers(1, 7, count, dtype=np.int32),
                "trip_distance": np.round(rng.gamma(2.0, 1.5, count), 2),
                "RatecodeID": rng.integers(1, 6, count, dtype=np.int32),
                "store_and_fwd_flag": pa.array(np.where(rng.random(count) < 0.01, "Y", "N")),
                "PULocationID": rng.integers(1, 266, count, dtype=np.int32),
                "DOLocationID": rng.integers(1, 266, count, dtype=np.int32),
                "payment_type": rng.integers(1, 5, count, dtype=np.int32),
                "fare_amount": fare,
                "tip_amount": _money(tip_cents),
                "total_amount": _money(total),
            })  # fmt: skip
            options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
            pa_csv.write_csv(table, out, write_options=options)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--months", default="2024-01,2024-02,2024-03", help="comma-separated YYYY-MM")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for text in args.months.split(","):
        year, month = map(int, text.split("-"))
        print(write_month(args.folder, year, month, args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
