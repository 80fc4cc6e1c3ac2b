"""Real Airflow run orders against a source that keeps changing: every example table must end equal
to its source.

Two orders, for every copying shape (Postgres → Postgres, Postgres → S3 → Postgres, Postgres → GCS →
BigQuery), each order for all shapes at the same time (the machine's CPU is the limit):

* a backfill (``POST /api/v2/backfills``, what ``airflow backfill create`` does) over a few intervals
  at Airflow's default concurrency: up to 10 runs at once, whatever the DAG's ``max_active_runs`` (a
  backfill's runs are counted on their own), next to the scheduled run that unpausing makes;
* two manual runs triggered at the same moment.

Meanwhile a :class:`~dagforge.devservices.writer.SourceWriter` updates rows and moves their cursors,
inserts rows and changes the full-mode tables, and for a Postgres destination a reader holds SHARE
locks on the target tables in bursts (:func:`lock_holder`), so that publishes of different runs
meet. Then: every run succeeded on its first try; the writer stops; one more normal run; every
table equals its source, no staging table is left and each incremental table's watermark is its
source's ``max(cursor)``.

This module runs the example DAGs with two settings of its own, written into the session's copy
of ``pipelines/`` (and taken back at the end): ``max_active_runs: 2``, because with the examples'
``1`` Airflow keeps the second of two manual runs queued until the first ends, so they never
overlap; and ``retries: 0``, so that a failure ends its run at once instead of being retried alone
a minute later, where it would pass and hide a race.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from dagforge.catalog import Entry, build_catalog
from dagforge.devservices.airflow import LocalAirflow
from dagforge.devservices.compare import postgres_columns
from dagforge.devservices.stack import DATABASE_CONNECTIONS, SOURCE_DB, LocalStack
from dagforge.devservices.writer import SourceWriter
from dagforge.loadspec import TableLoad, table_loads
from dagforge.sql.postgres import STATE_TABLE, ident, literal, qualified
from tests.e2e.conftest import REPO, dags, wait_for

pytestmark = pytest.mark.e2e

BACKFILL_FROM = datetime(2024, 1, 1, tzinfo=UTC)
"""The examples' start_date."""
BACKFILL_INTERVALS = 3
RUNS_TIMEOUT_S = 480
"""For one wait on runs; every shape's order runs at the same time, sharing the machine."""
ORDER_TIMEOUT_S = 3 * RUNS_TIMEOUT_S + 120
WRITER_INTERVAL_S = 0.5
WRITER_MAX_S = RUNS_TIMEOUT_S + 120
"""The writer's own bound: it stops by itself even if a test forgets to."""
HOLD_S, HOLD_GAP_S = 4.0, 0.5
"""The destination reader holds SHARE locks for HOLD_S seconds, lets go for HOLD_GAP_S, and again."""
OVERRIDES = {"max_active_runs": 2, "retries": 0}
GOOD_TASK_STATES = {"success", "skipped"}
Results = dict[str, "Outcome | BaseException"]
"""An order's result for every shape, by DAG id: its outcome, or what it raised."""


@dataclass(frozen=True)
class Shape:
    dag_id: str
    interval: timedelta
    writes: tuple[str, ...]
    """One writer tick, in one transaction; ``%(tick)s`` is the tick number, ``%%`` a percent sign."""


# Every table each example reads is touched on every tick: incremental tables get updated rows
# with a moved cursor and new rows, full-mode tables changed values.
SALES = Shape(
    "sales_pg_to_pg",
    timedelta(days=1),
    (
        # full: tb_trx_src
        "UPDATE public.tb_trx_src SET sale_value = sale_value + 0.01 WHERE id %% 97 = %(tick)s::int %% 97",
        "INSERT INTO public.tb_trx_src (id, creation_date, sale_value) "
        "SELECT max(id) + 1, localtimestamp, 9.99 FROM public.tb_trx_src",
        # incremental: customers (updated_at, lookback 10m)
        "UPDATE public.customers SET tier = CASE tier WHEN 'gold' THEN 'basic' ELSE 'gold' END, "
        "updated_at = clock_timestamp() WHERE customer_id %% 101 = %(tick)s::int %% 101",
        "INSERT INTO public.customers (customer_id, name, email, city, tier, updated_at) "
        "SELECT max(customer_id) + 1, 'Writer customer', NULL, 'Osaka', 'basic', clock_timestamp() "
        "FROM public.customers",
    ),
)

