"""Download one file over HTTP as a stream, resuming where a dropped connection left off.

An HTTP file source reads files of hundreds of MB straight into a parser, so the body is never held
in memory: :class:`Download` is a readable binary file object over the GET body. Long transfers
over the internet do get cut, so a transient failure mid-body (a reset, a timeout, a body that
ends short of its ``Content-Length``, a 5xx or 429 on reconnect) reconnects with
``Range: bytes=<received>-`` and ``If-Range``, and the reader never notices. When the file changed
between the two requests the bytes cannot be stitched together: that is :class:`FileChanged`, and
the caller starts over. The bytes are the file's bytes: nothing is decompressed on the way
(``decode_content=False``), so a ``.csv.gz`` stays gzip whatever ``Content-Encoding`` says.

:func:`probe` asks for a file's size and validators without downloading it, to decide whether it
is the same file as last time (:meth:`RemoteFile.identity`).

Credentials never reach a message or a log line: URLs are shown through :func:`redact`.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import requests
import urllib3

from dagforge.errors import DagforgeError, TerminalError

log = logging.getLogger(__name__)

MISSING_STATUSES = (404, 410)
HEAD_REFUSED_STATUSES = (403, 405, 501)
"""HEAD answers that send :func:`probe` to a one-byte GET. 403 is there because presigned URLs (S3, GCS) are
signed for GET only and refuse HEAD with it; a real 403 then comes back from the GET."""
MAX_DELAY_SECONDS = 60.0
"""No wait between two attempts is longer than this, whatever the backoff or ``Retry-After`` say."""

DEFAULT_HEADERS = {"Accept-Encoding": "identity"}
"""Ask for the file's own bytes: a server that compresses on the fly would change them (and their ranges)."""

_SECRET_NAME = re.compile(r"token|key|sig|secret|pass|pwd|auth|credential|session", re.IGNORECASE)


class _Transient(Exception):
    """A failure worth retrying that is not an exception of requests: a 429/5xx answer, a short body."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_TRANSIENT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
    _Transient,
)
"""What a later attempt can fix. urllib3's own errors appear because the body is read from ``raw``."""


# ---- what is known about a remote file ----


