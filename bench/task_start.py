"""Task start-up overhead in a real Airflow: dagforge's operators against bare PythonOperator tasks (issue 13).

Usage (from the repo root)::

    .venv/bin/python bench/task_start.py [--rounds R] [--keep-dir DIR]

Starts what ``make airflow`` starts (the local stack, seeded; Airflow's metadata in the warehouse
server; ``airflow standalone`` with the LocalExecutor over the example pipelines), with one change:
Airflow's DAG folder is a temporary one holding a link to this checkout's ``dags/pipelines.py``
and a bare DAG file written by this script (``bench_bare_python``: six ``PythonOperator`` tasks
doing nothing, two task groups of three in a row, the shape of ``sales_pg_to_pg``; its callable
also writes the names of its process's modules, for the parse below). After a warm-up run of each
DAG (for ``sales_pg_to_pg`` the scheduled run its unpausing creates), R rounds trigger one run of
each DAG through the REST API, one after the other, alternating which goes first
(``sales_pg_to_pg`` with ``full_refresh``, so every run does the same work in all six tasks).

For every task instance of the measured runs, from the REST API:

* ``start_to_execute_s``: from the task instance's ``start_date`` (set by the supervisor right after
  it forks the task process) to the moment ``execute()`` begins: the timestamp of the task log's
  ``::endgroup::`` line, which Airflow's task runner logs immediately before it calls ``execute``
  (after DAG parse, template context, ``pre_execute`` and ``on_execute_callback``). The bare DAG's
  callable logs a line of its own as the first thing in ``execute``; its distance from the marker
  is reported (``marker_to_callable_s``) as a check of the marker;
* where that time goes: ``before_parse_s`` (start_date to the start of the DAG file parse: the API
  call, start-up message, logging set-up), ``bundle_s`` and ``parse_s`` (Airflow's own
  ``bundle_prepare_ms`` and ``dag_file_parse_ms`` from the task log's "Worker startup parse
  complete" line) and ``after_parse_s`` (parse end to ``execute()``: template context, hooks);
* ``queued_s`` (queued to start, the executor's pick-up; not part of the overhead) and
  ``execute_s`` (``execute()`` to the task's ``end_date``).

Where the log has the lines, the parse is split further: at dag-factory's first line ("Loading
DAGs from", the committed loader), into ``to_dagfactory_s`` (the loader file's imports and
dagforge's catalog) and ``dagfactory_s`` (the build); and ``loader_s`` is the time the loader's own
summary line reports ("dagforge: … in N s", where the loader has one): its work after its imports.

A run's wall time is its ``end_date - start_date`` (a run's own queueing before it starts is not
in it), split into ``in_tasks_s`` (the longer task group's three tasks, start to end, summed) and
``between_tasks_s`` (the rest: the scheduler's hand-offs between them). After the runs, with
Airflow stopped, the loader file is parsed once more for one task, with ``-X importtime``, in a
fresh interpreter that first imports every module a bare task process held: the parse split into
module imports, by top-level package, and the rest (the loader's own work).

Progress goes to stderr, information to stdout; the last line is ``task_start
dagforge_median_s=… bare_median_s=… ratio=… run_wall_s=…`` (medians over the measured runs;
ratio = dagforge / bare, issue 13's target is at most 1.5; run_wall_s is sales_pg_to_pg's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import bench_main, log, save_summary  # puts the repository on sys.path

from dagforge.catalog import REPO_ROOT
from dagforge.devservices.airflow import LocalAirflow, airflow_environment, start_airflow
from dagforge.devservices.stack import local_stack

DAGFORGE_DAG = "sales_pg_to_pg"
FIRST_TASK = "tb_trx_src.check_tb_trx_src"
BARE_DAG = "bench_bare_python"
BARE_FILE = "bench_bare_python.py"
EXECUTE_MARKER = "::endgroup::"
"""Logged by Airflow's task runner (``_execute_task``) right before it calls the task's ``execute``."""
PARSE_EVENT = "Worker startup parse complete"
CALLABLE_EVENT = "bench callable"
DAGBAG_EVENT = "Filling up the DagBag from"
"""Airflow's DagBag, as it starts importing the DAG file."""
DAGFACTORY_EVENT = "Loading DAGs from"
"""dag-factory's ``load_yaml_dags``, as it starts building (after dagforge's imports and catalog)."""
LOADER_LINE = re.compile(r"^dagforge: .* in (?P<seconds>[0-9.]+) s\b")
"""The loader's own summary line, where it has one (issue 13 item 7), with the time it took."""
OPTIONAL_PHASES = ("to_dagfactory_s", "dagfactory_s", "loader_s", "marker_to_callable_s")
RUN_TIMEOUT_S = 300
PHASES = ("start_to_execute_s", "before_parse_s", "bundle_s", "parse_s", "after_parse_s", "queued_s", "execute_s")