FLIGHTS = Shape(
    "flights_to_dwh",
    timedelta(days=1),
    (
        # full: aircrafts, airports
        "UPDATE bookings.aircrafts SET range_km = range_km + 1 WHERE aircraft_code = "
        "(ARRAY['319','320','321','733','763','773','CR2','CN1','SU9'])[1 + %(tick)s::int %% 9]",
        "UPDATE bookings.airports SET airport_name = CASE WHEN airport_name LIKE '%% *' "
        "THEN left(airport_name, -2) ELSE airport_name || ' *' END WHERE airport_code = "
        "(ARRAY['LIS','OPO','MAD','CDG','FRA','ZRH','WAW','KRK','GRU','KIX'])[1 + %(tick)s::int %% 10]",
        # incremental: flights (updated_at, lookback 1h)
        "UPDATE bookings.flights SET status = CASE status WHEN 'Delayed' THEN 'On Time' ELSE 'Delayed' END, "
        "updated_at = clock_timestamp() WHERE flight_id %% 211 = %(tick)s::int %% 211",
        # incremental: bookings (book_date), tickets (issued_at): new ones, and changed ones moved forward
        "INSERT INTO bookings.bookings (book_ref, book_date, total_amount) "
        "SELECT 'W' || lpad((count(*) + 1)::text, 5, '0'), clock_timestamp(), 99.00 "
        "FROM bookings.bookings WHERE book_ref LIKE 'W%%'",
        "UPDATE bookings.bookings SET total_amount = total_amount + 1, book_date = clock_timestamp() "
        "WHERE book_ref = upper(lpad(to_hex(1 + %(tick)s::int * 37 %% 5000), 6, '0'))",
        "INSERT INTO bookings.tickets (ticket_no, book_ref, flight_id, passenger_name, fare_conditions, amount, "
        "issued_at) SELECT lpad((max(ticket_no)::bigint + 1)::text, 13, '0'), "
        "(SELECT max(book_ref) FROM bookings.bookings WHERE book_ref LIKE 'W%%'), 1 + %(tick)s::int %% 2000, "
        "'WRITER PASSENGER', 'Economy', 50.00, clock_timestamp() FROM bookings.tickets",
        "UPDATE bookings.tickets SET amount = amount + 1, issued_at = clock_timestamp() "
        "WHERE ticket_no = lpad((1 + %(tick)s::int * 53 %% 8000)::text, 13, '0')",
    ),
)

