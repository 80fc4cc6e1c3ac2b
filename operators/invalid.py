"""The only task of a stand-in DAG: fails with the pipeline's errors so the UI shows them."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException


class InvalidPipelineOperator(BaseOperator):
    ui_color = "#f8d7da"

    def __init__(self, *, errors: list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.errors = list(errors)

    def execute(self, context: Any) -> None:
        for line in self.errors:
            self.log.error("%s", line)
        raise AirflowFailException("this pipeline is invalid:\n" + "\n".join(self.errors))
