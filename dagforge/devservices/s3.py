"""A throwaway S3-compatible server (moto) on 127.0.0.1, standing in for MinIO in tests and the demo."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def airflow_conn_uri(self) -> str:
        """An ``aws`` connection (JSON form) that S3Hook resolves to this server."""
        extra = {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"}
        return json.dumps({"conn_type": "aws", "login": "dagforge", "password": "dagforge", "extra": extra})

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="dagforge",
            aws_secret_access_key="dagforge",
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3(log_dir: Path | None = None) -> S3Server:
    """Start ``moto_server`` and wait until it answers (about a second)."""
    port = _free_port()
    binary = Path(sys.executable).parent / "moto_server"
    log = open(log_dir / "s3.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    server = S3Server(port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto_server did not answer on port {port} within 30 s")


@contextmanager
def running_s3(log_dir: Path | None = None) -> Iterator[S3Server]:
    server = start_s3(log_dir)
    try:
        yield server
    finally:
        server.stop()