OLIST = Shape(
    "olist_to_bigquery",
    timedelta(days=1),
    (
        # full: sellers, products
        "UPDATE olist.sellers SET city = CASE city WHEN 'Maringá' THEN 'Curitiba' ELSE 'Maringá' END "
        "WHERE seller_id = md5('seller' || (1 + %(tick)s::int %% 60))::uuid",
        "UPDATE olist.products SET weight_g = weight_g + 1, "
        "attributes = attributes || jsonb_build_object('writer_tick', %(tick)s::int) "
        "WHERE product_id = md5('product' || (1 + %(tick)s::int %% 400))::uuid",
        # incremental, all on updated_at (orders with lookback 1h)
        "UPDATE olist.customers SET city = CASE city WHEN 'Manaus' THEN 'Belém' ELSE 'Manaus' END, "
        "updated_at = clock_timestamp() WHERE customer_id = md5('customer' || (1 + %(tick)s::int * 7 %% 1500))::uuid",
        "INSERT INTO olist.customers (customer_id, zip_code_prefix, city, state, created_at, updated_at) "
        "VALUES (gen_random_uuid(), '69000', 'Manaus', 'AM', clock_timestamp(), clock_timestamp())",
        "UPDATE olist.orders SET status = CASE status WHEN 'delivered' THEN 'shipped' ELSE 'delivered' END, "
        "updated_at = clock_timestamp() WHERE order_id = md5('order' || (1 + %(tick)s::int * 11 %% 3000))::uuid",
        "UPDATE olist.order_items SET price = price + 1, updated_at = clock_timestamp() "
        "WHERE order_id = md5('order' || (1 + %(tick)s::int * 13 %% 3000))::uuid",
        "UPDATE olist.payments SET payment_value = payment_value + 1, updated_at = clock_timestamp() "
        "WHERE payment_id = 1 + %(tick)s::int * 17 %% 3000",
        # a new order with its item and payment
        "WITH o AS (INSERT INTO olist.orders (order_id, customer_id, status, purchased_at, approved_at, delivered_at, "
        "estimated_delivery_date, updated_at) VALUES (gen_random_uuid(), "
        "md5('customer' || (1 + %(tick)s::int %% 1500))::uuid, 'processing', localtimestamp(0), NULL, NULL, "
        "current_date + 20, clock_timestamp()) RETURNING order_id), "
        "i AS (INSERT INTO olist.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value, "
        "updated_at) SELECT order_id, 1, md5('product' || (1 + %(tick)s::int %% 400))::uuid, "
        "md5('seller' || (1 + %(tick)s::int %% 60))::uuid, 59.90, 12.35, clock_timestamp() FROM o) "
        "INSERT INTO olist.payments (payment_id, order_id, payment_type, installments, payment_value, paid, "
        "updated_at) SELECT (SELECT max(payment_id) + 1 FROM olist.payments), order_id, 'credit_card', 3, 72.25, "
        "true, clock_timestamp() FROM o",
    ),
)

SHAPES = {shape.dag_id: shape for shape in (SALES, FLIGHTS, OLIST)}
CATALOG = {e.dag_id: e for e in build_catalog([REPO / "pipelines"])}


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_order_dags(airflow: LocalAirflow, token: str, pipelines_dir: Path) -> Iterator[None]:
    """The tested DAGs with :data:`OVERRIDES`, in the session's copy of ``pipelines/``; put back after."""
    wait_for(lambda: set(SHAPES) <= set(dags(airflow, token)), 120, "the DAGs")
    originals = {dag_id: (pipelines_dir / f"{dag_id}.yml").read_text() for dag_id in SHAPES}
    for dag_id, text in originals.items():
        assert not any(line.startswith(tuple(OVERRIDES)) for line in text.splitlines()), dag_id
        extra = "".join(f"{key}: {value}\n" for key, value in OVERRIDES.items())
        (pipelines_dir / f"{dag_id}.yml").write_text(f"{text.rstrip()}\n# run-order tests\n{extra}")
    try:
        wait_until_parsed(airflow, token, OVERRIDES["max_active_runs"])
        yield
    finally:
        for dag_id, text in originals.items():
            (pipelines_dir / f"{dag_id}.yml").write_text(text)
        wait_until_parsed(airflow, token, shipped_max_active_runs())


def shipped_max_active_runs() -> int:
    (value,) = {e.pipeline.max_active_runs for dag_id, e in CATALOG.items() if dag_id in SHAPES and e.pipeline}
    return value


def wait_until_parsed(airflow: LocalAirflow, token: str, max_active_runs: int) -> None:
    def parsed() -> bool:
        listed = dags(airflow, token)
        return all(listed[dag_id]["max_active_runs"] == max_active_runs for dag_id in SHAPES)

    wait_for(parsed, 90, f"the DAGs parsed again with max_active_runs {max_active_runs}", interval=1)


# ---- the two orders, each for every shape at once ---------------------------------------------


@dataclass
class Outcome:
    started: list[str]
    """The runs the order started (the backfill's, or the two manual ones)."""
    runs: dict[str, dict]
    """Every run the order made, by run id: ``started`` and a scheduled run that unpausing made."""
    problems: list[str]
    seconds: float
    backfill: dict | None = None


