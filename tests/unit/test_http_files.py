"""dagforge.devservices.http_files: a real file server over real sockets, and the faults it injects on demand."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from dagforge.devservices.http_files import FileServer

BODY = bytes(range(256)) * 400  # 102400 bytes, every offset recognisable


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "data.bin").write_bytes(BODY)
    (root / "sub" / "name with space.txt").write_text("hello\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    return root


@pytest.fixture
def server(root: Path) -> Iterator[FileServer]:
    with FileServer(root) as server:
        yield server


def raw_get(server: FileServer, path: str) -> int:
    """The status of a GET whose path is sent exactly as given (requests would normalise ``..``)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_get_and_head_describe_the_file(server: FileServer, root: Path) -> None:
    got = requests.get(server.url_for("data.bin"), timeout=5)
    assert got.status_code == 200
    assert got.content == BODY
    assert got.headers["Content-Length"] == str(len(BODY))
    assert got.headers["Accept-Ranges"] == "bytes"
    etag = got.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    modified = parsedate_to_datetime(got.headers["Last-Modified"])
    assert int(modified.timestamp()) == int((root / "data.bin").stat().st_mtime)

    head = requests.head(server.url_for("data.bin"), timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("Content-Length", "ETag", "Last-Modified", "Accept-Ranges"):
        assert head.headers[name] == got.headers[name]


def test_url_for_quotes_the_path(server: FileServer) -> None:
    url = server.url_for("sub/name with space.txt")
    assert url == f"{server.url}/sub/name%20with%20space.txt"
    assert requests.get(url, timeout=5).text == "hello\n"


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [("bytes=1000-1999", 1000, 1999), ("bytes=100000-", 100000, len(BODY) - 1), ("bytes=-10", len(BODY) - 10, None)],
)
def test_a_range_is_a_206_with_content_range(server: FileServer, range_header: str, first: int, last: int) -> None:
    last = len(BODY) - 1 if last is None else last
    got = requests.get(server.url_for("data.bin"), headers={"Range": range_header}, timeout=5)
    assert got.status_code == 206
    assert got.headers["Content-Range"] == f"bytes {first}-{last}/{len(BODY)}"
    assert got.headers["Content-Length"] == str(last - first + 1)
    assert got.content == BODY[first : last + 1]


def test_a_range_past_the_end_is_416(server: FileServer) -> None:
    got = requests.get(server.url_for("data.bin"), headers={"Range": f"bytes={len(BODY)}-"}, timeout=5)
    assert got.status_code == 416
    assert got.headers["Content-Range"] == f"bytes */{len(BODY)}"


def test_if_range_sends_the_range_only_for_the_same_version(server: FileServer) -> None:
    url = server.url_for("data.bin")
    head = requests.head(url, timeout=5).headers
    for validator in (head["ETag"], head["Last-Modified"]):
        same = requests.get(url, headers={"Range": "bytes=10-", "If-Range": validator}, timeout=5)
        assert (same.status_code, same.content) == (206, BODY[10:])
    other = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"another-version"'}, timeout=5)
    assert (other.status_code, other.content) == (200, BODY)


def test_missing_files_and_folders_are_404(server: FileServer) -> None:
    assert requests.get(server.url_for("nope.csv"), timeout=5).status_code == 404
    assert requests.head(server.url_for("nope.csv"), timeout=5).status_code == 404
    assert requests.get(server.url_for("sub"), timeout=5).status_code == 404


def test_paths_outside_root_are_refused(server: FileServer, root: Path) -> None:
    (root / "link.txt").symlink_to(root.parent / "outside.txt")
    assert raw_get(server, "/../outside.txt") == 404
    assert raw_get(server, "/%2e%2e/outside.txt") == 404
    assert raw_get(server, "/sub/../../outside.txt") == 404
    assert raw_get(server, "/link.txt") == 404
    assert raw_get(server, "/sub/../data.bin") == 200  # inside root is fine


