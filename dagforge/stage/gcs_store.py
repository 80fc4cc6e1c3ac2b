"""The Google Cloud Storage back end of :class:`dagforge.stage.extract_load.ObjectStore`.

``client`` is a ``google.cloud.storage.Client`` (Airflow's ``GCSHook.get_conn()`` gives one with
the connection's credentials). An emulator is configuration: ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api_core.exceptions import Conflict, NotFound

from dagforge.contracts import ObjectMissing


class GCSStore:
    def __init__(self, client: Any, bucket: str, location: str | None = None):
        self.client = client
        self.bucket_name = bucket
        self.location = location
        self.bucket = client.bucket(bucket)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{key}"

    def ensure_bucket(self) -> None:
        try:
            self.client.get_bucket(self.bucket_name)
        except NotFound:
            with contextlib.suppress(Conflict):  # created by a parallel task in the meantime
                self.client.create_bucket(self.bucket_name, location=self.location)

    def upload_file(self, path: Path, key: str) -> None:
        self.bucket.blob(key).upload_from_filename(str(path))  # resumable above 8 MB

    def download_file(self, key: str, path: Path) -> None:
        with self._missing_as_lost(key):
            self.bucket.blob(key).download_to_filename(str(path))

    def put_text(self, key: str, text: str) -> None:
        self.bucket.blob(key).upload_from_string(text.encode(), content_type="application/json")

    def get_text(self, key: str) -> str:
        with self._missing_as_lost(key):
            return self.bucket.blob(key).download_as_bytes().decode()

    @contextlib.contextmanager
    def _missing_as_lost(self, key: str) -> Iterator[None]:
        try:
            yield
        except NotFound as exc:
            raise ObjectMissing(f"{self.uri(key)} is missing") from exc

    def list_keys(self, prefix: str) -> list[str]:
        return [blob.name for blob in self.client.list_blobs(self.bucket_name, prefix=prefix)]

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_keys(self.list_keys(prefix))

    def delete_keys(self, keys: list[str]) -> int:
        for key in keys:
            with contextlib.suppress(NotFound):
                self.bucket.blob(key).delete()
        return len(keys)
