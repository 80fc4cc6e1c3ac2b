"""What a change does to the pipelines: a short human summary and the diff of the rendered plans.

Each side (a git revision, or the working tree) is compiled on its own: its pipeline files, its
``defaults.yml`` and its ``schemas/pipeline.schema.json``. So a changed defaults file or schema
shows up on every pipeline whose plan or validity it changes.
"""

from __future__ import annotations

import difflib
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagforge.catalog import Entry, build_catalog
from dagforge.plan.render import render_yaml
from dagforge.review.graph import task_nodes
from dagforge.spec.model import Endpoint, Pipeline, Table

SCHEMA_FILE = "schemas/pipeline.schema.json"


class GitError(Exception):
    pass


@dataclass
class Side:
    label: str
    entries: dict[str, Entry]
    """By path in the repository, e.g. ``pipelines/orders.yml``."""
    sources: dict[str, bytes]


@dataclass
class FileChange:
    path: str
    summary: list[str] = field(default_factory=list)
    plan_diff: str = ""


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def default_base(repo: Path) -> str:
    """The merge base with origin/main when there is one, else HEAD."""
    try:
        git(repo, "rev-parse", "--verify", "-q", "origin/main")
        return git(repo, "merge-base", "origin/main", "HEAD")
    except GitError:
        return "HEAD"


def load_side(repo: Path, rev: str | None, pipelines: str, workdir: Path) -> Side:
    """Compile one side: a revision exported into ``workdir``, or the working tree when ``rev`` is None."""
    if rev is None:
        root, label = repo, "working tree"
    else:
        root, label = workdir / "tree", f"{rev} ({git(repo, 'rev-parse', '--short', rev)})"
        _export(repo, rev, [pipelines, "schemas"], root)
    folder = root / pipelines
    schema = root / SCHEMA_FILE if (root / SCHEMA_FILE).is_file() else None
    entries = build_catalog([folder], schema) if folder.is_dir() else []
    keyed = {str(Path(pipelines) / e.file.relative_to(folder)): e for e in entries}
    return Side(label, keyed, {k: e.file.read_bytes() for k, e in keyed.items()})


def _export(repo: Path, rev: str, paths: list[str], target: Path) -> None:
    present = [p for p in paths if git(repo, "ls-tree", "--name-only", rev, "--", p)]
    target.mkdir(parents=True)
    if not present:
        return
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "--", *present], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")


def compare(
    repo: Path, base: str, head: str | None, pipelines: str = "pipelines"
) -> tuple[Side, Side, list[FileChange]]:
    with tempfile.TemporaryDirectory() as tmp:
        old = load_side(repo, base, pipelines, Path(tmp) / "base")
        new = load_side(repo, head, pipelines, Path(tmp) / "head")
        changes = [c for path in sorted(set(old.entries) | set(new.entries)) if (c := _change(path, old, new))]
    return old, new, changes


def _change(path: str, old: Side, new: Side) -> FileChange | None:
    before, after = old.entries.get(path), new.entries.get(path)
    old_plan, new_plan = _plan_text(before), _plan_text(after)
    if old_plan == new_plan and old.sources.get(path) == new.sources.get(path):
        return None
    change = FileChange(path, list(summarize(before, after)))
    if old_plan == new_plan:
        change.summary.append("no change to the plan")
    else:
        lines = difflib.unified_diff(
            old_plan.splitlines(keepends=True), new_plan.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
        change.plan_diff = "".join(lines)
    return change


def _plan_text(entry: Entry | None) -> str:
    if entry is None:
        return ""
    if not entry.valid or entry.config is None:
        return "# invalid:\n" + "".join(f"# {e.key_path}: {e.message}\n" for e in entry.errors)
    return render_yaml({entry.dag_id: entry.config})


def summarize(before: Entry | None, after: Entry | None) -> Iterator[str]:
    """One line per change a reviewer cares about."""
    if before is None:
        yield f"pipeline `{after.dag_id}` added" + ("" if after.valid else f" (invalid: {len(after.errors)} errors)")
        return
    if after is None:
        yield f"pipeline `{before.dag_id}` removed"
        return
    if before.valid and not after.valid:
        yield f"now INVALID: {after.errors[0].key_path}: {after.errors[0].message}" + _more(after.errors)
        return
    if not before.valid and after.valid:
        yield "now valid"
    if before.pipeline and after.pipeline:
        yield from _pipeline_changes(before.pipeline, after.pipeline)
        yield from _task_changes(before.config or {}, after.config or {})


def _more(errors: list[Any]) -> str:
    return f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""


_PIPELINE_FIELDS = ("schedule", "start_date", "catchup", "owner", "retries", "max_active_runs", "description")
_TABLE_FIELDS = ("target", "mode", "cursor", "primary_key", "lookback", "columns")


def _show(value: Any) -> str:
    if value is None or value == ():
        return "—"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value.value if hasattr(value, "value") else value)


