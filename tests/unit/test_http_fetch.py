"""dagforge.sources.http_fetch: probes and resumable streaming downloads against the real FileServer."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import random
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dagforge.devservices.http_files import FileServer
from dagforge.sources.http_fetch import (
    Download,
    FileChanged,
    FileMissing,
    HttpRefused,
    HttpUnavailable,
    RemoteFile,
    probe,
    redact,
)

MB = 1 << 20
FAST = {"backoff": 0.001}
"""Keeps the retry waits in these tests to milliseconds."""


@pytest.fixture(scope="module")
def payload() -> bytes:
    return random.Random(7).randbytes(5 * MB + 12345)


@pytest.fixture
def root(tmp_path: Path, payload: bytes) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    (root / "big.bin").write_bytes(payload)
    (root / "empty.bin").write_bytes(b"")
    return root


@pytest.fixture
def server(root: Path) -> Iterator[FileServer]:
    with FileServer(root) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def read_all(download: Download, size: int = 100_000) -> bytes:
    """Read the way a parser does: many small reads."""
    parts = []
    while chunk := download.read(size):
        parts.append(chunk)
    return b"".join(parts)


def read_exactly(download: Download, size: int) -> bytes:
    """``size`` bytes: a raw file's ``read`` may return fewer than asked for."""
    parts = bytearray()
    while len(parts) < size and (chunk := download.read(size - len(parts))):
        parts += chunk
    return bytes(parts)