BARE_DAG_SOURCE = f'''"""Written by bench/task_start.py: bare PythonOperator tasks, the shape of {DAGFORGE_DAG}."""

import importlib.util
import json
import logging
import sys

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TaskGroup

MODULES_FILE = __MODULES_FILE__


def mark():
    """First thing in execute: a log line; where this process would import dagforge from (without importing
    it); the modules this task process holds, which the bench loads before its parse outside Airflow."""
    spec = importlib.util.find_spec("dagforge")
    logging.getLogger("bench").info("{CALLABLE_EVENT} dagforge=%s", spec.origin if spec else None)
    with open(MODULES_FILE, "w") as out:
        json.dump(list(sys.modules), out)


with DAG(dag_id="{BARE_DAG}", schedule=None, catchup=False, tags=["bench"]):
    for chain in ("a", "b"):  # like a dagforge table's task group: check >> stage >> publish
        with TaskGroup(chain):
            check = PythonOperator(task_id="check", python_callable=mark)
            stage = PythonOperator(task_id="stage", python_callable=mark)
            publish = PythonOperator(task_id="publish", python_callable=mark)
            check >> stage >> publish
'''

SPLIT_CHILD = r"""
import importlib, json, sys, time
failed = 0
for name in json.load(open(sys.argv[3])):  # what a bare task process held, in import order
    if name not in sys.modules and not name.startswith("__"):
        try:
            importlib.import_module(name)
        except BaseException:
            failed += 1
from airflow.dag_processing.dagbag import BundleDagBag
sys.stderr.write("BENCH-PARSE-STARTS\n")
sys.stderr.flush()
started = time.perf_counter()
bag = BundleDagBag(dag_folder=sys.argv[1], safe_mode=False, load_op_links=False, bundle_path=sys.argv[2],
                   bundle_name="dags-folder")
parse_s = time.perf_counter() - started
print(json.dumps({"parse_s": parse_s, "dags": sorted(bag.dags), "errors": len(bag.import_errors),
                  "preloaded": len(sys.modules), "preload_failed": failed}))
"""


def make_dags_folder(folder: Path, modules_file: Path) -> Path:
    """Airflow's DAG folder for the run: this checkout's loader file (a link) and the bare DAG."""
    folder.mkdir(parents=True)
    (folder / "pipelines.py").symlink_to(REPO_ROOT / "dags" / "pipelines.py")
    (folder / BARE_FILE).write_text(BARE_DAG_SOURCE.replace("__MODULES_FILE__", repr(str(modules_file))))
    return folder


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def importtime_by_package(stderr: str) -> dict[str, float]:
    """Self import time (s) by top-level package, of the imports after the child's marker line."""
    by_package: dict[str, float] = defaultdict(float)
    after = stderr.split("BENCH-PARSE-STARTS\n", 1)[-1]
    for line in after.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        by_package[name.split(".")[0]] += int(self_us) / 1e6
    return dict(sorted(by_package.items(), key=lambda kv: -kv[1]))


