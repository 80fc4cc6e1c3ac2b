"""The layers stay apart: stages and destinations see sources only through dagforge.contracts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGE_AND_DESTINATIONS = ["dagforge/stage", "dagforge/bigquery", "dagforge/transfer"]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package", STAGE_AND_DESTINATIONS)
def test_no_stage_or_destination_module_imports_a_source(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.startswith("dagforge.sources"))
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_source_kind_in_the_schema_is_registered_or_writes_itself() -> None:
    import json

    from dagforge.plan.shapes import SHAPES, TABLE_SOURCES
    from dagforge.sources import SOURCES, source_class

    schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    kinds = set(schema["$defs"]["source"]["properties"]["kind"]["enum"])
    assert kinds == set(SOURCES) | {"generate"}
    assert set(SOURCES) == set(TABLE_SOURCES) == {k[0] for k in SHAPES} - {"generate"}
    for kind in SOURCES:
        cls = source_class(kind)
        assert callable(cls.decide) and callable(cls.read)