def test_require_answers_401_without_the_header(server: FileServer) -> None:
    url = server.url_for("data.bin")
    server.require("Authorization", "Basic dXNlcjpwdw==")  # user:pw
    server.require("X-Api-Key", "k1")
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("user", "pw"), timeout=5).status_code == 401  # the key is missing
    assert requests.get(url, auth=("user", "pw"), headers={"X-Api-Key": "k1"}, timeout=5).status_code == 200
    assert requests.get(url, auth=("user", "no"), headers={"X-Api-Key": "k1"}, timeout=5).status_code == 401


def test_drop_after_really_cuts_the_body(server: FileServer) -> None:
    url = server.url_for("data.bin")
    server.drop_after("data.bin", 5000)
    with requests.get(url, stream=True, timeout=5) as cut:
        assert cut.headers["Content-Length"] == str(len(BODY))
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in cut.iter_content(1000):
                received += chunk
    assert received == BODY[:5000]
    assert requests.get(url, timeout=5).content == BODY  # times=1: the next GET is whole


def test_drop_after_counts_from_the_start_of_a_range(server: FileServer) -> None:
    server.drop_after("data.bin", 100, times=2)
    for _ in range(2):
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(server.url_for("data.bin"), headers={"Range": "bytes=50000-"}, timeout=5)
    assert requests.get(server.url_for("data.bin"), headers={"Range": "bytes=50000-"}, timeout=5).status_code == 206


def test_fail_with_answers_the_status_the_given_number_of_times(server: FileServer) -> None:
    url = server.url_for("data.bin")
    server.fail_with("data.bin", 503, times=2)
    server.fail_with("/sub/name with space.txt", 429)
    assert requests.head(url, timeout=5).status_code == 503  # every method counts
    failed = requests.get(url, timeout=5)
    assert (failed.status_code, failed.text) == (503, "503 Service Unavailable\n")
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.get(server.url_for("sub/name with space.txt"), timeout=5).status_code == 429


def test_requests_are_recorded_and_cleared(server: FileServer) -> None:
    requests.head(server.url_for("data.bin"), timeout=5)
    requests.get(server.url_for("data.bin"), headers={"Range": "bytes=5-"}, timeout=5)
    requests.get(server.url_for("nope"), timeout=5)
    assert server.requests == [("HEAD", "/data.bin", None), ("GET", "/data.bin", "bytes=5-"), ("GET", "/nope", None)]
    server.clear_requests()
    assert server.requests == []


def test_head_refused_when_asked(root: Path) -> None:
    with FileServer(root, head_allowed=False) as server:
        assert requests.head(server.url_for("data.bin"), timeout=5).status_code == 405
        assert requests.get(server.url_for("data.bin"), timeout=5).status_code == 200


def test_gz_files_with_content_encoding_when_asked(root: Path) -> None:
    (root / "a.csv.gz").write_bytes(b"\x1f\x8b not really")
    with FileServer(root) as plain, FileServer(root, gzip_encoding=True) as encoding:
        assert "Content-Encoding" not in requests.head(plain.url_for("a.csv.gz"), timeout=5).headers
        assert requests.head(plain.url_for("a.csv.gz"), timeout=5).headers["Content-Type"] == "application/gzip"
        headers = requests.head(encoding.url_for("a.csv.gz"), timeout=5).headers
        assert (headers["Content-Encoding"], headers["Content-Type"]) == ("gzip", "text/csv")


def test_stop_releases_the_port(root: Path) -> None:
    server = FileServer(root).start()
    url = server.url_for("data.bin")
    assert requests.get(url, timeout=5).status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_the_cli_serves_until_interrupted(root: Path) -> None:
    command = [sys.executable, "-m", "dagforge.devservices.http_files", str(root), "--port", "0"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = child.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert requests.get(url + "data.bin", timeout=5).content == BODY
    finally:
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=10) == 0
        child.stdout.close()
