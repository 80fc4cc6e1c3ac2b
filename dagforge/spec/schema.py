"""Validate YAML data against ``schemas/pipeline.schema.json`` and word the errors for humans."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from dagforge.errors import SpecError
from dagforge.spec.files import SCHEMA_PATH
from dagforge.spec.yaml_source import KeyPath, YamlDocument, format_path

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


@cache
def pipeline_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _validator(definition: str | None, path: Path) -> Draft202012Validator:
    schema = pipeline_schema(path)
    if definition:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate_document(
    doc: YamlDocument, data: Any, *, definition: str | None = None, schema_path: Path | None = None
) -> list[SpecError]:
    """Every schema error in ``data`` (the whole pipeline, or ``$defs/<definition>``)."""
    errors: list[SpecError] = []
    for error in _validator(definition, schema_path or SCHEMA_PATH).iter_errors(data):
        errors.extend(_to_spec_errors(doc, error))
    return sorted(set(errors), key=lambda e: (e.file, e.line, e.column, e.key_path, e.message))


def _to_spec_errors(doc: YamlDocument, error: ValidationError) -> Iterator[SpecError]:
    if error.validator in ("oneOf", "anyOf") and error.context:
        yield from _to_spec_errors(doc, _best_branch(error))
        return
    path: KeyPath = tuple(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(error.schema.get("properties", {}))
        for key in _unexpected_keys(error):
            yield _at(doc, (*path, key), _unknown_key_message(key, allowed), key=True)
        return
    if error.validator == "required":
        missing = _quoted_name(error.message)
        yield _at(doc, path, f"missing required key {missing!r}")
        return
    formatter = _FORMATTERS.get(str(error.validator), _default_message)
    yield _at(doc, path, formatter(error))


def _best_branch(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf, report the branch that got furthest (deepest path, then fewest errors)."""
    return max(error.context or [error], key=lambda e: (len(e.absolute_path), -len(list(e.context or []))))


def _unexpected_keys(error: ValidationError) -> list[str]:
    allowed = error.schema.get("properties", {})
    return sorted(k for k in error.instance if k not in allowed)


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(allowed)}"
    return f"unknown key {key!r}{hint}"


def _quoted_name(message: str) -> str:
    return message.split("'")[1] if message.count("'") >= 2 else message


def _at(doc: YamlDocument, path: KeyPath, message: str, *, key: bool = False) -> SpecError:
    pos = doc.position(path, key=key)
    return SpecError(pos.file, pos.line, pos.column, format_path(path), message)


def _describe(value: Any) -> str:
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"{kind} {json.dumps(value)}"


_YAML_WORDS = {"array": "a list", "object": "a mapping"}


def _type_message(error: ValidationError) -> str:
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    expected_text = " or ".join(_YAML_WORDS.get(t, t) for t in expected)
    hint = ""
    if isinstance(error.instance, bool) and "string" in expected:
        hint = " (YAML reads yes/no/on/off/true/false as booleans: quote the value)"
    elif "array" in expected and not isinstance(error.instance, dict | list):
        hint = f" (write [{error.instance}])"
    return f"expected {expected_text}, got {_describe(error.instance)}{hint}"


def _enum_message(error: ValidationError) -> str:
    choices = [c for c in error.validator_value if c is not None]
    close = difflib.get_close_matches(str(error.instance), [str(c) for c in choices], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{_describe(error.instance)} is not one of {', '.join(map(str, choices))}{hint}"


def _pattern_message(error: ValidationError) -> str:
    hint = error.schema.get("x-hint", f"text matching {error.validator_value}")
    return f"{json.dumps(error.instance)} is not valid: {hint}"


def _const_message(error: ValidationError) -> str:
    return f"must be {json.dumps(error.validator_value)}, got {_describe(error.instance)}"


def _default_message(error: ValidationError) -> str:
    return error.message


_FORMATTERS: dict[str, Callable[[ValidationError], str]] = {
    "type": _type_message,
    "enum": _enum_message,
    "pattern": _pattern_message,
    "const": _const_message,
    "format": lambda e: f"{json.dumps(e.instance)} is not a valid {e.validator_value} (use YYYY-MM-DD)",
    "minItems": lambda e: f"needs at least {e.validator_value} item(s)",
    "uniqueItems": lambda e: "items must be unique",
}
