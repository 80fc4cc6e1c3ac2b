"""One dbt model, or its tests, as a task: Cosmos' local operators (``dbt run`` / ``dbt test``
``--select <model>`` in a copy of the project), the profile from the destination's Airflow
connection (:mod:`dagforge.dbt.profiles`), dbt from its own virtualenv (docs/decisions/0016).

A failing dbt test fails its task with dbt's own message; the models after it do not run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")

from airflow.sdk.exceptions import AirflowException
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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLOCK = re.compile(r"^\d\d:\d\d:\d\d\s+")


class _DbtMessage:
    """A failed dbt command fails the task with dbt's own words (the failing test or model, what
    it found), not only "exit code 1": they reach the task's error, its log, and notifications."""

    def handle_exception_subprocess(self, result: Any) -> None:
        if result.exit_code == 0 or getattr(self, "skip_exit_code", None) == result.exit_code:
            return super().handle_exception_subprocess(result)  # type: ignore[misc]
        self.log.error("\n".join(result.full_output))  # type: ignore[attr-defined]
        lines = [_CLOCK.sub("", _ANSI.sub("", line)).rstrip() for line in result.full_output]
        start = next((i for i, line in enumerate(lines) if line.startswith("Completed with")), None)
        said = [line for line in (lines[start + 1 :] if start is not None else lines[-12:]) if line.strip()]
        raise AirflowException(f"dbt {' '.join(self.base_cmd)} --select {self.model} failed (exit code "  # type: ignore[attr-defined]
                               f"{result.exit_code}):\n" + "\n".join(said[:40]))  # fmt: skip


class DbtRunModelOperator(_DbtMessage, DbtRunLocalOperator):
    """``dbt run --select <model>``: builds one model."""

    ui_color = "#e8f0fe"

    def __init__(self, *, project: str, model: str, profile: dict[str, Any], dbt_vars: dict | None = None, **kwargs):
        super().__init__(**cosmos_arguments(project, model, profile, dbt_vars), **kwargs)
        self.model = model


class DbtTestModelOperator(_DbtMessage, DbtTestLocalOperator):
    """``dbt test --select <model>``: the model's tests and its columns'."""

    ui_color = "#fce8e6"

    def __init__(self, *, project: str, model: str, profile: dict[str, Any], dbt_vars: dict | None = None, **kwargs):
        super().__init__(**cosmos_arguments(project, model, profile, dbt_vars), **kwargs)
        self.model = model
