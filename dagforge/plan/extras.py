"""Pieces every shape can carry: trigger-time full reloads, SQL transforms, Slack notifications."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagforge.plan.destinations import DESTINATIONS
from dagforge.spec.model import Pipeline

PARAM_TYPE = "airflow.sdk.Param"
"""dag-factory's typed-value form (``__type__``); the loader casts these to Airflow Params."""


def full_refresh_params(pipeline: Pipeline) -> dict[str, Any]:
    """Trigger-form switches that reload everything, or some tables, in full (no Variable flipping)."""
    names = [t.name for t in pipeline.tables]
    return {
        "full_refresh": {
            "__type__": PARAM_TYPE,
            "default": False,
            "type": ["boolean", "null"],  # with "null" the trigger form does not mark it required
            "title": "Full reload of every table",
            "description": "Reload every table in full: incremental tables are replaced, their watermark reset.",
        },
        "full_refresh_tables": {
            "__type__": PARAM_TYPE,
            "default": [],
            "type": ["array", "null"],
            "items": {"type": "string", "enum": names},
            "examples": names,  # the trigger form renders a pick-list from these (a text box without)
            "title": "Full reload of these tables",
            "description": "Tables to reload in full in this run: " + ", ".join(names),
        },
    }


def transform_tasks(pipeline: Pipeline, shape: Any) -> dict[str, dict[str, Any]]:
    """One task per transform, after the tables and transforms it depends on."""
    finals = {t.name: shape.final_task(t) for t in pipeline.tables}
    destination = DESTINATIONS[pipeline.destination.kind]
    shared = destination.transform_arguments(pipeline)
    tasks = {}
    for transform in pipeline.transforms:
        task = {"operator": destination.transform_operator, **shared, "name": transform.name, "sql": transform.sql_text}
        tasks[f"transform_{transform.name}"] = {
            **task,
            "dependencies": [finals.get(d, f"transform_{d}") for d in transform.depends_on],
            # runs when at least one dependency loaded something; skipped when all were skipped
            "trigger_rule": "none_failed_min_one_success",
            "doc_md": f"Runs `{transform.sql}` {destination.doc}.",
        }
    return tasks


_CALLBACKS = {
    "failure": ("default_args", "on_failure_callback"),
    "skip": ("default_args", "on_skipped_callback"),
    "success": (None, "on_success_callback"),
}


def add_notifications(config: dict[str, Any], notify: Mapping[str, Any]) -> None:
    """Slack callbacks: task failures and skips per task, success once per run."""
    slack = notify.get("slack")
    if not slack:
        return
    for event in slack.get("on", ["failure"]):
        where, key = _CALLBACKS[event]
        callback = {"callback": "operators.notify.SlackNotifier", "connection": slack["connection"], "event": event}
        if slack.get("channel"):
            callback["channel"] = slack["channel"]
        (config[where] if where else config)[key] = callback