def replace(path: Path, content: bytes) -> None:
    """Swap in a new version of a file at once, as an object store does (the old one is still served to the end).

    Its mtime is moved on so that its ETag differs even on a file system with coarse timestamps."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(content)
    stat = path.stat()
    os.utime(new, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    os.replace(new, path)


def closed_port_url(root: Path, path: str) -> str:
    """A URL on 127.0.0.1 where nothing listens any more."""
    with FileServer(root) as gone:
        url = gone.url_for(path)
    return url


# ---- probe ----


def test_probe_reports_size_and_validators(server: FileServer, session: requests.Session, payload: bytes) -> None:
    head = requests.head(server.url_for("big.bin"), timeout=5).headers
    server.clear_requests()
    remote = probe(session, server.url_for("big.bin"))
    assert remote == RemoteFile(server.url_for("big.bin"), len(payload), head["ETag"], head["Last-Modified"])
    assert remote.identity() == {"size": len(payload), "etag": head["ETag"], "last_modified": head["Last-Modified"]}
    assert RemoteFile.from_dict(remote.to_dict()) == remote
    assert server.requests == [("HEAD", "/big.bin", None)]


def test_probe_of_a_missing_file_raises_file_missing(server: FileServer, session: requests.Session) -> None:
    with pytest.raises(FileMissing) as missing:
        probe(session, server.url_for("gone.csv.gz"))
    assert missing.value.status == 404
    assert str(missing.value) == f"{server.url}/gone.csv.gz: 404 Not Found"


def test_probe_falls_back_to_a_one_byte_get_when_head_is_refused(
    root: Path, session: requests.Session, payload: bytes
) -> None:
    with FileServer(root, head_allowed=False) as server:
        remote = probe(session, server.url_for("big.bin"))
        assert remote.size == len(payload)
        assert remote.etag and remote.last_modified
        assert server.requests == [("HEAD", "/big.bin", None), ("GET", "/big.bin", "bytes=0-0")]
        assert probe(session, server.url_for("empty.bin")).size == 0  # 416 bytes */0
        with pytest.raises(FileMissing):
            probe(session, server.url_for("gone.bin"))


def test_probe_tries_a_get_when_head_is_forbidden(server: FileServer, session: requests.Session) -> None:
    """A presigned URL is signed for GET only: HEAD gets 403."""
    server.fail_with("big.bin", 403)
    assert probe(session, server.url_for("big.bin")).size
    assert [method for method, _, _ in server.requests] == ["HEAD", "GET"]
    server.fail_with("big.bin", 403, times=2)
    with pytest.raises(HttpRefused, match="403 Forbidden"):
        probe(session, server.url_for("big.bin"))


def test_probe_retries_transient_answers(server: FileServer, session: requests.Session, payload: bytes) -> None:
    server.fail_with("big.bin", 503)
    server.fail_with("big.bin", 429)
    assert probe(session, server.url_for("big.bin"), **FAST).size == len(payload)
    assert len(server.requests) == 3


def test_probe_gives_up_after_the_retries(server: FileServer, session: requests.Session) -> None:
    server.fail_with("big.bin", 500, times=10)
    with pytest.raises(HttpUnavailable, match="gave up after 2 retries: 500 Internal Server Error"):
        probe(session, server.url_for("big.bin"), retries=2, **FAST)
    assert len(server.requests) == 3


def test_probe_does_not_retry_a_refusal(server: FileServer, session: requests.Session) -> None:
    server.require("X-Api-Key", "k1")
    with pytest.raises(HttpRefused) as refused:
        probe(session, server.url_for("big.bin"), **FAST)
    assert refused.value.status == 401
    assert str(refused.value) == f"{server.url}/big.bin: 401 Unauthorized"
    assert len(server.requests) == 1
    assert probe(session, server.url_for("big.bin"), headers={"X-Api-Key": "k1"}).size


def test_probe_of_a_server_that_is_not_there(root: Path, session: requests.Session) -> None:
    with pytest.raises(HttpUnavailable, match="gave up after 1 retries: ConnectionError"):
        probe(session, closed_port_url(root, "big.bin"), retries=1, **FAST)


# ---- download ----


def test_download_streams_the_exact_bytes(server: FileServer, session: requests.Session, payload: bytes) -> None:
    with Download(session, server.url_for("big.bin"), chunk_bytes=256 * 1024) as download:
        assert download.remote.size == len(payload)
        with pytest.raises(RuntimeError, match="once the whole body"):
            download.facts  # noqa: B018
        assert read_all(download) == payload
        assert download.read(10) == b""
        facts = download.facts
    assert facts["size"] == len(payload)
    assert facts["sha256"] == hashlib.sha256(payload).hexdigest()
    assert facts["url"] == server.url_for("big.bin")
    assert facts["etag"] == download.remote.etag and facts["last_modified"]
    assert facts["resumes"] == 0 and facts["seconds"] >= 0
    assert server.requests == [("GET", "/big.bin", None)]


def test_download_resumes_after_dropped_connections(
    server: FileServer, session: requests.Session, payload: bytes
) -> None:
    server.drop_after("big.bin", MB, times=2)
    lines: list[str] = []
    with Download(session, server.url_for("big.bin"), progress=lines.append, **FAST) as download:
        assert read_all(download) == payload
    assert download.facts["sha256"] == hashlib.sha256(payload).hexdigest()
    assert download.facts["resumes"] == 2
    assert server.requests == [
        ("GET", "/big.bin", None),
        ("GET", "/big.bin", f"bytes={MB}-"),
        ("GET", "/big.bin", f"bytes={2 * MB}-"),
    ]
    assert any(line.startswith("connection dropped after 1.0 MB (ProtocolError: ") for line in lines)
    assert any(line.endswith(f"resuming from byte {2 * MB} (retry 1 of 5)") for line in lines)


def test_download_retries_a_503_on_the_first_get(server: FileServer, session: requests.Session, payload: bytes) -> None:
    server.fail_with("big.bin", 503)
    with Download(session, server.url_for("big.bin"), **FAST) as download:
        assert read_all(download) == payload
    assert [method for method, _, _ in server.requests] == ["GET", "GET"]
    assert download.facts["resumes"] == 0  # nothing had been read: that is a retry, not a resume


def test_download_retries_a_429_on_reconnect(server: FileServer, session: requests.Session, payload: bytes) -> None:
    server.drop_after("big.bin", MB)
    with Download(session, server.url_for("big.bin"), **FAST) as download:
        server.fail_with("big.bin", 429)  # the first GET has been answered: this one hits the reconnect
        assert read_all(download) == payload
    resume = ("GET", "/big.bin", f"bytes={MB}-")
    assert server.requests == [("GET", "/big.bin", None), resume, resume]  # dropped, 429, 206
    assert download.facts["resumes"] == 1


def test_download_gives_up_when_reconnects_keep_failing(server: FileServer, session: requests.Session) -> None:
    server.drop_after("big.bin", MB)
    with Download(session, server.url_for("big.bin"), retries=2, **FAST) as download:
        server.fail_with("big.bin", 502, times=10)
        with pytest.raises(HttpUnavailable, match="gave up after 2 retries: 502 Bad Gateway"):
            read_all(download)
    assert len(server.requests) == 3


def test_a_file_replaced_before_the_resume_is_file_changed(
    server: FileServer, session: requests.Session, root: Path, payload: bytes
) -> None:
    server.drop_after("big.bin", MB)
    with Download(session, server.url_for("big.bin"), chunk_bytes=64 * 1024, **FAST) as download:
        assert read_exactly(download, 512 * 1024) == payload[: 512 * 1024]  # the drop at 1 MB is still ahead
        replace(root / "big.bin", payload[::-1] + b"longer")
        with pytest.raises(FileChanged, match="the server sent the whole file"):
            read_all(download)
    assert server.requests[-1] == ("GET", "/big.bin", f"bytes={MB}-")


def test_a_206_with_another_etag_is_file_changed(root: Path, session: requests.Session, payload: bytes) -> None:
    with FileServer(root, honour_if_range=False) as server:  # serves the range whatever If-Range says
        server.drop_after("big.bin", MB)
        with Download(session, server.url_for("big.bin"), chunk_bytes=64 * 1024, **FAST) as download:
            read_exactly(download, 512 * 1024)
            replace(root / "big.bin", payload[::-1])  # same size, new content
            with pytest.raises(FileChanged, match="the ETag changed"):
                read_all(download)


def test_a_missing_file_is_file_missing_at_open(server: FileServer, session: requests.Session) -> None:
    with pytest.raises(FileMissing, match="404 Not Found"):
        Download(session, server.url_for("gone.bin"), **FAST)


def test_a_gz_file_is_read_as_gzip_whatever_its_content_encoding(root: Path, session: requests.Session) -> None:
    text = "".join(f"{i},name {i},{i * 0.5}\n" for i in range(200_000))
    compressed = gzip.compress(text.encode(), compresslevel=1)
    (root / "rows.csv.gz").write_bytes(compressed)
    with FileServer(root, gzip_encoding=True) as server:
        server.drop_after("rows.csv.gz", len(compressed) // 3)
        assert requests.head(server.url_for("rows.csv.gz"), timeout=5).headers["Content-Encoding"] == "gzip"
        url = server.url_for("rows.csv.gz")
        download = Download(session, url, chunk_bytes=64 * 1024, **FAST)
        with download, gzip.GzipFile(fileobj=download) as unzipped:
            assert unzipped.read().decode() == text
        assert download.facts["size"] == len(compressed)  # the file's bytes, not the decompressed ones
        assert download.facts["resumes"] == 1


def test_pyarrow_reads_a_download(root: Path, session: requests.Session) -> None:
    pa = pytest.importorskip("pyarrow")
    csv = pytest.importorskip("pyarrow.csv")
    rows = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(1000))
    (root / "rows.csv.gz").write_bytes(gzip.compress(rows))
    with FileServer(root) as server, Download(session, server.url_for("rows.csv.gz")) as download:
        table = csv.read_csv(pa.input_stream(download, compression="gzip"))
    assert table.num_rows == 1000
    assert table.column("id").to_pylist()[-1] == 999


def test_progress_lines(server: FileServer, session: requests.Session, payload: bytes) -> None:
    lines: list[str] = []
    server.drop_after("big.bin", MB)
    url = server.url_for("big.bin")
    with Download(session, url, progress=lines.append, progress_every_seconds=0, **FAST) as download:
        read_all(download)
    size = f"{len(payload) / 1e6:.1f} MB"
    assert lines[0].startswith(f"downloaded 1.0 MB of {size} (19%) at ")
    assert all(line.startswith("downloaded ") or line.startswith("connection dropped") for line in lines)
    assert lines[-1].startswith(f"downloaded {size} of {size} (100%) at ")
    assert lines[-1].endswith(", 1 resume")


def test_progress_is_quiet_between_intervals(server: FileServer, session: requests.Session) -> None:
    lines: list[str] = []
    with Download(session, server.url_for("big.bin"), progress=lines.append, progress_every_seconds=3600) as download:
        read_all(download)
    assert len(lines) == 1  # only the last line
    assert " in " in lines[0]


# ---- credentials stay out of messages ----


def test_credentials_never_appear_in_messages(server: FileServer, session: requests.Session, root: Path) -> None:
    server.require("Authorization", "Basic " + base64.b64encode(b"user:pw-s3cret").decode())
    host = server.url.removeprefix("http://")
    url = f"http://user:pw-s3cret@{host}/gone.csv?token=tok-s3cret&day=1"
    with pytest.raises(FileMissing) as probed:  # a 404, not a 401: the credentials were sent
        probe(session, url)
    with pytest.raises(FileMissing) as downloaded:
        Download(session, url)
    unreachable = closed_port_url(root, "x.csv").replace("http://", "http://user:pw-s3cret@") + "?sig=sig-s3cret"
    with pytest.raises(HttpUnavailable) as gave_up:
        probe(session, unreachable, retries=0)
    for error in (probed.value, downloaded.value, gave_up.value):
        shown = "".join(traceback.format_exception(error))  # what a log shows, chained exceptions included
        assert "s3cret" not in shown and "user:" not in shown
    assert str(probed.value) == f"http://{host}/gone.csv?token=REDACTED&day=1: 404 Not Found"
    assert "sig=REDACTED" in str(gave_up.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://u:p@host:8443/a/b.csv?X-Amz-Signature=abc&x=1",
            "https://host:8443/a/b.csv?X-Amz-Signature=REDACTED&x=1",
        ),
        ("https://host/a?api_key=k&access_token=t", "https://host/a?api_key=REDACTED&access_token=REDACTED"),
        ("http://host/plain.csv", "http://host/plain.csv"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_an_empty_file_downloads(server: FileServer, session: requests.Session) -> None:
    lines: list[str] = []
    with Download(session, server.url_for("empty.bin"), progress=lines.append) as download:
        assert download.read() == b""
    assert download.facts["size"] == 0
    assert download.facts["sha256"] == hashlib.sha256(b"").hexdigest()
    assert lines == [lines[0]] and lines[0].startswith("downloaded 0.0 MB of 0.0 MB (100%)")
