"""The S3 (and MinIO) back end of :class:`dagforge.stage.extract_load.ObjectStore`, on a boto3 client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from dagforge.contracts import ObjectMissing

MISSING_CODES = ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


class S3Store:
    """``client`` is a boto3 S3 client (Airflow's ``S3Hook.get_conn()`` gives one with the endpoint set)."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:  # created by a parallel task in the meantime
                if create_exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                    raise

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def upload_file(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, key)  # multipart above 8 MB

    def download_file(self, key: str, path: Path) -> None:
        with self._missing_as_lost(key):
            self.client.download_file(self.bucket, key, str(path))

    def put_text(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="application/json")

    def get_text(self, key: str) -> str:
        with self._missing_as_lost(key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    @contextlib.contextmanager
    def _missing_as_lost(self, key: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise ObjectMissing(f"{self.uri(key)} is missing") from exc
            raise

    def list_keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_keys(self.list_keys(prefix))

    def delete_keys(self, keys: list[str]) -> int:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        return len(keys)
