"""Read YAML safely while remembering where every node came from.

PyYAML's ``safe_load`` loses positions, and plain ``yaml.load`` can construct arbitrary Python
objects. Here we *compose* the node tree with the safe loader and build plain JSON-like values
ourselves, so that:

* only the core YAML types exist (mapping, sequence, str, int, float, bool, null); any other tag
  (``!!python/object``, custom ``!tags``) is an error, never executed;
* dates stay strings (the schema validates their format), so values are JSON-compatible;
* mapping keys are taken verbatim from the text: ``on:`` is the string ``"on"``, not ``True``;
* duplicate keys, oversized files and alias bombs are refused with a position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dagforge.errors import SpecError

MAX_FILE_BYTES = 1_000_000
"""Pipeline files are small; anything bigger is almost certainly a mistake."""
MAX_NODES = 200_000
"""Upper bound on values built from one file, aliases expanded: stops "billion laughs"."""

KeyPath = tuple[str | int, ...]
_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True)
class Position:
    file: str
    line: int
    column: int


@dataclass
class YamlDocument:
    """A parsed file: its data plus the position of every value and every mapping key."""

    file: str
    data: Any = None
    values: dict[KeyPath, Position] = field(default_factory=dict)
    keys: dict[KeyPath, Position] = field(default_factory=dict)

    def position(self, path: KeyPath, *, key: bool = False) -> Position:
        """Position of ``path`` (its key when ``key``), else of its nearest known ancestor."""
        table = self.keys if key else self.values
        for cut in range(len(path), -1, -1):
            found = table.get(path[:cut]) or self.values.get(path[:cut])
            if found:
                return found
        return Position(self.file, 1, 1)


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (about 15x faster to compose), else PyYAML's own."""


class _Loader(_SafeLoader):
    """Safe loader that leaves timestamps as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def scalar_resolver() -> type[yaml.BaseResolver]:
    """The resolver our loader uses (plain scalars: timestamps stay strings), for reading one scalar."""

    class _Resolver(yaml.resolver.Resolver):
        yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers

    return _Resolver


class _Budget:
    def __init__(self, limit: int):
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooLarge


class _TooLarge(Exception):
    pass


class _NodeError(Exception):
    def __init__(self, node: yaml.Node, path: KeyPath, message: str):
        super().__init__(message)
        self.node, self.path, self.message = node, path, message


def format_path(path: KeyPath) -> str:
    """``("tables", 0, "cursor")`` → ``tables[0].cursor``; the empty path → ``<file>``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<file>"


def load_yaml(path: Path, display_name: str | None = None) -> tuple[YamlDocument, list[SpecError]]:
    """Parse one YAML file; return the document and every error that stops it being read."""
    name = display_name or str(path)
    doc = YamlDocument(file=name)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return doc, [_file_error(name, f"file is {size} bytes; pipeline files are limited to 1 MB")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return doc, [_file_error(name, f"cannot read file: {exc}")]
    return parse_yaml_text(text, name)


def parse_yaml_text(text: str, name: str) -> tuple[YamlDocument, list[SpecError]]:
    doc = YamlDocument(file=name)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return doc, [_file_error(name, "file is empty")]
        doc.data = _build(loader, root, (), doc, _Budget(MAX_NODES))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        return doc, [SpecError(name, line, col, "<file>", f"YAML syntax error: {problem}")]
    except _NodeError as exc:
        mark = exc.node.start_mark
        return doc, [SpecError(name, mark.line + 1, mark.column + 1, format_path(exc.path), exc.message)]
    except _TooLarge:
        return doc, [_file_error(name, f"more than {MAX_NODES} values once aliases are expanded")]
    finally:
        loader.dispose()
    return doc, []


def _file_error(name: str, message: str) -> SpecError:
    return SpecError(name, 0, 0, "<file>", message)


def _build(loader: _Loader, node: yaml.Node, path: KeyPath, doc: YamlDocument, budget: _Budget) -> Any:
    budget.spend()
    doc.values.setdefault(path, _position(doc.file, node))
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(loader, node, path, doc, budget)
    if isinstance(node, yaml.SequenceNode):
        _require_tag(node, path, "tag:yaml.org,2002:seq")
        return [_build(loader, item, (*path, i), doc, budget) for i, item in enumerate(node.value)]
    if node.tag not in _CORE_TAGS:
        raise _NodeError(node, path, f"tag {node.tag!r} is not allowed; use plain YAML values")
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    return loader.construct_object(node, deep=True)


def _build_mapping(
    loader: _Loader, node: yaml.MappingNode, path: KeyPath, doc: YamlDocument, budget: _Budget
) -> dict[str, Any]:
    _require_tag(node, path, "tag:yaml.org,2002:map")
    loader.flatten_mapping(node)  # applies YAML merge keys ("<<: *defaults")
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _NodeError(key_node, path, "mapping keys must be plain names")
        key = key_node.value
        if key in result:
            raise _NodeError(key_node, (*path, key), f"duplicate key {key!r}")
        doc.keys[(*path, key)] = _position(doc.file, key_node)
        result[key] = _build(loader, value_node, (*path, key), doc, budget)
    return result


def _require_tag(node: yaml.Node, path: KeyPath, tag: str) -> None:
    if node.tag != tag:
        raise _NodeError(node, path, f"tag {node.tag!r} is not allowed; use plain YAML values")


def _position(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


def iter_paths(data: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key path in ``data`` (used to carry positions through merges)."""
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_paths(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_paths(value, (*path, index))
