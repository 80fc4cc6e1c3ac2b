"""A throwaway S3-compatible server (moto) on 127.0.0.1, standing in for MinIO in tests and the demo."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagforge.devservices.process import ChildServer, free_port, start_http_server


class S3Server(ChildServer):
    @property
    def endpoint_url(self) -> str:
        return self.url

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


def start_s3(log_dir: Path | None = None) -> S3Server:
    """Start ``moto_server`` and wait until it answers (about a second)."""
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    server = start_http_server("s3", [str(binary), "-H", "127.0.0.1", "-p", str(port)], port, log_dir=log_dir)
    return S3Server(server.name, server.port, server.process, server.start)


@contextmanager
def running_s3(log_dir: Path | None = None) -> Iterator[S3Server]:
    server = start_s3(log_dir)
    try:
        yield server
    finally:
        server.stop()
