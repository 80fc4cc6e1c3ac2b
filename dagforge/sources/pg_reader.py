"""The COPY relay's reader where no ``psql`` is installed (:mod:`dagforge.sources.pg_relay`).

Reads ``{"conninfo": …, "statements": […]}`` from stdin (the password comes in ``PGPASSWORD``),
runs the statements on one connection, and writes the output of the one ``COPY … TO STDOUT``
among them to stdout, through a 1 MB buffer. Imports psycopg only.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    import psycopg

    request = json.loads(sys.stdin.buffer.read())
    with (
        open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False) as out,
        psycopg.connect(request["conninfo"], autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        for statement in request["statements"]:
            if not statement.lstrip().upper().startswith("COPY"):
                cur.execute(statement)
                continue
            with cur.copy(statement) as copy:
                write, read = out.write, copy.read
                while chunk := read():
                    write(chunk)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line for the stage's error: a server's as psql prints it
        sqlstate = getattr(exc, "sqlstate", None)
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        print(f"ERROR:  {sqlstate}: {primary}" if sqlstate and primary else f"{type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
