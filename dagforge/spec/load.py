"""Find pipeline files, merge defaults, validate, and build the model, collecting every error."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dagforge.errors import SpecError
from dagforge.spec.files import DEFAULTS_NAMES, PIPELINE_SUFFIXES, discover, file_label, find_defaults
from dagforge.spec.model import Pipeline
from dagforge.spec.rules import check_rules
from dagforge.spec.schema import validate_document
from dagforge.spec.yaml_source import YamlDocument, format_path, iter_paths, load_yaml, parse_yaml_text

__all__ = ["DEFAULTS_NAMES", "PIPELINE_SUFFIXES", "LoadedSpec", "SpecLoader", "discover", "file_label", "find_defaults"]


@dataclass
class LoadedSpec:
    """One pipeline file after loading: the model when valid, else its errors."""

    path: Path
    display: str
    doc: YamlDocument
    pipeline: Pipeline | None = None
    errors: list[SpecError] = field(default_factory=list)
    is_defaults: bool = False
    """A defaults.yml named explicitly (e.g. by a pre-commit hook): checked, never built."""

    @property
    def pipeline_id(self) -> str | None:
        """The ``pipeline:`` value when it is readable, even if the file is otherwise invalid."""
        data = self.doc.data
        value = data.get("pipeline") if isinstance(data, dict) else None
        return value if isinstance(value, str) and value else None

    def error_at(self, path: tuple[str | int, ...], message: str) -> SpecError:
        pos = self.doc.position(path)
        return SpecError(pos.file, pos.line, pos.column, format_path(path), message)


def load_specs(paths: Iterable[Path], schema_path: Path | None = None) -> list[LoadedSpec]:
    """Load every pipeline under ``paths``; cross-file rules (unique ids) included.

    ``schema_path`` validates against another copy of the schema (e.g. a base revision's).
    """
    loader = SpecLoader(schema_path)
    specs = [loader.load(file, root) for file, root in discover(paths)]
    _check_unique_ids(specs)
    return specs


class SpecLoader:
    """Loads files against one schema, reading each defaults file once.

    ``display`` names a file in errors (default: relative to the working directory, as users type
    paths; the Airflow loader passes :func:`file_label`, which is the same from any directory).
    ``texts`` holds contents already read (the loader hashes exactly the bytes it validates).
    """

    def __init__(
        self,
        schema_path: Path | None = None,
        display: Callable[[Path, Path], str] | None = None,
        texts: Mapping[Path, str] | None = None,
    ):
        self.schema_path = schema_path
        self.display = display or (lambda file, _root: _display(file))
        self.texts = texts or {}
        self.defaults: dict[Path, tuple[YamlDocument, list[SpecError]]] = {}

    def _read(self, file: Path, root: Path) -> tuple[YamlDocument, list[SpecError]]:
        name = self.display(file, root)
        text = self.texts.get(file)
        return parse_yaml_text(text, name) if text is not None else load_yaml(file, name)

    def load(self, file: Path, root: Path) -> LoadedSpec:
        if file.name in DEFAULTS_NAMES:
            doc, errors = self._defaults(file, root)
            return LoadedSpec(path=file, display=doc.file, doc=doc, errors=sorted(set(errors)), is_defaults=True)
        doc, errors = self._read(file, root)
        spec = LoadedSpec(path=file, display=doc.file, doc=doc, errors=errors)
        if errors:
            return spec
        if not isinstance(doc.data, dict):
            spec.errors.append(spec.error_at((), "a pipeline file must be a mapping of keys (pipeline:, source:, ...)"))
            return spec
        defaults_path = find_defaults(file, root)
        if defaults_path is not None:
            defaults_doc, defaults_errors = self._defaults(defaults_path, root)
            spec.errors.extend(defaults_errors)
            spec.doc = _merge(defaults_doc, doc)
        spec.errors.extend(validate_document(spec.doc, spec.doc.data, schema_path=self.schema_path))
        spec.errors.extend(spec.error_at(path, message) for path, message in check_rules(spec.doc.data, file))
        spec.errors = sorted(set(spec.errors))  # defaults are checked alone and merged: report once
        if not spec.errors:
            spec.pipeline = Pipeline.from_dict(spec.doc.data, file_label(file, root), file.parent)
        return spec

    def _defaults(self, path: Path, root: Path) -> tuple[YamlDocument, list[SpecError]]:
        if path not in self.defaults:
            doc, errors = self._read(path, root)
            if errors:
                self.defaults[path] = (YamlDocument(file=doc.file, data={}), errors)
            else:
                doc.data = {} if doc.data is None else doc.data
                errors = validate_document(doc, doc.data, definition="defaults", schema_path=self.schema_path)
                self.defaults[path] = (doc, errors)
        return self.defaults[path]


def _merge(defaults: YamlDocument, doc: YamlDocument) -> YamlDocument:
    """Top-level keys of the pipeline win over defaults; positions follow the value's file."""
    base = defaults.data if isinstance(defaults.data, dict) else {}
    merged = YamlDocument(file=doc.file, data={**base, **doc.data})
    for key in base:
        if key in doc.data:
            continue
        for path in iter_paths(base[key], (key,)):
            if path in defaults.values:
                merged.values[path] = defaults.values[path]
            if path in defaults.keys:
                merged.keys[path] = defaults.keys[path]
    merged.values.update(doc.values)
    merged.keys.update(doc.keys)
    return merged


def _check_unique_ids(specs: list[LoadedSpec]) -> None:
    by_id: dict[str, list[LoadedSpec]] = defaultdict(list)
    for spec in specs:
        if spec.pipeline_id:
            by_id[spec.pipeline_id].append(spec)
    for same in by_id.values():
        if len(same) > 1:
            for spec in same:
                mark_duplicate(spec, [o.display for o in same if o is not spec])


def mark_duplicate(spec: LoadedSpec, others: Iterable[str]) -> None:
    """``spec``'s pipeline id is also declared by the files ``others``: an error in each of them."""
    message = f"pipeline id {spec.pipeline_id!r} is also used by {', '.join(others)}"
    spec.errors.append(spec.error_at(("pipeline",), message))
    spec.pipeline = None


def _display(path: Path) -> str:
    """Paths relative to the working directory when below it, as users typed them."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
