"""Sources: where rows come from, one module per kind behind one contract.

A source kind is a class that, bound to its connection, implements
:class:`dagforge.contracts.Source`: ``decide`` (the check step: what the next load reads, given
the destination's state) and ``read`` (one consistent read of that window, whose rows go into a
stage's part files as COPY bytes or Arrow record batches, and whose :class:`~dagforge.contracts.
SourceSnapshot` travels with them). Stages and destinations see only that contract; adding a kind
is adding a module and an entry in :data:`SOURCES`. Classes are imported when first used, so a
DAG parse never pays for a source's libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

SOURCES: dict[str, str] = {
    "postgres": "dagforge.sources.postgres:PostgresSource",
    "http": "dagforge.sources.http:HttpSource",
}
"""source.kind → ``module:class`` of the kind's :class:`~dagforge.contracts.Source` (``generate``
writes its rows itself, in one task: :mod:`dagforge.generate`)."""


def source_class(kind: str) -> Any:
    """The :class:`~dagforge.contracts.Source` class of a source kind."""
    try:
        module, name = SOURCES[kind].split(":")
    except KeyError:
        raise ValueError(f"no source kind {kind!r}; known: {', '.join(sorted(SOURCES))}") from None
    return getattr(importlib.import_module(module), name)
