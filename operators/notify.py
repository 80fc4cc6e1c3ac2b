"""Slack notifications through the Slack provider's notifiers (webhook or API connection)."""

from __future__ import annotations

from typing import Any

from airflow.providers.slack.notifications.slack import SlackNotifier as SlackApiNotifier
from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
from airflow.sdk import BaseNotifier
from airflow.sdk.bases.hook import BaseHook

_ICONS = {"failure": ":x:", "success": ":white_check_mark:", "skip": ":fast_forward:"}


def slack_message(event: str, context: dict[str, Any]) -> str:
    """What the channel reads: pipeline, task, run, log link, and for failures the error."""
    dag_id = context["dag"].dag_id if context.get("dag") else "?"
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", "?")
    ti = context.get("ti") or context.get("task_instance")
    lines = [f"{_ICONS.get(event, '')} dagforge pipeline *{dag_id}*: {event}"]
    if ti is not None and event != "success":
        lines.append(f"task `{ti.task_id}`")
    lines.append(f"run `{run_id}`")
    log_url = getattr(ti, "log_url", None) if ti is not None else None
    if log_url:
        lines.append(f"log: {log_url}")
    if event == "failure" and context.get("exception") is not None:
        lines.append(f"error: {context['exception']}")
    if event == "failure" and context.get("reason"):
        lines.append(f"reason: {context['reason']}")
    return "\n".join(lines)


class SlackNotifier(BaseNotifier):
    """Picks the provider's webhook or API notifier from the connection's type."""

    template_fields = ()

    def __init__(self, *, connection: str, event: str, channel: str | None = None):
        super().__init__()
        self.connection = connection
        self.event = event
        self.channel = channel

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to template: the message is built in :func:`slack_message`. (Rendering would also
        fail for DAG-level callbacks under ``dag.test()``, whose context holds a SerializedDAG.)"""

    def notify(self, context: dict[str, Any]) -> None:
        text = slack_message(self.event, context)
        conn_type = BaseHook.get_connection(self.connection).conn_type
        if conn_type == "slack":
            SlackApiNotifier(slack_conn_id=self.connection, text=text, channel=self.channel or "#general").notify(
                context
            )
        else:
            SlackWebhookNotifier(slack_webhook_conn_id=self.connection, text=text).notify(context)