def parse_split(dags: Path, env: dict[str, str], modules_file: Path) -> dict[str, Any]:
    """One parse of the loader file for one task of ``sales_pg_to_pg``, in a fresh interpreter holding the
    modules a bare task process held (as a task process starts), with its imports by top-level package."""
    child_env = {**env, "_AIRFLOW_PARSING_CONTEXT_DAG_ID": DAGFORGE_DAG, "_AIRFLOW_PARSING_CONTEXT_TASK_ID": FIRST_TASK}
    command = [sys.executable, "-X", "importtime", "-c", SPLIT_CHILD, str(dags / "pipelines.py"), str(dags)]
    done = subprocess.run([*command, str(modules_file)], env=child_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the parse outside Airflow failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if DAGFORGE_DAG not in result["dags"]:
        raise SystemExit(f"the parse outside Airflow built {result['dags']}, not {DAGFORGE_DAG}")
    imports = importtime_by_package(done.stderr)
    total = sum(imports.values())
    return {
        **result,
        "imports_s": total,
        "rest_s": result["parse_s"] - total,
        "imports_by_package_s": {name: round(s, 3) for name, s in list(imports.items())[:8]},
    }


def dagforge_origin(env: dict[str, str]) -> str:
    """Where a child with this environment imports dagforge from (PYTHONPATH wins over the editable install)."""
    done = subprocess.run(
        [sys.executable, "-c", "import dagforge; print(dagforge.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def wait_listed(airflow: LocalAirflow, token: str, dag_ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listed = {d["dag_id"] for d in airflow.api("GET", "/api/v2/dags?limit=100", token)["dags"]}
        if dag_ids <= listed:
            return
        if time.monotonic() > deadline:
            errors = airflow.api("GET", "/api/v2/importErrors", token)
            raise TimeoutError(f"DAGs {sorted(dag_ids - listed)} not listed after {timeout:.0f} s; {errors}")
        time.sleep(2)


def trigger(airflow: LocalAirflow, token: str, dag_id: str, conf: dict[str, Any]) -> str:
    run = airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def warm_up(airflow: LocalAirflow, token: str, dag_id: str, conf: dict[str, Any], appear_s: float) -> list[str]:
    """Unpause; wait out the run that unpausing a scheduled DAG creates, or trigger one; returns the run ids."""
    airflow.api("PATCH", f"/api/v2/dags/{dag_id}", token, {"is_paused": False})
    deadline = time.monotonic() + appear_s
    while not (runs := airflow.dag_runs(token, dag_id)) and time.monotonic() < deadline:
        time.sleep(1)
    run_ids = [r["dag_run_id"] for r in runs] or [trigger(airflow, token, dag_id, conf)]
    finished = airflow.wait_for_runs(token, dag_id, run_ids, RUN_TIMEOUT_S)
    states = ", ".join(f"{run_id} {run['state']}" for run_id, run in finished.items())
    log(f"warm-up {dag_id}: {states}")
    return run_ids


def task_log(airflow: LocalAirflow, token: str, dag_id: str, run_id: str, ti: dict) -> list[dict]:
    quoted = urllib.parse.quote(run_id, safe="")
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
    content = airflow.api("GET", f"{path}?full_content=true", token)["content"]
    return [e for e in content if isinstance(e, dict) and e.get("timestamp")]


def task_timings(ti: dict, events: list[dict]) -> dict[str, Any]:
    """The phases of one task instance from its API record and its log lines' timestamps."""
    parsed = first_event(events, PARSE_EVENT)
    markers = [ts(e["timestamp"]) for e in events if e.get("event") == EXECUTE_MARKER]
    if parsed is None or not any(at >= ts(parsed["timestamp"]) for at in markers):
        raise SystemExit(f"{ti['task_id']}: no {PARSE_EVENT!r} line, or no {EXECUTE_MARKER!r} after it, in its log")
    parsed_at = ts(parsed["timestamp"])
    execute_at = next(at for at in markers if at >= parsed_at)
    start, end = ts(ti["start_date"]), ts(ti["end_date"])
    parse_s, bundle_s = parsed["dag_file_parse_ms"] / 1000, parsed["bundle_prepare_ms"] / 1000
    timings = {
        "task_id": ti["task_id"],
        "state": ti["state"],
        "start_to_execute_s": (execute_at - start).total_seconds(),
        "before_parse_s": (parsed_at - start).total_seconds() - parse_s - bundle_s,
        "bundle_s": bundle_s,
        "parse_s": parse_s,
        "after_parse_s": (execute_at - parsed_at).total_seconds(),
        "queued_s": (start - ts(ti["queued_when"])).total_seconds() if ti.get("queued_when") else None,
        "execute_s": (end - execute_at).total_seconds(),
    }
    return {**timings, **log_split(events, parsed_at, execute_at)}


def first_event(events: list[dict], prefix: str) -> dict | None:
    return next((e for e in events if str(e.get("event", "")).startswith(prefix)), None)


def log_split(events: list[dict], parsed_at: datetime, execute_at: datetime) -> dict[str, Any]:
    """Finer phases where the log has the lines: the parse before and after dag-factory starts building
    (``to_dagfactory_s``: the loader file's imports and the catalog; ``dagfactory_s``), the time the
    loader reports for itself (``loader_s``: its work after its module's imports), and, in the bare
    DAG, the callable's own first line (``marker_to_callable_s``, the check of the execute marker)."""
    split: dict[str, Any] = {}
    filling, factory = first_event(events, DAGBAG_EVENT), first_event(events, DAGFACTORY_EVENT)
    if filling and factory:
        split["to_dagfactory_s"] = (ts(factory["timestamp"]) - ts(filling["timestamp"])).total_seconds()
        split["dagfactory_s"] = (parsed_at - ts(factory["timestamp"])).total_seconds()
    if loader := next((m for e in events if (m := LOADER_LINE.match(str(e.get("event", ""))))), None):
        split["loader_s"] = float(loader["seconds"])
    if callable_line := first_event(events, CALLABLE_EVENT):
        split["marker_to_callable_s"] = (ts(callable_line["timestamp"]) - execute_at).total_seconds()
        split["callable_says"] = callable_line["event"]
    return split


def measure_run(airflow: LocalAirflow, token: str, dag_id: str, run_id: str) -> dict[str, Any]:
    run = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}", token)
    if run["state"] != "success":
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}; see {airflow.home / 'logs'}")
    tasks = []
    for ti in sorted(airflow.task_instances(token, dag_id, run_id), key=lambda t: t["start_date"] or ""):
        if ti["start_date"] is None:  # skipped by its upstream: no process was started
            continue
        tasks.append(task_timings(ti, task_log(airflow, token, dag_id, run_id, ti)))
    chains: dict[str, float] = defaultdict(float)
    for task in tasks:  # a task group (a table, in dagforge) is a chain of three tasks
        chains[task["task_id"].split(".")[0]] += task["start_to_execute_s"] + task["execute_s"]
    wall_s = (ts(run["end_date"]) - ts(run["start_date"])).total_seconds()
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "wall_s": wall_s,
        "in_tasks_s": max(chains.values()),
        "between_tasks_s": wall_s - max(chains.values()),
        "queued_s": (ts(run["start_date"]) - ts(run["queued_at"])).total_seconds() if run.get("queued_at") else None,
        "tasks": tasks,
    }


def run_rounds(airflow: LocalAirflow, token: str, rounds: int) -> dict[str, list[dict]]:
    """Warm-up, then ``rounds`` runs of each DAG, one at a time, alternating which goes first."""
    confs = {DAGFORGE_DAG: {"full_refresh": True}, BARE_DAG: {}}
    for dag_id, appear_s in ((DAGFORGE_DAG, 20), (BARE_DAG, 0)):
        warm_up(airflow, token, dag_id, confs[dag_id], appear_s)
    measured: dict[str, list[dict]] = {DAGFORGE_DAG: [], BARE_DAG: []}
    for i in range(rounds):
        for dag_id in (DAGFORGE_DAG, BARE_DAG) if i % 2 == 0 else (BARE_DAG, DAGFORGE_DAG):
            run_id = trigger(airflow, token, dag_id, confs[dag_id])
            airflow.wait_for_runs(token, dag_id, [run_id], RUN_TIMEOUT_S, poll_s=1)
            result = measure_run(airflow, token, dag_id, run_id)
            medians = statistics.median(t["start_to_execute_s"] for t in result["tasks"])
            log(f"round {i + 1} {dag_id}: wall {result['wall_s']:.1f} s, start→execute median {medians:.2f} s")
            measured[dag_id].append(result)
    return measured


def phase_medians(runs: list[dict]) -> dict[str, float]:
    tasks = [t for r in runs for t in r["tasks"]]
    medians = {p: statistics.median(t[p] for t in tasks if t.get(p) is not None) for p in PHASES}
    for phase in OPTIONAL_PHASES:
        if values := [t[phase] for t in tasks if phase in t]:
            medians[phase] = statistics.median(values)
    return medians