@pytest.fixture(scope="module")
def backfills(airflow: LocalAirflow, token: str, stack: LocalStack, run_order_dags: None) -> Results:
    """A backfill of each DAG, all at once (the machine's CPU is the limit, not one DAG's chain)."""

    def order(shape: Shape) -> Outcome:
        to_date = BACKFILL_FROM + (BACKFILL_INTERVALS - 1) * shape.interval
        backfill: dict = {}

        def start() -> list[str]:
            # created while the DAG is paused: its runs wait queued, and start together once unpaused
            backfill.update(airflow.backfill(token, shape.dag_id, BACKFILL_FROM, to_date))
            runs = airflow.dag_runs(
                token, shape.dag_id, run_type="backfill", logical_date_gte=BACKFILL_FROM.isoformat(),
                logical_date_lte=to_date.isoformat(),
            )  # fmt: skip
            airflow.api("PATCH", f"/api/v2/dags/{shape.dag_id}", token, {"is_paused": False})
            return [r["dag_run_id"] for r in runs]

        outcome = run_order(airflow, token, stack, shape, start, "backfill")
        outcome.backfill = backfill
        return outcome

    return run_for_every_shape(order)


@pytest.fixture(scope="module")
def manual_pairs(airflow: LocalAirflow, token: str, stack: LocalStack, run_order_dags: None) -> Results:
    """Two manual runs of each DAG triggered at the same moment, every DAG at once."""

    def order(shape: Shape) -> Outcome:
        stamp = int(time.time())
        ids = [f"manual__pair_{stamp}_a", f"manual__pair_{stamp}_b"]

        def start() -> list[str]:
            airflow.api("PATCH", f"/api/v2/dags/{shape.dag_id}", token, {"is_paused": False})
            body = [{"logical_date": None, "dag_run_id": run_id} for run_id in ids]
            at_once(*(partial(airflow.api, "POST", f"/api/v2/dags/{shape.dag_id}/dagRuns", token, b) for b in body))
            return ids

        return run_order(airflow, token, stack, shape, start, "pair")

    return run_for_every_shape(order)


@pytest.mark.parametrize("dag_id", list(SHAPES))
def test_a_backfill_at_default_concurrency_while_the_source_changes(backfills: Results, dag_id: str) -> None:
    outcome = outcome_of(backfills, dag_id)

    assert outcome.backfill is not None
    assert outcome.backfill["max_active_runs"] == 10, outcome.backfill  # Airflow's default, not the DAG's 2
    assert len(outcome.started) == BACKFILL_INTERVALS, outcome.started
    if outcome.problems:
        pytest.fail(f"{dag_id} after a backfill:\n" + "\n".join(outcome.problems), pytrace=False)
    assert max_overlap(outcome.runs, outcome.started) >= 2, f"the backfill's runs never overlapped: {outcome.runs}"


@pytest.mark.parametrize("dag_id", list(SHAPES))
def test_two_manual_runs_at_once_while_the_source_changes(manual_pairs: Results, dag_id: str) -> None:
    outcome = outcome_of(manual_pairs, dag_id)

    if outcome.problems:
        pytest.fail(f"{dag_id} after two overlapping manual runs:\n" + "\n".join(outcome.problems), pytrace=False)
    assert max_overlap(outcome.runs, outcome.started) == 2, f"the two manual runs did not overlap: {outcome.runs}"


# ---- what both orders do and check ------------------------------------------------------------


