"""A real local Airflow (``airflow standalone``: api-server, scheduler, dag-processor, triggerer)
over this repository's ``dags/``, for ``make airflow`` and the end-to-end test. No Docker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagforge.catalog import PIPELINES_DIR_ENV, REPO_ROOT

ADMIN_USER = "admin"


@dataclass
class LocalAirflow:
    process: subprocess.Popen
    port: int
    password: str
    home: Path

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

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


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
) -> LocalAirflow:
    """Migrate the metadata DB, start ``airflow standalone``, wait for ``/api/v2/monitor/health``."""
    port = port or free_port()
    env = airflow_environment(home, port, metadata_uri, pipelines_dir, password, paused=paused)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log = (home / "standalone.log").open("wb")
    process = subprocess.Popen(
        [airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    local = LocalAirflow(process, port, password, home)
    wait_healthy(local, timeout=180)
    return local


def wait_healthy(local: LocalAirflow, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if local.process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited; see {local.home / 'standalone.log'}")
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
