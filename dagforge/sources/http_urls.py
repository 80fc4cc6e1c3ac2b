"""URL templates of the HTTP file source: one file per run interval.

A table's ``url`` may be a Jinja template over the run's data interval, e.g.
``yellow_tripdata_{{ data_interval_start | month }}.csv.gz``. Only the names below exist; anything
else is a validation error with its line (:func:`template_problems`), never a surprise at 3 a.m.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

VARIABLES: dict[str, str] = {
    "data_interval_start": "the start of the run's data interval (UTC)",
    "data_interval_end": "the end of the run's data interval (UTC)",
}
"""Names a URL template may use, with what they are."""

FILTERS: dict[str, tuple[Callable[..., str], str]] = {
    "month": (lambda d: d.strftime("%Y-%m"), "`2024-01`"),
    "year": (lambda d: d.strftime("%Y"), "`2024`"),
    "date": (lambda d: d.strftime("%Y-%m-%d"), "`2024-01-31`"),
    "nodash": (lambda d: d.strftime("%Y%m%d"), "`20240131`"),
    "month_nodash": (lambda d: d.strftime("%Y%m"), "`202401`"),
    "strftime": (lambda d, fmt: d.strftime(fmt), "any `strftime` format: `strftime('%Y/%m')` → `2024/01`"),
}
"""Filters a URL template may apply to a date, with what they print."""


def _environment():
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.clear()
    env.filters.update({name: fn for name, (fn, _) in FILTERS.items()})
    return env


def is_template(url: str) -> bool:
    return "{{" in url or "{%" in url


def template_problems(url: str) -> list[str]:
    """What is wrong with a URL template: syntax, unknown variables, unknown filters (empty: fine)."""
    if not is_template(url):
        return []
    import jinja2
    from jinja2 import meta, nodes

    env = _environment()
    try:
        tree = env.parse(url)
    except jinja2.TemplateSyntaxError as exc:
        return [f"the URL template does not parse: {exc.message}"]
    problems = [
        f"unknown filter {name!r} in the URL template; known: {', '.join(FILTERS)}"
        for name in sorted({f.name for f in tree.find_all(nodes.Filter)} - set(FILTERS))
    ]
    if problems:  # the variables cannot be listed while a filter is unknown
        return problems
    return [
        f"unknown name {name!r} in the URL template; known: {', '.join(VARIABLES)}"
        for name in sorted(meta.find_undeclared_variables(tree) - set(VARIABLES))
    ]


def render_url(url: str, start: str | None, end: str | None) -> str:
    """The URL for one run: the template over the interval's start and end (ISO 8601)."""
    if not is_template(url):
        return url
    if start is None:
        from dagforge.errors import TerminalError

        raise TerminalError(f"the URL {url!r} is a template over the data interval, and this run has none")
    values = {"data_interval_start": utc(start), "data_interval_end": utc(end or start)}
    return _environment().from_string(url).render(values)


def utc(text: str) -> dt.datetime:
    """An ISO 8601 instant in UTC (a value without an offset is UTC)."""
    value = dt.datetime.fromisoformat(text)
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
