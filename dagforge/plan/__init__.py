"""spec → dag-factory config. Pure: no Airflow import, no I/O."""

from dagforge.plan.compile import PlanError, compile_pipeline, resolve_shape

__all__ = ["PlanError", "compile_pipeline", "resolve_shape"]
