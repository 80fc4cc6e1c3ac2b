"""``make airflow``: a real local Airflow (no Docker) over this repository, with the demo's services.

Starts the local stack (source and warehouse PostgreSQL, S3 server, Slack webhook), seeds the
source, keeps Airflow's metadata in a database of the warehouse server, runs ``airflow
standalone`` over ``dags/`` and prints the URL and login. Ctrl-C stops everything.

``--celery`` (``make airflow CELERY=1``): the CeleryExecutor instead, with a local Redis as its
broker and two ``airflow celery worker`` processes (``worker-1``, ``worker-2``), as the compose
file's ``celery`` profile runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path

from dagforge.catalog import REPO_ROOT
from dagforge.devservices.airflow import ADMIN_USER, start_airflow, start_celery_airflow
from dagforge.devservices.redis import running_redis
from dagforge.devservices.stack import local_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".dagforge" / "airflow")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--password", default="dagforge")
    parser.add_argument("--celery", action="store_true", help="CeleryExecutor, a local Redis and two workers")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (with --celery)")
    args = parser.parse_args(argv)
    # stop cleanly on Ctrl-C and on `kill` (a shell may start background jobs ignoring SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    shutil.rmtree(args.workdir, ignore_errors=True)
    with local_stack(args.workdir) as stack, contextlib.ExitStack() as stack_services:
        stack.seed()
        warehouse = stack.servers["warehouse"]
        warehouse.create_database("airflow")
        metadata = warehouse.dsn("airflow").replace("postgresql://", "postgresql+psycopg://", 1)
        home, pipelines = args.workdir / "home", REPO_ROOT / "pipelines"
        if args.celery:
            redis = stack_services.enter_context(running_redis(args.workdir))
            print(f"starting Airflow with the CeleryExecutor, {args.workers} workers, Redis at {redis.url} ...")
            home.mkdir(parents=True, exist_ok=True)
            airflow = start_celery_airflow(home, metadata, pipelines, redis.url, workers=args.workers,
                                           port=args.port, password=args.password)  # fmt: skip
        else:
            print("starting Airflow (about 30 s) ...", flush=True)
            airflow = start_airflow(home, metadata, pipelines, port=args.port, password=args.password)
        print(f"\nAirflow UI: {airflow.url}  login: {ADMIN_USER} / {args.password}")
        print(f"logs: {airflow.home}/*.log   Ctrl-C stops Airflow and the local services\n", flush=True)
        try:
            while airflow.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            airflow.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
