"""The installed package and the schema as editors see it."""

import json
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for root in ("dagforge", "operators")
        for p in (REPO / root).rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert "dagforge.schemas" in listed  # schemas/ ships inside the package


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node and "description" not in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _properties(schema: dict, node: object, path: str = "") -> list[tuple[str, dict]]:
    found = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            if key not in ("if", "then", "else"):  # conditions and overlays of documented properties
                found += _properties(schema, sub, f"{path}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            found += _properties(schema, sub, f"{path}[{index}]")
    return found


def test_every_schema_property_has_a_description_and_examples() -> None:
    schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    properties = _properties(schema, schema)
    assert len(properties) > 50
    missing = [path for path, sub in properties if not _resolve(schema, sub).get("description")]
    assert missing == [], f"properties without a description: {missing}"
    no_examples = [path for path, sub in properties if "examples" not in _resolve(schema, sub) and "const" not in sub]
    assert no_examples == [], f"properties without examples: {no_examples}"


def test_every_example_pipeline_carries_the_schema_modeline() -> None:
    for path in (REPO / "pipelines").glob("*.yml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=../schemas/pipeline.schema.json"), path.name