@dataclass(frozen=True)
class RemoteFile:
    """A file on an HTTP server as its headers describe it."""

    url: str
    """Where it is, with credentials removed (:func:`redact`): safe to log and to store."""
    size: int | None
    etag: str | None
    last_modified: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemoteFile:
        return cls(data["url"], data.get("size"), data.get("etag"), data.get("last_modified"))

    def identity(self) -> dict[str, Any]:
        """What decides "the same file": two probes with equal identities saw the same bytes."""
        return {"size": self.size, "etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_response(cls, url: str, response: requests.Response, size: int | None) -> RemoteFile:
        return cls(redact(url), size, response.headers.get("ETag"), response.headers.get("Last-Modified"))


class FileMissing(DagforgeError):
    """The server says the file is not there (404, 410). Whether that is "not yet" or a failure is the caller's call."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.url = redact(url)
        self.status = status
        super().__init__(f"{self.url}: {status} {reason or _phrase(status)}")


class FileChanged(DagforgeError):
    """The file changed while it was being downloaded: the bytes so far cannot be continued; start over."""


class HttpRefused(TerminalError):
    """The server refused the request (a 4xx other than 404, 410, 429) or the URL is unusable: no retry helps."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        self.url = redact(url)
        self.status = status
        super().__init__(f"{self.url}: {detail}")


class HttpUnavailable(DagforgeError):
    """Transient failures (connection errors, timeouts, 429, 5xx) went on past the retries allowed."""


# ---- keeping credentials out of messages ----


def redact(url: str) -> str:
    """The URL without user info, and with the values of query parameters named like secrets replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    pairs = [_redact_pair(pair) for pair in parts.query.split("&")] if parts.query else []
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pairs), ""))


def _redact_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=REDACTED" if equals and _SECRET_NAME.search(unquote(name)) else pair


def _scrub(text: str, url: str) -> str:
    """``text`` (an exception's message) with the URL redacted and any secret in it masked."""
    text = text.replace(url, redact(url))
    parts = urlsplit(url)
    secrets = [parts.username, parts.password]
    secrets += [value for name, value in parse_qsl(parts.query) if _SECRET_NAME.search(name)]
    for secret in sorted({s for s in secrets if s} | {quote(s, safe="") for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _describe(exc: BaseException, url: str) -> str:
    """A short, credential-free description of a failure: its type and first message."""
    if isinstance(exc, _Transient):
        return str(exc)
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return f"{type(exc).__name__}: {_scrub(text, url)[:300]}" if text else type(exc).__name__


# ---- shared plumbing ----


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _total_from_content_range(value: str | None) -> int | None:
    """The complete length in ``Content-Range: bytes 0-0/1234`` or ``bytes */1234``."""
    return _int((value or "").rpartition("/")[2])


def _headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {**DEFAULT_HEADERS, **(headers or {})}


def _check_status(response: requests.Response, url: str) -> None:
    """Raise what a non-2xx answer means: FileMissing, a retryable _Transient, or HttpRefused."""
    status = response.status_code
    if status in MISSING_STATUSES:
        raise FileMissing(url, status, response.reason)
    if status == 429 or status >= 500:
        raise _Transient(f"{status} {response.reason or _phrase(status)}", _retry_after(response))
    if status >= 300:
        raise HttpRefused(url, status, f"{status} {response.reason or _phrase(status)}")


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _send(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """``session.request``, with requests' own non-transient errors (bad URL…) turned into a redacted HttpRefused."""
    try:
        return session.request(method, url, **kwargs)
    except _TRANSIENT:
        raise
    except requests.RequestException as exc:
        raise HttpRefused(url, None, _describe(exc, url)) from None


@dataclass
class _Streak:
    """Consecutive transient failures: whether one more attempt is allowed, and how long to wait first."""

    url: str
    retries: int
    backoff: float
    failures: int = 0

    def fail(self, exc: BaseException) -> float:
        """Count a failure; the delay before the next attempt, or HttpUnavailable when the retries are used up."""
        self.failures += 1
        if self.failures > self.retries:
            detail = _describe(exc, self.url)
            raise HttpUnavailable(f"{redact(self.url)}: gave up after {self.retries} retries: {detail}") from None
        delay = self.backoff * 2 ** (self.failures - 1)
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return min(max(delay, retry_after), MAX_DELAY_SECONDS)

    def reset(self) -> None:
        self.failures = 0

    @property
    def attempt(self) -> str:
        return f"retry {self.failures} of {self.retries}"


# ---- probe ----


def probe(
    session: requests.Session,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    auth: Any = None,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 1.0,
) -> RemoteFile:
    """Size and validators of a remote file, without its body: HEAD, or a one-byte GET where HEAD is refused."""
    streak = _Streak(url, retries, backoff)
    while True:
        try:
            return _probe_once(session, url, _headers(headers), auth, timeout)
        except _TRANSIENT as exc:
            delay = streak.fail(exc)
            log.warning("probe %s: %s; %s in %.1f s", redact(url), _describe(exc, url), streak.attempt, delay)
            time.sleep(delay)


def _probe_once(session: requests.Session, url: str, headers: dict[str, str], auth: Any, timeout: float) -> RemoteFile:
    response = _send(session, "HEAD", url, headers=headers, auth=auth, timeout=timeout, allow_redirects=True)
    response.close()
    if response.status_code in HEAD_REFUSED_STATUSES:
        return _probe_by_range(session, url, headers, auth, timeout)
    _check_status(response, url)
    return RemoteFile.from_response(url, response, _int(response.headers.get("Content-Length")))


def _probe_by_range(
    session: requests.Session, url: str, headers: dict[str, str], auth: Any, timeout: float
) -> RemoteFile:
    """``GET`` with ``Range: bytes=0-0``: the size is in ``Content-Range`` (416 ``bytes */0`` for an empty file)."""
    headers = {**headers, "Range": "bytes=0-0"}
    with _send(session, "GET", url, headers=headers, auth=auth, timeout=timeout, stream=True) as response:
        if response.status_code in (206, 416):
            size = _total_from_content_range(response.headers.get("Content-Range"))
        else:  # a server that ignores Range sends the whole file: the headers are enough, the body is not read
            _check_status(response, url)
            size = _int(response.headers.get("Content-Length"))
        return RemoteFile.from_response(url, response, size)


# ---- download ----


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


class Download(io.RawIOBase):
    """The body of ``GET url`` as a readable binary file, resumed across dropped connections.

    Opening sends the first GET (404 or 410 raise :class:`FileMissing` here). Reading streams the
    body ``chunk_bytes`` at a time while a sha256 and a byte count are kept; once the body is read
    to the end (and its length checked against ``Content-Length``), :attr:`facts` says what was
    downloaded. ``progress`` (default: this module's logger) hears how far it got at most every
    ``progress_every_seconds``, every resume, and a last line at the end.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        chunk_bytes: int = 1 << 20,
        progress: Callable[[str], None] | None = None,
        progress_every_seconds: float = 10.0,
    ) -> None:
        self._response: requests.Response | None = None
        super().__init__()
        self._session, self._url, self._auth, self._timeout = session, url, auth, timeout
        self._headers = _headers(headers)
        self._chunk_bytes = chunk_bytes
        self._say = progress or log.info
        self._every = progress_every_seconds
        self._streak = _Streak(url, retries, backoff)
        self._remote: RemoteFile | None = None
        self._received = 0
        self._position = 0
        self._sha256 = hashlib.sha256()
        self._pending = memoryview(b"")
        self._resumes = 0
        self._started = self._last_report = time.monotonic()
        self._facts: dict[str, Any] | None = None
        self._connect("request failed", None)

    # ---- the file object ----

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        while not self._pending:
            if self._facts is not None:
                return 0
            self._pending = memoryview(self._next_chunk())
        n = min(len(buffer), len(self._pending))
        memoryview(buffer).cast("B")[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._position += n
        return n

    def tell(self) -> int:
        """How many bytes the reader has had so far."""
        return self._position

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        super().close()

    # ---- what is known ----

    @property
    def remote(self) -> RemoteFile:
        """The file as the GET that is being read from describes it (credentials removed from the URL)."""
        assert self._remote is not None
        return self._remote

    @property
    def facts(self) -> dict[str, Any]:
        """What was downloaded, once the body is read: ``url``, ``size`` (bytes received), ``etag``,
        ``last_modified``, ``sha256``, ``seconds``, ``resumes``."""
        if self._facts is None:
            raise RuntimeError(f"{redact(self._url)}: facts are known once the whole body has been read")
        return dict(self._facts)

    # ---- the connection ----

    def _connect(self, what: str, failure: BaseException | None) -> None:
        """Send the GET from byte ``received``, after waiting out ``failure`` if there was one, until it is accepted."""
        while True:
            if failure is not None:
                self._wait_after(what, failure)
                what = "request failed"
            try:
                self._response = self._request()
                return
            except _TRANSIENT as exc:
                failure = exc

    def _wait_after(self, what: str, failure: BaseException) -> None:
        delay = self._streak.fail(failure)
        action = f"resuming from byte {self._received}" if self._received else "starting again"
        self._say(f"{what} ({_describe(failure, self._url)}): {action} ({self._streak.attempt})")
        time.sleep(delay)

    def _request(self) -> requests.Response:
        headers = dict(self._headers)
        if self._received:
            headers["Range"] = f"bytes={self._received}-"
            validator = self._validator()
            if validator:
                headers["If-Range"] = validator
        response = _send(
            self._session, "GET", self._url, headers=headers, auth=self._auth, timeout=self._timeout, stream=True
        )
        try:
            self._accept(response)
        except BaseException:
            response.close()
            raise
        return response

    def _validator(self) -> str | None:
        """What ``If-Range`` carries: the ETag when it is strong (weak ones are not allowed there), else the date."""
        remote = self.remote
        return remote.etag if remote.etag and not remote.etag.startswith("W/") else remote.last_modified

    def _accept(self, response: requests.Response) -> None:
        """Check an answer can be read from byte ``received`` on; remember the file's validators on a first 200."""
        if self._received and response.status_code == 416:
            raise FileChanged(f"{redact(self._url)}: the file is now shorter than the {self._received} bytes read")
        _check_status(response, self._url)
        if not self._received:
            size = _int(response.headers.get("Content-Length"))
            self._remote = RemoteFile.from_response(self._url, response, size)
        elif response.status_code != 206:
            raise FileChanged(
                f"{redact(self._url)}: asked to resume from byte {self._received}, the server sent the whole file "
                f"({response.status_code}): the file changed, or the server cannot resume"
            )
        else:
            self._check_resumed(response)

    def _check_resumed(self, response: requests.Response) -> None:
        """A 206 must continue the same file at the right byte."""
        content_range = response.headers.get("Content-Range", "")
        total = _total_from_content_range(content_range)
        problem = self._resume_problem(content_range, total, response.headers.get("ETag"))
        if problem:
            raise FileChanged(f"{redact(self._url)}: {problem}")
        if self.remote.size is None and total is not None:
            self._remote = replace(self.remote, size=total)

    def _resume_problem(self, content_range: str, total: int | None, etag: str | None) -> str | None:
        """Why a 206 does not continue the bytes read so far, or None when it does."""
        remote = self.remote
        first = _int(content_range.removeprefix("bytes ").partition("-")[0])
        if first != self._received:
            return f"asked to resume from byte {self._received}, the server sent {content_range or 'no Content-Range'}"
        if remote.size is not None and total is not None and total != remote.size:
            return f"the size changed from {remote.size} to {total} bytes"
        if remote.etag and etag and etag != remote.etag:
            return f"the ETag changed from {remote.etag} to {etag}"
        return None

    # ---- the body ----

    def _next_chunk(self) -> bytes:
        """The next bytes of the body, reconnecting as often as needed; b"" once it has all been read."""
        while True:
            try:
                assert self._response is not None
                chunk = self._response.raw.read(self._chunk_bytes, decode_content=False)
                if not chunk:
                    self._check_complete()
            except _TRANSIENT as exc:
                self._response.close()
                self._connect(f"connection dropped after {_mb(self._received)}", exc)
                self._resumes += 1
                continue
            if chunk:
                self._count(chunk)
            else:
                self._finish()
            return chunk

    def _check_complete(self) -> None:
        """A body that ends "cleanly" short of its length was cut: that is one more resume."""
        size = self.remote.size
        if size is not None and self._received < size:
            raise _Transient(f"body ended after {self._received} of {size} bytes")
        if size is not None and self._received > size:
            raise FileChanged(f"{redact(self._url)}: {self._received} bytes received, {size} expected")

    def _count(self, chunk: bytes) -> None:
        self._received += len(chunk)
        self._sha256.update(chunk)
        self._streak.reset()
        now = time.monotonic()
        if now - self._last_report >= self._every:
            self._last_report = now
            self._say(self._progress_line(now))

    def _progress_line(self, now: float) -> str:
        size = self.remote.size
        rate = self._received / max(now - self._started, 1e-9)
        of = f" of {_mb(size)} ({self._received * 100 // size if size else 100}%)" if size is not None else ""
        return f"downloaded {_mb(self._received)}{of} at {_mb(rate)}/s"

    def _finish(self) -> None:
        now = time.monotonic()
        seconds = now - self._started
        remote = self.remote
        self._facts = {
            "url": remote.url,
            "size": self._received,
            "etag": remote.etag,
            "last_modified": remote.last_modified,
            "sha256": self._sha256.hexdigest(),
            "seconds": round(seconds, 3),
            "resumes": self._resumes,
        }
        resumes = f", {self._resumes} resume{'s' * (self._resumes != 1)}" if self._resumes else ""
        self._say(f"{self._progress_line(now)} in {seconds:.1f} s{resumes}")
        if self._response is not None:
            self._response.close()
            self._response = None
