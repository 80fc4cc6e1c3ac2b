"""The ``dagforge`` command: validate, render, run, graph, diff, columns, schema.

``validate``, ``render`` and ``schema`` never import Airflow; ``run`` does, and only then.
Exit codes: 0 success, 1 invalid pipelines or a failed run, 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dagforge.catalog import Entry, build_catalog, default_pipelines_dir
from dagforge.localrun import prepare_airflow_env, run_pipeline
from dagforge.plan.render import render_yaml
from dagforge.review.diff import GitError, compare, default_base, format_markdown, format_text, git
from dagforge.review.graph import FORMATS
from dagforge.spec.schema import pipeline_schema

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"dagforge {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("DAGFORGE_DEBUG"):
            raise
        hint = "set DAGFORGE_DEBUG=1 for the traceback"
        print(f"dagforge {args.command}: internal error: {exc!r} ({hint})", file=sys.stderr)
        return EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagforge", description="YAML pipelines → Airflow DAGs.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check pipeline files; print every error with its line")
    validate.add_argument("paths", nargs="*", type=Path, help="files or folders (default: pipelines/)")
    validate.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    validate.set_defaults(handler=cmd_validate)

    render = commands.add_parser("render", help="print the dag-factory config built for a pipeline")
    render.add_argument("file", type=Path)
    render.set_defaults(handler=cmd_render)

    run = commands.add_parser("run", help="run a pipeline once, locally, with Airflow's dag.test()")
    run.add_argument("file", type=Path)
    run.set_defaults(handler=cmd_run)

    graph = commands.add_parser("graph", help="print a pipeline's tasks and dependencies (Mermaid or DOT)")
    graph.add_argument("file", type=Path)
    graph.add_argument("--format", choices=sorted(FORMATS), default="mermaid")
    graph.set_defaults(handler=cmd_graph)

    diff = commands.add_parser("diff", help="what a change does to the pipelines: summary and plan diff")
    diff.add_argument("base", nargs="?", help="git revision (default: merge base with origin/main, else HEAD)")
    diff.add_argument("head", nargs="?", help="git revision (default: the working tree)")
    diff.add_argument("--format", choices=["text", "markdown"], default="text")
    diff.add_argument("--pipelines-dir", default="pipelines", help="folder of pipelines in the repository")
    diff.set_defaults(handler=cmd_diff)

    columns = commands.add_parser(
        "columns", help="read a file's head (a path or an http(s) URL) and print a ready columns: block"
    )
    columns.add_argument("file", help="a local file or an http(s) URL")
    columns.add_argument("--format", choices=["csv", "csv.gz", "parquet", "jsonl", "jsonl.gz"],
                         help="default: from the file's ending")  # fmt: skip
    columns.add_argument("--delimiter", default=",", help="CSV field separator (default ,)")
    columns.add_argument("--no-header", action="store_true", help="the CSV has no header line")
    columns.add_argument("--encoding", default="utf-8", help="the file's text encoding (default utf-8)")
    columns.add_argument("--rows", type=int, default=10_000, help="how many rows to look at (default 10000)")
    columns.set_defaults(handler=cmd_columns)

    schema = commands.add_parser("schema", help="print the pipeline JSON Schema")
    schema.set_defaults(handler=cmd_schema)
    return parser


def _existing(paths: Sequence[Path]) -> list[Path]:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    return list(paths)


def _entry_for(file: Path) -> Entry:
    """The catalog entry of ``file``, validated together with its folder (unique ids)."""
    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    entries = build_catalog([file.parent])
    for entry in entries:
        if entry.file.resolve() == file.resolve():
            return entry
    return build_catalog([file])[0]


def _print_errors(entries: Sequence[Entry]) -> int:
    errors = sorted({e for entry in entries for e in entry.errors})  # a shared defaults.yml once
    for error in errors:
        print(error)
    return len(errors)


def cmd_validate(args: argparse.Namespace) -> int:
    paths = _existing(args.paths or [default_pipelines_dir()])
    entries = build_catalog(paths)
    count = _print_errors(entries)
    invalid = sum(1 for entry in entries if not entry.valid)
    if not args.quiet:
        print(
            f"{len(entries)} pipeline file(s), {len(entries) - invalid} valid, {invalid} invalid, {count} error(s)",
            file=sys.stderr,
        )
    return EXIT_INVALID if invalid else EXIT_OK


def render_entry(entry: Entry) -> str:
    return render_yaml({entry.dag_id: entry.config})


def cmd_render(args: argparse.Namespace) -> int:
    entry = _entry_for(args.file)
    if not entry.valid:
        _print_errors([entry])
        return EXIT_INVALID
    sys.stdout.write(render_entry(entry))
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    entry = _entry_for(args.file)
    if not entry.valid:
        _print_errors([entry])
        return EXIT_INVALID
    sys.stdout.write(FORMATS[args.format](entry.dag_id, entry.config or {}))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
        base = args.base or default_base(repo)
        old, new, changes = compare(repo, base, args.head, args.pipelines_dir)
    except GitError as exc:
        raise UsageError(str(exc)) from exc
    formatter = format_markdown if args.format == "markdown" else format_text
    sys.stdout.write(formatter(old, new, changes))
    return EXIT_OK


def cmd_columns(args: argparse.Namespace) -> int:
    """Print a ``columns:`` block inferred from the file's head; the user reviews and pastes it."""
    from dagforge.plan.shapes import file_format
    from dagforge.sources.file_formats import CsvOptions, infer_columns

    fmt = args.format or file_format({"url": args.file})
    if fmt is None:
        raise UsageError(f"cannot tell the format of {args.file!r} from its ending: give --format")
    options = CsvOptions(delimiter=args.delimiter, header=not args.no_header, encoding=args.encoding)
    with _open_head(args.file) as stream:
        found = infer_columns(stream, fmt, csv=options, sample_rows=args.rows)
    print(f"# from the first {args.rows} rows of {args.file}: review the types (money is often numeric(p,s))")
    print("columns:")
    for name, kind in found.items():
        print(f"  {name}: {kind}")
    return EXIT_OK


def _open_head(where: str):
    """A readable binary stream over a local file or an http(s) URL (only its head is read)."""
    if where.startswith(("http://", "https://")):
        import requests

        from dagforge.sources.http_fetch import Download

        return Download(requests.Session(), where, progress=lambda _line: None)
    path = Path(where)
    if not path.is_file():
        raise UsageError(f"no such file: {where}")
    return path.open("rb")


def cmd_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(pipeline_schema(), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    entry = _entry_for(args.file)
    if not entry.valid:
        _print_errors([entry])
        return EXIT_INVALID
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.cwd() / ".airflow")
    prepare_airflow_env(home, args.file.resolve().parent)
    result = run_pipeline(entry.dag_id)
    for task_id, state in sorted(result.task_states.items()):
        print(f"{state:>16}  {task_id}")
    print(f"run {result.run_id}: {result.state}")
    return EXIT_OK if result.succeeded else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
