"""One dbt model, or its tests, as a task: Cosmos' local operators (``dbt run`` / ``dbt test``
``--select <model>`` in a copy of the project), the profile from the destination's Airflow
connection (:mod:`dagforge.dbt.profiles`), dbt from its own virtualenv (docs/decisions/0016).

A failing dbt test fails its task with dbt's own message; the models after it do not run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")

from cosmos.constants import InvocationMode
from cosmos.operators.local import DbtRunLocalOperator, DbtTestLocalOperator

from dagforge.catalog import REPO_ROOT, default_pipelines_dir

DBT_ENV = "DAGFORGE_DBT"
"""The ``dbt`` executable to run; default: the repository's ``.venv-dbt`` (``make install``), else PATH."""
NO_TRACKING = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


def dbt_executable() -> str:
    if os.environ.get(DBT_ENV):
        return os.environ[DBT_ENV]
    bundled = REPO_ROOT / ".venv-dbt" / "bin" / "dbt"
    return str(bundled) if bundled.is_file() else (shutil.which("dbt") or "dbt")


def project_dir(project: str) -> Path:
    """The plan writes the project relative to the pipelines folder (the same on every worker)."""
    return (default_pipelines_dir() / project).resolve()


def cosmos_arguments(
    project: str, model: str, profile: dict[str, Any], dbt_vars: dict[str, Any] | None
) -> dict[str, Any]:
    """What both operators take from the plan (the project, the model, the profile, dbt vars), as
    Cosmos' local operators take it."""
    from dagforge.dbt.profiles import profile_config  # Cosmos' profile mappings: read no connection here

    return {
        "project_dir": str(project_dir(project)),
        "profile_config": profile_config(profile),
        "select": model,
        "vars": dbt_vars or None,
        "dbt_executable_path": dbt_executable(),
        "invocation_mode": InvocationMode.SUBPROCESS,
        "install_deps": False,
        "env": NO_TRACKING,
    }


class DbtRunModelOperator(DbtRunLocalOperator):
    """``dbt run --select <model>``: builds one model."""

    ui_color = "#e8f0fe"

    def __init__(self, *, project: str, model: str, profile: dict[str, Any], dbt_vars: dict | None = None, **kwargs):
        super().__init__(**cosmos_arguments(project, model, profile, dbt_vars), **kwargs)


class DbtTestModelOperator(DbtTestLocalOperator):
    """``dbt test --select <model>``: the model's tests and its columns'."""

    ui_color = "#fce8e6"

    def __init__(self, *, project: str, model: str, profile: dict[str, Any], dbt_vars: dict | None = None, **kwargs):
        super().__init__(**cosmos_arguments(project, model, profile, dbt_vars), **kwargs)