def run_for_every_shape(order: Callable[[Shape], Outcome]) -> Results:
    """``order`` for every shape, each in its own thread; an exception is the shape's result."""
    results: Results = {}

    def work(shape: Shape) -> None:
        try:
            results[shape.dag_id] = order(shape)
        except BaseException as exc:  # the shape's test re-raises it
            results[shape.dag_id] = exc

    threads = [
        threading.Thread(target=work, args=(shape,), name=shape.dag_id, daemon=True) for shape in SHAPES.values()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + ORDER_TIMEOUT_S
    for thread in threads:
        thread.join(max(0, deadline - time.monotonic()))
    for thread in threads:
        results.setdefault(thread.name, TimeoutError(f"{thread.name}: the order took over {ORDER_TIMEOUT_S} s"))
    return results


def outcome_of(results: Results, dag_id: str) -> Outcome:
    result = results[dag_id]
    if isinstance(result, BaseException):
        raise result
    return result


def at_once(*calls: Callable[[], object]) -> None:
    """Run the calls in threads released by one barrier, so they reach the server together."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        try:
            barrier.wait(10)
            fn()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(fn,)) for fn in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]


def run_order(
    airflow: LocalAirflow, token: str, stack: LocalStack, shape: Shape, start: Callable[[], list[str]], label: str
) -> Outcome:
    """Runs from ``start`` while the writer writes; then one normal run; then every end-state check."""
    dag_id = shape.dag_id
    before = {r["dag_run_id"] for r in airflow.dag_runs(token, dag_id)}
    began = time.monotonic()
    writer = SourceWriter(
        stack.servers["source"].dsn(SOURCE_DB),
        shape.writes,
        interval_s=WRITER_INTERVAL_S,
        max_seconds=WRITER_MAX_S,
        name=f"writer-{dag_id}",
    )
    with writer, lock_holder(stack, CATALOG[dag_id]) as holder:
        writer.wait(1, timeout=30)
        started = start()
        airflow.wait_for_runs(token, dag_id, started, RUNS_TIMEOUT_S)
        ticks_while_running = writer.ticks
        # a scheduled run made by unpausing is part of the order too
        runs = {r["dag_run_id"]: r for r in airflow.dag_runs(token, dag_id) if r["dag_run_id"] not in before}
        runs = airflow.wait_for_runs(token, dag_id, runs, RUNS_TIMEOUT_S)
    problems = [f"run {run_id}: {p}" for run_id in sorted(runs) for p in run_problems(airflow, token, runs[run_id])]
    if ticks_while_running < 2:
        problems.append(f"the writer committed only {ticks_while_running} ticks while the runs ran")
    if holder is not None and holder.ticks < 1:
        problems.append("the destination reader never held its locks while the runs ran")

    final_id = f"manual__after_{label}_{int(time.time())}"
    airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": None, "dag_run_id": final_id})
    final = airflow.wait_for_runs(token, dag_id, [final_id], RUNS_TIMEOUT_S)[final_id]
    problems += [f"final run {final_id}: {p}" for p in run_problems(airflow, token, final)]
    problems += table_problems(stack, CATALOG[dag_id])
    seconds = time.monotonic() - began
    print(
        f"{dag_id} {label}: runs {sorted(runs)}, writer ticks {writer.ticks} "
        f"({ticks_while_running} while they ran), {seconds:.0f} s"
    )
    return Outcome(started, runs, problems, seconds)


@contextmanager
def lock_holder(stack: LocalStack, entry: Entry) -> Iterator[SourceWriter | None]:
    """For a Postgres destination, a reader that takes SHARE locks on every target table in bursts.

    Like a non-concurrent CREATE INDEX or a report reading under ``LOCK ... IN SHARE MODE``: writes
    wait, and publishes of two runs that arrive during one burst start together when it ends. Without
    it, a publish transaction lasts milliseconds and two runs' publishes almost never meet, however
    many runs overlap, so a race between them would pass unseen.
    """
    assert entry.pipeline is not None
    loads = table_loads(entry.config)
    if entry.pipeline.destination.kind != "postgres":
        yield None
        return
    (connection,) = {load.destination.connection for load in loads}
    role, database = DATABASE_CONNECTIONS[connection]
    statements = ["SET LOCAL lock_timeout = '30s'"]
    for load in loads:
        table = qualified(load.destination.schema, load.destination.table)
        # the first publish creates the table: lock it once it exists
        statements.append(
            f"DO $$ BEGIN IF to_regclass({literal(table)}) IS NOT NULL THEN "
            f"LOCK TABLE {table} IN SHARE MODE; END IF; END $$"
        )
    statements.append(f"SELECT pg_sleep({HOLD_S})")
    holder = SourceWriter(
        stack.servers[role].dsn(database),
        [statement.replace("%", "%%") for statement in statements],
        interval_s=HOLD_GAP_S,
        max_seconds=WRITER_MAX_S,
        name=f"lock-holder-{entry.dag_id}",
    )
    with holder:
        yield holder


def run_problems(airflow: LocalAirflow, token: str, run: dict) -> list[str]:
    """Anything short of every task succeeding (or skipping: nothing new) on its first try."""
    problems = [] if run["state"] == "success" else [f"state {run['state']}"]
    for ti in airflow.task_instances(token, run["dag_id"], run["dag_run_id"]):
        if ti["state"] not in GOOD_TASK_STATES or ti["try_number"] > 1:
            errors = task_errors(airflow.home, ti)
            problems.append(f"task {ti['task_id']} {ti['state']} (try {ti['try_number']}){errors}")
    return problems


def task_errors(home: Path, ti: dict) -> str:
    """The error lines of a task instance's log files, short."""
    folder = home / "logs" / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}" / f"task_id={ti['task_id']}"
    found: list[str] = []
    for log in sorted(folder.glob("attempt=*.log")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") not in ("error", "critical"):
                continue
            details = [f"{d.get('exc_type')}: {d.get('exc_value')}" for d in record.get("error_detail") or []]
            message = f"{log.stem}: {record.get('event')}" + (f" [{'; '.join(details)}]" if details else "")
            if message not in found:
                found.append(message[:600])
    return "".join(f"\n      {m}" for m in found[:4])


def table_problems(stack: LocalStack, entry: Entry) -> list[str]:
    assert entry.pipeline is not None
    loads = table_loads(entry.config)
    assert loads, entry.dag_id
    problems = []
    for load in loads:
        result = stack.compare(entry, load)
        if not result.same or result.source_rows == 0:
            problems.append(
                f"{load.destination.schema}.{load.destination.table} differs from {load.source.schema}."
                f"{load.source.table}: {result.target_rows} rows, source {result.source_rows}"
            )
    if entry.pipeline.destination.kind == "postgres":
        problems += leftover_staging(stack, loads)
        problems += [p for load in loads if load.cursor for p in watermark_problems(stack, load)]
    return problems


def leftover_staging(stack: LocalStack, loads: list[TableLoad]) -> list[str]:
    problems = []
    for connection, schema in sorted({(load.destination.connection, load.destination.schema) for load in loads}):
        with stack.connect(connection) as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %(schema)s AND c.relname LIKE %(pattern)s ORDER BY 1",
                {"schema": schema, "pattern": r"\_dagforge\_stg\_%"},
            ).fetchall()
        problems += [f"staging table {schema}.{name} left behind" for (name,) in rows]
    return problems