def _pipeline_changes(old: Pipeline, new: Pipeline) -> Iterator[str]:
    if old.id != new.id:
        yield f"pipeline id {old.id} → {new.id} (a new DAG in Airflow; the old one's history stays behind)"
    for name in _PIPELINE_FIELDS:
        if getattr(old, name) != getattr(new, name):
            yield f"{name} {_show(getattr(old, name))} → {_show(getattr(new, name))}"
    for label, before, after in (("source", old.source, new.source), ("destination", old.destination, new.destination)):
        for key in sorted({"kind", "connection", *before.options, *after.options}):
            value_before, value_after = _endpoint_value(before, key), _endpoint_value(after, key)
            if value_before != value_after:
                yield f"{label} {key} {_show(value_before)} → {_show(value_after)}"
    yield from _table_changes({t.name: t for t in old.tables}, {t.name: t for t in new.tables})


def _endpoint_value(endpoint: Endpoint, key: str) -> Any:
    return getattr(endpoint, key) if key in ("kind", "connection") else endpoint.options.get(key)


def _table_changes(old: dict[str, Table], new: dict[str, Table]) -> Iterator[str]:
    for name in new.keys() - old.keys():
        yield f"table `{name}` added ({_describe(new[name])})"
    for name in old.keys() - new.keys():
        yield f"table `{name}` removed"
    for name in [n for n in new if n in old]:
        parts = [
            f"{field} {_show(getattr(old[name], field))} → {_show(getattr(new[name], field))}"
            for field in _TABLE_FIELDS
            if getattr(old[name], field) != getattr(new[name], field)
        ]
        generated = "rows_per_run" in new[name].spec  # copy tables' columns are a field above
        if generated and old[name].spec.get("columns") != new[name].spec.get("columns"):
            parts.append("generated columns changed")
        if old[name].spec.get("rows_per_run") != new[name].spec.get("rows_per_run"):
            parts.append(f"rows_per_run {old[name].spec.get('rows_per_run')} → {new[name].spec.get('rows_per_run')}")
        if parts:
            yield f"table `{name}`: " + ", ".join(parts)


def _describe(table: Table) -> str:
    if "rows_per_run" in table.spec:
        return f"generated, {table.spec['rows_per_run']} rows per run"
    text = table.mode.value
    if table.cursor:
        text += f", cursor `{table.cursor}`"
    if table.primary_key:
        text += f", key {_show(table.primary_key)}"
    return text


def _task_changes(old: dict[str, Any], new: dict[str, Any]) -> Iterator[str]:
    before = [n.task_id for n in task_nodes(old)]
    after = [n.task_id for n in task_nodes(new)]
    yield from (f"task `{t}` added" for t in after if t not in before)
    yield from (f"task `{t}` removed" for t in before if t not in after)


def format_text(old: Side, new: Side, changes: list[FileChange]) -> str:
    if not changes:
        return f"no pipeline changes between {old.label} and {new.label}\n"
    out = [f"pipeline changes: {old.label} → {new.label}", ""]
    for change in changes:
        out.append(f"{change.path}:")
        out += [f"  - {line}" for line in change.summary]
        out.append("")
    out += [c.plan_diff for c in changes if c.plan_diff]
    return "\n".join(out).rstrip("\n") + "\n"


def format_markdown(old: Side, new: Side, changes: list[FileChange]) -> str:
    if not changes:
        return f"### dagforge: no pipeline changes\n\nBetween `{old.label}` and `{new.label}`.\n"
    out = [f"### dagforge: {len(changes)} pipeline file(s) changed", "", f"`{old.label}` → `{new.label}`", ""]
    for change in changes:
        out.append(f"#### `{change.path}`")
        out += [f"- {line}" for line in change.summary]
        if change.plan_diff:
            out += ["", "<details><summary>plan diff</summary>", "", "```diff", change.plan_diff.rstrip("\n"), "```"]
            out += ["", "</details>"]
        out.append("")
    return "\n".join(out)
