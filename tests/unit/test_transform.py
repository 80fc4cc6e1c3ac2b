"""Transform SQL rendering: the documented context, sandboxed, and clear errors."""

import pytest

from dagforge.errors import TerminalError
from dagforge.transform import render_transform


def test_renders_tables_and_params() -> None:
    sql = "INSERT INTO dwh.x SELECT * FROM {{ tables.orders }} WHERE day >= '{{ params.since }}' -- {{ pipeline }}"
    context = {"tables": {"orders": '"staging"."orders"'}, "params": {"since": "2024-01-01"}, "pipeline": "p"}
    assert render_transform(sql, context) == (
        """INSERT INTO dwh.x SELECT * FROM "staging"."orders" WHERE day >= '2024-01-01' -- p"""
    )


def test_unknown_names_are_terminal_errors_that_list_the_context() -> None:
    with pytest.raises(TerminalError, match=r"'tabels' is undefined.*available: pipeline, schema, tables"):
        render_transform("SELECT * FROM {{ tabels.orders }}", {"tables": {}})


def test_templates_cannot_reach_python_internals() -> None:
    with pytest.raises(TerminalError, match="unsafe"):
        render_transform("{{ tables.__class__.__mro__ }}", {"tables": {}})