def watermark_problems(stack: LocalStack, load: TableLoad) -> list[str]:
    cursor = load.cursor or ""
    with stack.connect(load.destination.connection) as target:
        row = target.execute(
            f"SELECT watermark FROM {qualified(load.destination.schema, STATE_TABLE)} "
            "WHERE pipeline = %(pipeline)s AND table_name = %(table)s",
            {"pipeline": load.pipeline, "table": load.destination.table},
        ).fetchone()
    where = f"{load.destination.schema}.{load.destination.table}"
    if row is None or row[0] is None:
        return [f"no watermark for {where}"]
    with stack.connect(load.source.connection) as source:
        cursor_type = dict(postgres_columns(source, load.source.schema, load.source.table))[cursor]
        source_max, same = source.execute(
            f"SELECT max({ident(cursor)})::text, max({ident(cursor)}) = CAST(%(watermark)s AS {cursor_type}) "
            f"FROM {qualified(load.source.schema, load.source.table)}",
            {"watermark": row[0]},
        ).fetchone()
    return [] if same else [f"watermark of {where} is {row[0]}, the source's max({cursor}) is {source_max}"]


def max_overlap(runs: dict[str, dict], run_ids: list[str]) -> int:
    """The most runs of ``run_ids`` that were running at the same instant (from their start and end)."""
    events = []
    for run_id in run_ids:
        run = runs[run_id]
        if run["start_date"] and run["end_date"]:
            events += [(datetime.fromisoformat(run["start_date"]), 1), (datetime.fromisoformat(run["end_date"]), -1)]
    peak = current = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak
