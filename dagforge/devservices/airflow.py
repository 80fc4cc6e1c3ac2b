"""A real local Airflow over this repository's ``dags/``, for ``make airflow`` and the end-to-end
tests. No Docker. :func:`start_airflow`: ``airflow standalone`` (api-server, scheduler,
dag-processor, triggerer; LocalExecutor). :func:`start_celery_airflow`: the same components one by
one with the CeleryExecutor, a Redis broker and ``airflow celery worker`` processes, each worker
with a name of its own (a task instance's ``hostname`` says which worker ran it)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dagforge.catalog import PIPELINES_DIR_ENV, REPO_ROOT

ADMIN_USER = "admin"
FINISHED_RUN_STATES = frozenset({"success", "failed"})


WORKER_NAME_ENV = "DAGFORGE_WORKER_NAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the local Celery workers: two workers on one machine share its
    hostname, so each reports the name it was started with."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


@dataclass
class LocalAirflow:
    process: subprocess.Popen
    port: int
    password: str
    home: Path
    others: list[subprocess.Popen] = field(default_factory=list)
    """The other components (scheduler, dag-processor, triggerer, workers) when not ``standalone``."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        body = json.dumps({"username": ADMIN_USER, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def api(self, method: str, path: str, token: str, payload: Any = None) -> Any:
        """Call the REST API (``/api/v2/...``) with a bearer token; returns the decoded JSON."""
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def backfill(
        self,
        token: str,
        dag_id: str,
        from_date: datetime,
        to_date: datetime,
        *,
        max_active_runs: int | None = None,
        reprocess_behavior: str | None = None,
    ) -> dict:
        """Create a backfill through ``POST /api/v2/backfills``; returns the backfill (``id``, ``max_active_runs``…).

        Both dates are inclusive logical dates (timezone-aware). Without ``max_active_runs`` Airflow's
        default applies: 10 runs at once, whatever the DAG's own ``max_active_runs`` (a backfill's runs
        are counted apart from the DAG's other runs). The runs are created at once, ``queued``; the
        scheduler starts them only while the DAG is unpaused. One active backfill per DAG (else 409).
        """
        body: dict[str, Any] = {
            "dag_id": dag_id,
            "from_date": from_date.isoformat(),
            "to_date": to_date.isoformat(),
        }
        if max_active_runs is not None:
            body["max_active_runs"] = max_active_runs
        if reprocess_behavior is not None:
            body["reprocess_behavior"] = reprocess_behavior
        return self.api("POST", "/api/v2/backfills", token, body)

    def dag_runs(self, token: str, dag_id: str, **filters: Any) -> list[dict]:
        """The DAG's runs, oldest first, filtered like ``GET /api/v2/dags/{dag_id}/dagRuns`` (``run_type=
        "backfill"``, ``logical_date_gte=…``, ``state=…``; a list value repeats the parameter)."""
        query = urllib.parse.urlencode({"limit": 100, "order_by": "run_after", **filters}, doseq=True)
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}", token)["dag_runs"]

    def task_instances(self, token: str, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of one run (``state``, ``try_number``, ``task_id``…)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=1000"
        return self.api("GET", path, token)["task_instances"]

    def wait_for_runs(
        self, token: str, dag_id: str, run_ids: Iterable[str], timeout: float, *, poll_s: float = 2
    ) -> dict[str, dict]:
        """Wait until every run in ``run_ids`` is ``success`` or ``failed``; returns them by run id.

        TimeoutError (naming the unfinished runs and their states) after ``timeout`` seconds.
        """
        wanted = set(run_ids)
        deadline = time.monotonic() + timeout
        while True:
            runs = {r["dag_run_id"]: r for r in self.dag_runs(token, dag_id) if r["dag_run_id"] in wanted}
            pending = {i: runs[i]["state"] if i in runs else "missing" for i in wanted}
            pending = {i: state for i, state in pending.items() if state not in FINISHED_RUN_STATES}
            if not pending:
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id}: runs still unfinished after {timeout:.0f} s: {pending}")
            time.sleep(poll_s)

    def wait_for_backfill(self, token: str, backfill_id: int, timeout: float, *, poll_s: float = 2) -> dict:
        """Wait until the scheduler marks the backfill completed (all its runs finished); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.api("GET", f"/api/v2/backfills/{backfill_id}", token)
            if backfill["completed_at"] is not None:
                return backfill
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"backfill {backfill_id} of {backfill['dag_id']}: not completed after {timeout:.0f} s"
                )
            time.sleep(poll_s)

    def stop(self) -> None:
        running = [p for p in (*self.others, self.process) if p.poll() is None]
        for process in running:
            os.killpg(process.pid, signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def free_port(preferred: int | None = None) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def airflow_environment(
    home: Path, port: int, metadata_uri: str, pipelines_dir: Path, password: str, *, paused: bool = False
) -> dict[str, str]:
    """Everything Airflow needs, on top of the caller's environment (which holds AIRFLOW_CONN_*)."""
    passwords = home / "passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({ADMIN_USER: password}))
    return {
        **os.environ,
        # standalone starts its components as `airflow …` from PATH: this virtualenv's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_uri,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(paused),
        "AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "DO_NOT_TRACK": "1",
        PIPELINES_DIR_ENV: str(pipelines_dir),
    }


def start_airflow(
    home: Path,
    metadata_uri: str,
    pipelines_dir: Path,
    *,
    port: int | None = None,
    password: str = "dagforge",
    paused: bool = False,
    settings: Mapping[str, str] | None = None,
) -> LocalAirflow:
    """Migrate the metadata DB, start ``airflow standalone``, wait for ``/api/v2/monitor/health``.

    ``settings`` are extra environment variables (``AIRFLOW__SECTION__KEY``…) set last, over
    :func:`airflow_environment`'s, e.g. a lower ``[core] parallelism`` on a small machine.
    """
    port = port or free_port()
    env = {**airflow_environment(home, port, metadata_uri, pipelines_dir, password, paused=paused), **(settings or {})}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log = (home / "standalone.log").open("wb")
    process = subprocess.Popen(
        [airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    local = LocalAirflow(process, port, password, home)
    wait_healthy(local, timeout=180)
    return local


def start_celery_airflow(
    home: Path,
    metadata_uri: str,
    pipelines_dir: Path,
    broker_url: str,
    *,
    workers: int = 2,
    concurrency: int = 1,
    port: int | None = None,
    password: str = "dagforge",
    paused: bool = False,
    settings: Mapping[str, str] | None = None,
) -> LocalAirflow:
    """Airflow with the CeleryExecutor: api-server, scheduler, dag-processor and triggerer, and
    ``workers`` Celery workers (``worker-1``…, ``concurrency`` task slots each) on ``broker_url``.

    Celery's results go to the metadata database. The components share one JWT secret (each would
    make its own otherwise, and the workers' task tokens would not be accepted)."""
    port = port or free_port()
    env = {
        **airflow_environment(home, port, metadata_uri, pipelines_dir, password, paused=paused),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_uri,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__WORKERS": "1",
        **(settings or {}),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)

    def start(name: str, args: list[str], extra: Mapping[str, str] | None = None) -> subprocess.Popen:
        log = (home / f"{name}.log").open("wb")
        return subprocess.Popen([airflow, *args], env={**env, **(extra or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    api = start("api-server", ["api-server", "--port", str(port)])
    others = [start(name, [name]) for name in ("scheduler", "dag-processor", "triggerer")]
    for n in range(1, workers + 1):
        name = f"worker-{n}"
        named = {WORKER_NAME_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}
        args = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(concurrency)]
        others.append(start(name, args, named))
    local = LocalAirflow(api, port, password, home, others)
    wait_healthy(local, timeout=240)
    return local


def wait_healthy(local: LocalAirflow, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if local.process.poll() is not None or any(p.poll() is not None for p in local.others):
            local.stop()
            raise RuntimeError(f"an Airflow component exited; see the logs in {local.home}")
        try:
            with urllib.request.urlopen(f"{local.url}/api/v2/monitor/health", timeout=5) as response:
                health = json.loads(response.read())
            if all(part.get("status") == "healthy" for part in health.values() if isinstance(part, dict)):
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    local.stop()
    raise RuntimeError(f"Airflow was not healthy after {timeout:.0f} s; see {local.home / 'standalone.log'}")