def summarize(measured: dict[str, list[dict]], context: dict[str, Any]) -> dict[str, Any]:
    ours, bare = phase_medians(measured[DAGFORGE_DAG]), phase_medians(measured[BARE_DAG])
    return {
        **context,
        "dagforge_median_s": ours["start_to_execute_s"],
        "bare_median_s": bare["start_to_execute_s"],
        "ratio": ours["start_to_execute_s"] / bare["start_to_execute_s"],
        "run_wall_s": statistics.median(r["wall_s"] for r in measured[DAGFORGE_DAG]),
        "bare_run_wall_s": statistics.median(r["wall_s"] for r in measured[BARE_DAG]),
        "in_tasks_s": {d: statistics.median(r["in_tasks_s"] for r in runs) for d, runs in measured.items()},
        "between_tasks_s": {d: statistics.median(r["between_tasks_s"] for r in runs) for d, runs in measured.items()},
        "tasks_per_run": {d: [len(r["tasks"]) for r in runs] for d, runs in measured.items()},
        "bare_callable_says": measured[BARE_DAG][0]["tasks"][0].get("callable_says"),
        "phases": {DAGFORGE_DAG: ours, BARE_DAG: bare},
        "runs": measured,
        "load_avg_end": os.getloadavg(),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines()),
    }


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    modules_file = base / "bare_task_modules.json"
    dags = make_dags_folder(base / "dags", modules_file)
    context: dict[str, Any] = {"rounds": args.rounds, "repo": str(REPO_ROOT), **git_state()}
    context["load_avg_start"] = os.getloadavg()
    context["bytecode_writing"] = not os.environ.get("PYTHONDONTWRITEBYTECODE")
    context["pycache_prefix"] = os.environ.get("PYTHONPYCACHEPREFIX")
    log(f"starting the local stack under {base} (code under test: {REPO_ROOT})")
    with local_stack(base / "stack") as stack:
        stack.seed()
        parse_db = f"sqlite:///{base / 'parse.db'}"
        env = airflow_environment(base / "parse-home", 0, parse_db, REPO_ROOT / "pipelines", "unused")
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
        context["dagforge_imported_from"] = dagforge_origin(env)
        log(f"a child imports dagforge from {context['dagforge_imported_from']}")
        warehouse = stack.servers["warehouse"]
        warehouse.create_database("airflow")
        metadata = warehouse.dsn("airflow").replace("postgresql://", "postgresql+psycopg://", 1)
        log("starting Airflow (LocalExecutor, as make airflow)")
        settings = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
        airflow = start_airflow(base / "home", metadata, REPO_ROOT / "pipelines", paused=True, settings=settings)
        try:
            token = airflow.token()
            wait_listed(airflow, token, {DAGFORGE_DAG, BARE_DAG}, 180)
            context["import_errors"] = airflow.api("GET", "/api/v2/importErrors", token)["total_entries"]
            measured = run_rounds(airflow, token, args.rounds)
        finally:
            log("stopping Airflow")
            airflow.stop()
        log("one parse of the loader file outside Airflow, with a task process's modules loaded")
        context["parse_split"] = parse_split(dags, env, modules_file)
        log("stopping the local stack")
    return summarize(measured, context)


def report(s: dict[str, Any]) -> None:
    print(f"info code under test: {s['repo']} at {s['commit']} ({s['dirty_files']} changed files); "
          f"dagforge imported from {s['dagforge_imported_from']}; import errors {s['import_errors']}")  # fmt: skip
    print(f"info a bare task's callable: {s['bare_callable_says']}")
    print(f"info bytecode writing {'on' if s['bytecode_writing'] else 'off'}, pycache prefix {s['pycache_prefix']}")
    print(f"info load average at start {s['load_avg_start'][0]:.2f}, at end {s['load_avg_end'][0]:.2f}")
    for dag_id, phases in s["phases"].items():
        runs = s["runs"][dag_id]
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
        print(
            f"info {dag_id}: run walls (s) {walls}; tasks measured per run {s['tasks_per_run'][dag_id]}; medians: "
            f"in the longer chain's tasks {s['in_tasks_s'][dag_id]:.2f} s, "
            f"between them {s['between_tasks_s'][dag_id]:.2f} s"
        )
        print(f"info {dag_id} medians (s): " + " ".join(f"{p}={v:.3f}" for p, v in phases.items()))
    split = s["parse_split"]
    print(
        f"info {DAGFORGE_DAG} one parse outside Airflow ({split['preloaded']} modules preloaded, "
        f"{split['preload_failed']} failed): parse_s={split['parse_s']:.3f} imports_s={split['imports_s']:.3f} "
        f"rest_s={split['rest_s']:.3f}; imports by package (s) {split['imports_by_package_s']}"
    )
    print(
        f"task_start dagforge_median_s={s['dagforge_median_s']:.3f} bare_median_s={s['bare_median_s']:.3f} "
        f"ratio={s['ratio']:.2f} run_wall_s={s['run_wall_s']:.1f}",
        flush=True,
    )


def save(summary: dict[str, Any]) -> None:
    save_summary("task_start", summary)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="measured runs of each DAG, alternating (default 8)")
    parser.add_argument("--keep-dir", type=Path, help="put the servers and Airflow here and keep it (logs) afterwards")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, save, report)


if __name__ == "__main__":
    sys.exit(main())
