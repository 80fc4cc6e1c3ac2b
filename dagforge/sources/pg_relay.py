"""The direct COPY path without a Python loop per row: a child process reads the source's COPY.

``COPY … TO STDOUT`` sends one protocol message per row, and psycopg hands each to Python: on 2M
pgbench rows the read loop alone costs as much as the whole ``psql | psql`` pipe, and reading and
writing in one process add up (a thread does not help: the GIL). Here a child process runs the
read in the same snapshot as the rest of the stage (it imports the snapshot the read's transaction
exports, and pins the same output styles) and writes the COPY bytes into an OS pipe; the stage
reads 1 MB blocks from the pipe into the destination's ``COPY … FROM STDIN``, in the stage's own
transaction. The child is ``psql`` when one is installed (the row loop in C), else
:mod:`dagforge.sources.pg_reader` (a Python loop, but in a process of its own, beside the writer).

Figures and the choice: bench/README.md (``load_e2e.py``) and docs/decisions/0015. Set
``DAGFORGE_COPY_RELAY=off`` to read in the stage's own process (``psql`` or ``python``: force one).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo

log = logging.getLogger(__name__)

RELAY_ENV = "DAGFORGE_COPY_RELAY"
BLOCK = 1 << 20
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class RelayUnavailable(Exception):
    """The child could not start the read (no snapshot to share, a pooler refusing it…): read in process."""


@functools.cache
def psql_path() -> str | None:
    """``psql`` on PATH, else beside the server binaries ``pg_config`` names (looked up once per
    process: every stage asks, and ``pg_config`` is a process of its own)."""
    found = shutil.which("psql")
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        candidate = Path(out) / "psql"
        if out and candidate.is_file():
            return str(candidate)
    return None


def relay_kind() -> str | None:
    """Which child reads: ``psql``, ``python``, or None (in process), by :data:`RELAY_ENV` and the machine."""
    wanted = os.environ.get(RELAY_ENV, "auto").strip().lower()
    if wanted in ("off", "0", "false", "none"):
        return None
    if wanted == "python":
        return "python"
    return "psql" if psql_path() else ("python" if wanted in ("auto", "") else None)


PSQL_PARAMETERS = (
    "host", "hostaddr", "port", "dbname", "user", "options", "connect_timeout", "sslmode", "sslcert", "sslkey",
    "sslrootcert", "sslcrl", "sslpassword", "gssencmode", "krbsrvname", "channel_binding", "target_session_attrs",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
)  # fmt: skip
"""What ``psql``'s connection gets of ours: the parameters every libpq since 13 knows (psycopg's own
libpq may be newer and add some, e.g. ``sslcertmode``, that an older ``psql`` refuses)."""


def _conninfo(conn: psycopg.Connection, kind: str) -> str:
    if kind != "psql":
        return conn.info.dsn
    parameters = conn.info.get_parameters()
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parameters.items() if k in PSQL_PARAMETERS})


def _command(kind: str, conninfo: str, statements: list[str]) -> tuple[list[str], bytes | None]:
    if kind == "psql":
        args = [psql_path() or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-d", conninfo]
        for statement in statements:
            args += ["-c", statement]
        return args, None
    request = json.dumps({"conninfo": conninfo, "statements": statements}).encode()
    return [sys.executable, "-m", "dagforge.sources.pg_reader"], request


@contextlib.contextmanager
def relayed_copy(
    conn: psycopg.Connection, copy_sql: str, pins: tuple[str, ...], kind: str
) -> Iterator[Iterator[bytes]]:
    """COPY chunks of ``copy_sql`` (its parameters bound already) read by a ``kind`` child in the
    snapshot of ``conn``'s open transaction. :class:`RelayUnavailable` when the child fails before
    sending anything (the caller reads in process instead); any later failure is raised as is."""
    try:
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    except psycopg.Error as exc:  # a standby cannot export its snapshot
        raise RelayUnavailable(f"no snapshot to share: {exc}") from exc
    statements = ["BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", f"SET TRANSACTION SNAPSHOT '{snapshot}'",
                  *pins, copy_sql, "COMMIT"]  # fmt: skip
    args, request = _command(kind, _conninfo(conn, kind), statements)
    env = {**os.environ, "PGAPPNAME": "dagforge copy relay"}
    if conn.info.password:
        env["PGPASSWORD"] = conn.info.password
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # Linux: a larger pipe, fewer wake-ups
        import fcntl

        fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
    child = subprocess.Popen(args, stdin=subprocess.PIPE if request else subprocess.DEVNULL, stdout=write_end,
                             stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(write_end)
    if request and child.stdin:
        child.stdin.write(request)
        child.stdin.close()
    first = os.read(read_end, BLOCK)
    if not first and child.wait() != 0:
        os.close(read_end)
        raise RelayUnavailable(_last_line(child.returncode, _stderr_text(child)))

    def blocks() -> Iterator[bytes]:
        block = first
        while block:
            yield block
            block = os.read(read_end, BLOCK)
        if child.wait() != 0:
            raise _failure(kind, _stderr_text(child))

    try:
        yield blocks()
    finally:
        os.close(read_end)
        if child.poll() is None:  # the stage stopped reading (an error downstream): stop the read
            child.kill()
        child.wait()
        if child.stderr:
            child.stderr.close()


_SERVER_ERROR = re.compile(r"^(?:ERROR|FATAL|PANIC):  ([0-9A-Z]{5}): (.*)$", re.MULTILINE)
"""How both children report a server error: ``psql -v VERBOSITY=verbose`` prints its SQLSTATE so."""


def _failure(kind: str, stderr: str) -> psycopg.Error:
    """The child's failure as the server's error class (a guard's refusal stays a 22P02, a lost
    connection an OperationalError), its message the server's; else an OperationalError."""
    found = _SERVER_ERROR.search(stderr)
    if found:
        try:
            error_class = psycopg.errors.lookup(found[1])
        except KeyError:
            error_class = psycopg.Error
        log.error("the COPY relay (%s) failed: %s", kind, stderr)
        return error_class(found[2])
    return psycopg.OperationalError(f"the COPY relay ({kind}) failed: {_last_line(None, stderr)}")


def _stderr_text(child: subprocess.Popen) -> str:
    return child.stderr.read().decode(errors="replace").strip() if child.stderr else ""


def _last_line(returncode: int | None, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("LOCATION:")]
    return lines[-1] if lines else f"exit status {returncode}"
