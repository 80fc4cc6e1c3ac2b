"""A cache of validated, compiled pipeline plans, shared by every process that parses the loader.

A plan is what validating and compiling one pipeline file gives: its pipeline id and its
dag-factory config (``None`` for an invalid file, which is always loaded again so that its errors
are exact). The key is a digest of everything the plan depends on that is known before reading
it: the cache format, dagforge's own code and JSON Schema (:func:`code_fingerprint`), the file's
label and bytes, and the bytes of the ``defaults.yml`` it merges. What is only known after
reading it (the SQL files its transforms name, the dbt project folder) is stored with the plan as
``deps`` and checked on every hit. So a plan is never served for other inputs than the ones it was made from.

Entries are written to a temporary file and renamed into place: several dag-processors and
workers may parse at once, and a reader sees a whole entry or none. An unreadable entry is a
miss. Where the folder cannot be created or written (a read-only image), the cache reads what is
there and writes nothing; with ``DAGFORGE_PLAN_CACHE=off`` there is no cache, and everything is
still correct, only slower. Decision record: docs/decisions/0011-plan-cache.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from dagforge.spec.files import SCHEMA_PATH

log = logging.getLogger(__name__)

CACHE_ENV = "DAGFORGE_PLAN_CACHE"
"""A folder for the cache, or ``off``; unset: ``$AIRFLOW_HOME/dagforge/plans``."""
DISABLED = frozenset({"", "0", "off", "false", "no", "none"})
FORMAT = "dagforge-plan-1"
PRUNE_AFTER_S = 14 * 24 * 3600
"""Entries nobody read for this long are removed (at most one sweep a day)."""
_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def code_fingerprint() -> str:
    """A digest of dagforge's sources and schema (and the parsers' versions): a new key space per change."""
    digest = hashlib.sha256(FORMAT.encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(SCHEMA_PATH.read_bytes())
    for package in ("jsonschema", "PyYAML"):  # validation and parsing come from them too
        digest.update(f"{package}={metadata.version(package)}\0".encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def digest(*parts: bytes | str | None) -> str:
    """sha256 over ``parts``, each length-prefixed (so no two part lists give one digest)."""
    h = hashlib.sha256()
    for part in parts:
        data = b"\xff" if part is None else part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@dataclass(frozen=True)
class Plan:
    """One pipeline file, validated and compiled."""

    pipeline_id: str | None
    config: dict[str, Any] | None
    """dag-factory config; None when the file is invalid."""
    deps: Mapping[str, str] = field(default_factory=dict)
    """Files read while compiling (transform SQL) → sha256 of the content that was read."""


class PlanCache:
    """Plans by key in ``folder``; ``PlanCache(None)`` caches nothing."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.writable = folder is not None
        self.hits = self.misses = 0

    @classmethod
    def from_env(cls, default: Path | None) -> PlanCache:
        setting = os.environ.get(CACHE_ENV)
        if setting is not None and setting.strip().lower() in DISABLED:
            return cls(None)
        folder = Path(setting) if setting else default
        if folder is None:
            return cls(None)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = folder.stat()
        except OSError as exc:
            log.warning("dagforge: no plan cache: cannot use %s (%s); set %s", folder, exc, CACHE_ENV)
            return cls(None)
        if info.st_uid != os.geteuid() or info.st_mode & stat.S_IWOTH:
            # dag-factory imports what a config names: only a folder this user owns may feed it
            log.warning("dagforge: no plan cache: %s is not owned by this user or is world-writable", folder)
            return cls(None)
        return cls(folder)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Plan | None:
        if self.folder is None:
            return None
        try:
            with open(self._path(key), "rb") as f:
                entry = json.loads(f.read())
            if entry.get("key") != key:
                raise ValueError("entry holds another key")
            plan = Plan(entry["pipeline_id"], entry["config"], entry["deps"])
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:  # torn or foreign entry: a miss
            log.debug("dagforge: ignoring plan cache entry %s: %s", key, exc)
            self.misses += 1
            return None
        if not _deps_unchanged(plan.deps):
            self.misses += 1
            return None
        self.hits += 1
        return plan

    def put(self, key: str, plan: Plan) -> None:
        if self.folder is None or not self.writable:
            return
        entry = {"key": key, "pipeline_id": plan.pipeline_id, "config": plan.config, "deps": dict(plan.deps)}
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps(entry, separators=(",", ":")).encode())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            self.writable = False
            log.warning("dagforge: plan cache %s is read-only here (%s); reading it only", self.folder, exc)

    def prune(self, now: float | None = None) -> int:
        """Remove entries unread for :data:`PRUNE_AFTER_S`, at most once a day; returns how many."""
        if self.folder is None or not self.writable:
            return 0
        now = time.time() if now is None else now
        marker = self.folder / ".pruned"
        try:
            if now - marker.stat().st_mtime < 24 * 3600:
                return 0
        except FileNotFoundError:
            pass
        removed = 0
        try:
            marker.touch()
            for path in self.folder.glob("*/*.json"):
                if now - path.stat().st_atime > PRUNE_AFTER_S and now - path.stat().st_mtime > PRUNE_AFTER_S:
                    path.unlink(missing_ok=True)
                    removed += 1
        except OSError as exc:
            log.debug("dagforge: plan cache prune stopped: %s", exc)
        return removed


def text_digest(text: str) -> str:
    """sha256 of a file's text as ``Path.read_text`` gives it (how the spec reads SQL files)."""
    return hashlib.sha256(text.encode()).hexdigest()


TREE_SUFFIXES = (".sql", ".yml", ".yaml", ".md", ".csv")
TREE_SKIPPED = frozenset({"target", "logs", "dbt_packages"})


def tree_digest(folder: Path) -> str:
    """sha256 over the names and bytes of a folder's files (a dbt project: its SQL, YAML, seeds),
    build output left out: a file added, removed or changed gives another digest."""
    entries = []
    for base, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in TREE_SKIPPED and not d.startswith("."))
        for name in sorted(n for n in names if n.endswith(TREE_SUFFIXES)):
            path = Path(base) / name
            entries.append(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _deps_unchanged(deps: Mapping[str, str]) -> bool:
    for path, sha in deps.items():
        try:
            found = Path(path)
            now = tree_digest(found) if found.is_dir() else text_digest(found.read_text(encoding="utf-8"))
            if now != sha:
                return False
        except (OSError, UnicodeDecodeError):
            return False
    return True
