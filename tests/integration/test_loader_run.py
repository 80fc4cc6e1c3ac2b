"""A stand-in DAG's only task fails with the pipeline's errors, as a user would see it in the UI."""

import pytest

from tests.integration.conftest import Sandbox

pytestmark = pytest.mark.integration


def test_standin_task_fails_with_the_errors(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    sandbox.write_pipeline(
        "orders.yml",
        "pipeline: orders\nsource: {kind: postgres, connection: sales_src}\n"
        "destination: {kind: postgres, connection: sales_dwh}\ntables:\n  - name: orders\n    mode: incremental\n",
    )

    result = sandbox.run("orders")

    assert result.state == "failed"
    assert result.task_states == {"show_errors": "failed"}
    captured = capfd.readouterr()
    task_log = captured.out + captured.err
    assert "this pipeline is invalid" in task_log
    assert "orders.yml:6:11: tables[0].mode: mode 'incremental' needs 'cursor'" in task_log
