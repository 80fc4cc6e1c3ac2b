"""A real Redis server on 127.0.0.1 (Debian's ``redis-server``, ``make redis`` installs it): the
broker of a CeleryExecutor for ``make airflow CELERY=1`` and the Celery test. No persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dagforge.devservices.process import ChildServer, free_port, log_file


@dataclass
class RedisServer:
    server: ChildServer

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}/0"

    def stop(self) -> None:
        self.server.stop()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(log_dir: Path | None = None, timeout: float = 30) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make redis` installs Debian's package")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
    log = log_file(log_dir, "redis")
    server = ChildServer("redis", port, subprocess.Popen(args, stdout=log, stderr=log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.process.returncode}")
        if _answers(port):
            return RedisServer(server)
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout:.0f} s")


@contextmanager
def running_redis(log_dir: Path | None = None) -> Iterator[RedisServer]:
    redis = start_redis(log_dir)
    try:
        yield redis
    finally:
        redis.stop()
