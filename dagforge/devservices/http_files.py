"""A real HTTP file server on 127.0.0.1 for tests and the demo, with faults on demand.

It serves the files under one folder the way a static web server or an object store's HTTP
endpoint does (``ETag``, ``Last-Modified``, byte ranges, ``If-Range``), streaming each file in
chunks, so downloads of hundreds of MB can be exercised over real sockets. Tests make it misbehave
on purpose, one path at a time: cut a body short and close the socket (:meth:`FileServer.drop_after`),
answer an error status (:meth:`FileServer.fail_with`), or insist on a credential
(:meth:`FileServer.require`). Every request is recorded in :attr:`FileServer.requests`.

Run it by hand with ``python -m dagforge.devservices.http_files ROOT [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import mimetypes
import re
import socket
import sys
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

CHUNK_BYTES = 64 * 1024
"""How much of a file is read and written at a time: files are streamed, never read whole."""

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class _Served:
    """What the server knows about one file when it answers: its validators and size."""

    path: Path
    size: int
    etag: str
    last_modified: str


class FileServer:
    """Serve the files under ``root`` over HTTP on a background thread; a context manager too.

    ``head_allowed=False`` answers HEAD with 405 (servers that only allow GET, e.g. some presigned
    URLs); ``honour_if_range=False`` serves a range even when ``If-Range`` no longer matches (a
    server that gets it wrong); ``gzip_encoding=True`` sends ``*.gz`` files with
    ``Content-Encoding: gzip``, as Apache's ``AddEncoding`` or an object stored with that metadata do.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        head_allowed: bool = True,
        honour_if_range: bool = True,
        gzip_encoding: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.head_allowed = head_allowed
        self.honour_if_range = honour_if_range
        self.gzip_encoding = gzip_encoding
        self._lock = threading.Lock()
        self._drops: dict[str, list[int]] = {}
        self._failures: dict[str, list[int]] = {}
        self._required: dict[str, str] = {}
        self._requests: list[tuple[str, str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self) -> FileServer:
        """Bind the socket and serve on a daemon thread; ``port=0`` picks a free port."""
        server = _QuietHTTPServer((self.host, self.port), _Handler)
        server.files = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"http-files:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (requests in flight finish on their daemon threads)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, relative: str | Path) -> str:
        """The URL of a file under root, given its path relative to root."""
        return f"{self.url}/{quote(_key(str(relative)))}"

    # ---- faults and assertions (thread-safe) ----

    def drop_after(self, relative: str | Path, nbytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of this path send headers and ``nbytes`` of body, then close the socket."""
        with self._lock:
            self._drops.setdefault(_key(str(relative)), []).extend([nbytes] * times)

    def fail_with(self, relative: str | Path, status: int, times: int = 1) -> None:
        """The next ``times`` requests of this path (any method) answer ``status`` with a short body."""
        with self._lock:
            self._failures.setdefault(_key(str(relative)), []).extend([status] * times)

    def require(self, header_name: str, value: str) -> None:
        """Every request must carry ``header_name: value`` from now on, or it gets 401."""
        with self._lock:
            self._required[header_name] = value

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """``(method, path, Range header or None)`` of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---- used by the handler ----

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self._requests.append((method, path, range_header))

    def _authorized(self, headers: Any) -> bool:
        with self._lock:
            required = dict(self._required)
        return all(headers.get(name) == value for name, value in required.items())

    def _take(self, faults: dict[str, list[int]], key: str) -> int | None:
        """Pop the next pending fault for a path, or None when there is none."""
        with self._lock:
            pending = faults.get(key)
            return pending.pop(0) if pending else None

    def _resolve(self, key: str) -> _Served | None:
        """The file a request path names, or None if it is missing, a folder, or outside root."""
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        stat = target.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        return _Served(target, stat.st_size, etag, formatdate(stat.st_mtime, usegmt=True))


class _QuietHTTPServer(ThreadingHTTPServer):
    """A threaded server that does not print a traceback when a client hangs up mid-response."""

    daemon_threads = True
    files: FileServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _key(relative: str) -> str:
    """A request path or a relative file path as one key: decoded, without the leading slash."""
    return unquote(urlsplit(relative).path).lstrip("/")


def _wanted_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` for one satisfiable byte range, None to send everything, "unsatisfiable" for 416.

    Only single ranges are understood; anything else is ignored, which RFC 9110 allows.
    """
    match = _RANGE.match(header or "")
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # a suffix: the last N bytes
        return (max(size - int(last), 0), size - 1) if size and int(last) else "unsatisfiable"
    if last and int(last) < int(first):
        return None
    if int(first) >= size:
        return "unsatisfiable"
    return int(first), min(int(last), size - 1) if last else size - 1


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests from the FileServer that owns the listening socket."""

    server: _QuietHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "dagforge-http-files"

    @property
    def files(self) -> FileServer:
        return self.server.files

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self, body: bool) -> None:
        self.files._record(self.command, urlsplit(self.path).path, self.headers.get("Range"))
        key = _key(self.path)
        status = self._refusal(key, body)
        if status:
            self._answer_status(status)
            return
        served = self.files._resolve(key)
        if served is None:
            self._answer_status(HTTPStatus.NOT_FOUND)
            return
        self._answer_file(served, body)

    def _refusal(self, key: str, body: bool) -> int | None:
        """The status that refuses this request before any file is looked at, or None."""
        if not self.files._authorized(self.headers):
            return HTTPStatus.UNAUTHORIZED
        if not body and not self.files.head_allowed:
            return HTTPStatus.METHOD_NOT_ALLOWED
        return self.files._take(self.files._failures, key)

    def _answer_status(self, status: int) -> None:
        text = f"{status} {_phrase(status)}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Basic realm="dagforge"')
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)

    def _answer_file(self, served: _Served, body: bool) -> None:
        wanted = _wanted_range(self._range_header(served), served.size)
        if wanted == "unsatisfiable":
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{served.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = wanted if isinstance(wanted, tuple) else (0, served.size - 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if wanted else HTTPStatus.OK)
        self._file_headers(served, first, last, partial=bool(wanted))
        if body:
            drop = self.files._take(self.files._drops, _key(self.path))
            self._send_body(served.path, first, last - first + 1, drop)

    def _range_header(self, served: _Served) -> str | None:
        """The Range header, or None when ``If-Range`` names another version of the file."""
        if_range = self.headers.get("If-Range")
        if if_range and self.files.honour_if_range and if_range not in (served.etag, served.last_modified):
            return None
        return self.headers.get("Range")

    def _file_headers(self, served: _Served, first: int, last: int, partial: bool) -> None:
        content_type, encoding = mimetypes.guess_type(served.path.name)
        if encoding == "gzip" and self.files.gzip_encoding:
            self.send_header("Content-Encoding", "gzip")
        elif encoding:
            content_type = "application/gzip" if encoding == "gzip" else None
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("ETag", served.etag)
        self.send_header("Last-Modified", served.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {first}-{last}/{served.size}")
        self.end_headers()

    def _send_body(self, path: Path, offset: int, length: int, drop: int | None) -> None:
        """Stream ``length`` bytes from ``offset``; with ``drop``, stop after that many and hang up."""
        limit = length if drop is None else min(drop, length)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                sent = _copy(handle, self.wfile, limit)
        except ConnectionError:
            self.close_connection = True
            return
        if drop is not None or sent < length:  # dropped on purpose, or the file shrank while it was sent
            self._hang_up()

    def _hang_up(self) -> None:
        """Close the socket mid-body: the client sees the body end short of Content-Length."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def _copy(source: BinaryIO, sink: Any, nbytes: int) -> int:
    """Copy ``nbytes`` (or up to the end of ``source``) in chunks of :data:`CHUNK_BYTES`; how many were copied."""
    copied = 0
    while copied < nbytes:
        chunk = source.read(min(CHUNK_BYTES, nbytes - copied))
        if not chunk:
            break
        sink.write(chunk)
        copied += len(chunk)
    return copied


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def main(argv: list[str] | None = None) -> int:
    """Serve a folder until Ctrl-C, printing its URL."""
    parser = argparse.ArgumentParser(prog="python -m dagforge.devservices.http_files", description=main.__doc__)
    parser.add_argument("root", type=Path, help="the folder whose files are served")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root}: not a folder")
    with FileServer(args.root, args.host, args.port) as server:
        print(f"serving {server.root} at {server.url}/ (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
