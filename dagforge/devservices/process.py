"""What the local stand-in servers share: a free port, a child process, waiting until it answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ChildServer:
    name: str
    port: int
    process: subprocess.Popen
    start: dict[str, Any] = field(default_factory=dict, repr=False)
    """How it was started (the arguments of :func:`start_http_server`), for :meth:`crash_and_restart`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def crash_and_restart(self) -> None:
        """kill -9 the server, then start it again on the same port (a fault for the fault suite)."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = start_http_server(**self.start).process


def log_file(log_dir: Path | None, name: str) -> IO[bytes] | int:
    return open(log_dir / f"{name}.log", "ab") if log_dir else subprocess.DEVNULL


def start_http_server(
    name: str,
    args: list[str],
    port: int,
    probe_path: str = "/",
    log_dir: Path | None = None,
    timeout: float = 60,
    **popen: Any,
) -> ChildServer:
    """Start ``args`` and wait until ``probe_path`` answers over HTTP (any status)."""
    log = log_file(log_dir, name)
    how = {"name": name, "args": args, "port": port, "probe_path": probe_path, "log_dir": log_dir, "timeout": timeout}
    server = ChildServer(name, port, subprocess.Popen(args, stdout=log, stderr=log, **popen), {**how, **popen})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            where = f"; see {log_dir / (name + '.log')}" if log_dir else ""
            raise RuntimeError(f"{name} exited with {server.process.returncode}{where}")
        try:
            urllib.request.urlopen(server.url + probe_path, timeout=1).close()
            return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer on port {port} within {timeout:.0f} s")
