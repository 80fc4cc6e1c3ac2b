"""Errors that dagforge reports to users.

Two families:

* :class:`SpecError` — one problem in one pipeline file, with its position. Validation collects
  every one of them and prints them as ``FILE:LINE:COL: KEY.PATH: MESSAGE``.
* :class:`DagforgeError` — raised at run time. :class:`TerminalError` and its subclasses mean
  "a retry cannot help" (bad configuration or bad data); operators turn those into
  ``AirflowFailException`` so Airflow fails the task at once instead of retrying.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem found in a pipeline file."""

    file: str
    """Path of the file, as given on the command line or found in the pipelines folder."""
    line: int
    """1-based line of the offending YAML node (0 when the file itself is the problem)."""
    column: int
    """1-based column of the offending YAML node."""
    key_path: str
    """Dotted path of the offending key, e.g. ``tables[0].cursor``; ``<file>`` for the whole file."""
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.key_path}: {self.message}"


class DagforgeError(Exception):
    """Base of every exception dagforge raises on purpose."""


class TerminalError(DagforgeError):
    """A failure that a retry cannot fix (bad config, bad data, missing object)."""
