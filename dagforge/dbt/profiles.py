"""The dbt profile of a task, from the destination's Airflow connection, through Cosmos' profile
mappings (never a ``profiles.yml`` in the repository: Cosmos writes one per task, with the secrets
in environment variables). Imported when a dbt task runs, never at DAG parse.

* Postgres: Cosmos' user + password mapping; a connection without a password (``trust`` or a
  ``.pgpass`` on the worker) is mapped too, with an empty one.
* BigQuery: Cosmos' mapping for the connection (service-account key dict or file, else OAuth /
  application default credentials); an anonymous connection (``extra.is_anonymous``, what the
  local emulator uses) with ``BIGQUERY_EMULATOR_HOST`` set: dbt's static ``oauth-secrets`` method
  with a placeholder token and the emulator as ``api_endpoint``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from cosmos.config import ProfileConfig
from cosmos.profiles import (
    GoogleCloudOauthProfileMapping,
    GoogleCloudServiceAccountDictProfileMapping,
    GoogleCloudServiceAccountFileProfileMapping,
)
from cosmos.profiles.base import BaseProfileMapping
from cosmos.profiles.postgres import PostgresUserPasswordProfileMapping

PROFILE_NAME, TARGET_NAME = "dagforge", "dagforge"


class PostgresProfileMapping(PostgresUserPasswordProfileMapping):
    """Cosmos' Postgres mapping, with the password optional."""

    required_fields = ["host", "user", "dbname"]

    @property
    def secret_fields(self) -> list[str]:  # type: ignore[override]
        return ["password"] if self.conn.password else []

    @property
    def profile(self) -> dict[str, Any | None]:
        profile = super().profile
        if not self.conn.password:
            profile["password"] = ""  # dbt-postgres requires the key; libpq sends none (trust, .pgpass)
        return profile


class BigQueryEmulatorProfileMapping(BaseProfileMapping):
    """An anonymous Google connection against ``BIGQUERY_EMULATOR_HOST`` (local emulators)."""

    airflow_connection_type = "google_cloud_platform"
    dbt_profile_type = "bigquery"
    dbt_profile_method = "oauth-secrets"
    required_fields = ["project", "dataset"]

    def can_claim_connection(self) -> bool:
        extra = self.conn.extra_dejson
        anonymous = extra.get("is_anonymous") or extra.get("extra__google_cloud_platform__is_anonymous")
        return bool(anonymous and os.environ.get("BIGQUERY_EMULATOR_HOST")) and super().can_claim_connection()

    @property
    def profile(self) -> dict[str, Any | None]:
        return {
            **self.mapped_params,
            "token": "emulator",  # dbt's static token: the emulator takes any
            "api_endpoint": os.environ.get("BIGQUERY_EMULATOR_HOST"),
            "threads": 1,
            "job_retries": 0,
            **self.profile_args,
        }


BIGQUERY_MAPPINGS: tuple[type[BaseProfileMapping], ...] = (
    BigQueryEmulatorProfileMapping,
    GoogleCloudServiceAccountDictProfileMapping,
    GoogleCloudServiceAccountFileProfileMapping,
    GoogleCloudOauthProfileMapping,
)


def _postgres(profile: dict[str, Any]) -> BaseProfileMapping:
    return PostgresProfileMapping(profile["connection"], {"schema": profile["schema"]})


class BigQueryProfileMapping(BaseProfileMapping):
    """The first of :data:`BIGQUERY_MAPPINGS` that claims the connection, chosen when the task runs
    (making the operator reads no connection: the DAG parses without the secrets backend)."""

    airflow_connection_type = "google_cloud_platform"
    dbt_profile_type = "bigquery"
    required_fields = ["project", "dataset"]

    @functools.cached_property
    def chosen(self) -> BaseProfileMapping:
        for mapping in BIGQUERY_MAPPINGS:
            candidate = mapping(self.conn_id, self.profile_args)
            if candidate.can_claim_connection():
                return candidate
        raise ValueError(f"connection {self.conn_id!r}: no dbt BigQuery profile can be made from it")

    @property
    def profile(self) -> dict[str, Any]:
        return self.chosen.profile

    @property
    def mock_profile(self) -> dict[str, Any]:
        return self.chosen.mock_profile

    @property
    def env_vars(self) -> dict[str, str]:
        return self.chosen.env_vars


def _bigquery(profile: dict[str, Any]) -> BaseProfileMapping:
    args = {"project": profile["project"], "dataset": profile["schema"]}
    if profile.get("location"):
        args["location"] = profile["location"]
    return BigQueryProfileMapping(profile["connection"], args)


MAPPINGS = {"postgres": _postgres, "bigquery": _bigquery}
"""destination kind → the profile mapping of its connection."""


def profile_config(profile: dict[str, Any]) -> ProfileConfig:
    """``profile`` as the plan writes it: ``kind``, ``connection``, ``schema`` (where models build),
    for BigQuery also ``project`` and ``location``."""
    mapping = MAPPINGS[profile["kind"]](profile)
    return ProfileConfig(profile_name=PROFILE_NAME, target_name=TARGET_NAME, profile_mapping=mapping)
