"""A small HTTP server on 127.0.0.1 for the tests: Range support and injectable faults.

Files are served from memory (``bytes``) or streamed from disk (a ``Path``, for archives of any size).
Used as a pytest fixture (``server``: yields ``(state, base_url)``), as a context manager (``serve``), and
from the command line to serve a folder for timing runs:

    .venv/bin/python tests/http_server.py /tmp/fullsize/www --port 8765
"""
from __future__ import annotations

import argparse
import contextlib
import http.server
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

_CHUNK = 1 << 20


@dataclass
class ServerState:
    files: dict[str, bytes | Path] = field(default_factory=dict)  # URL path -> content or file on disk
    fail_first: int = 0  # answer 503 to this many requests
    down_after: int | None = None  # answer 503 to every request after this many
    cut_after: int | None = None  # once: send this many body bytes, then close (or stall)
    stall_s: float = 0.0  # with cut_after: stall this long instead of closing
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a Range
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _size(body: bytes | Path) -> int:
    return body.stat().st_size if isinstance(body, Path) else len(body)


def _chunks(body: bytes | Path, start: int, limit: int | None) -> Iterator[bytes]:
    """The body from byte ``start``, at most ``limit`` bytes, in chunks of up to 1 MiB."""
    end = _size(body) if limit is None else min(_size(body), start + limit)
    if isinstance(body, Path):
        with open(body, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                chunk = f.read(min(_CHUNK, end - pos))
                if not chunk:
                    return
                pos += len(chunk)
                yield chunk
    else:
        for pos in range(start, end, _CHUNK):
            yield body[pos:min(pos + _CHUNK, end)]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        st: ServerState = self.server.state
        rng = self.headers.get("Range")
        st.requests.append((self.path, rng))
        down = st.down_after is not None and len(st.requests) > st.down_after
        if st.fail_first > 0 or down:
            st.fail_first = max(st.fail_first - 1, 0)
            self.send_error(503)
            return
        body = st.files.get(self.path)
        if body is None or (isinstance(body, Path) and not body.is_file()):
            self.send_error(404)
            return
        size = _size(body)
        start = 0
        if rng and not st.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        if st.cut_after is not None:
            n, st.cut_after = st.cut_after, None
            for chunk in _chunks(body, start, n):
                self.wfile.write(chunk)
            self.wfile.flush()
            if st.stall_s:
                time.sleep(st.stall_s)
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
            return
        try:
            for chunk in _chunks(body, start, None):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a test that cut it short)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(state: ServerState | None = None, *, port: int = 0) -> Iterator[tuple[ServerState, str]]:
    """Run a threaded HTTP server on 127.0.0.1 (``port`` 0: any free port); yield (state, base_url)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    httpd.daemon_threads = True
    httpd.state = state if state is not None else ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    """Yield (state, base_url) for a threaded HTTP server on 127.0.0.1."""
    with serve() as served:
        yield served


def main() -> None:
    p = argparse.ArgumentParser(description="Serve the files of a folder on 127.0.0.1 (with Range support).")
    p.add_argument("folder", type=Path)
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    state = ServerState(files={f"/{f.name}": f.resolve() for f in sorted(args.folder.iterdir()) if f.is_file()})
    with serve(state, port=args.port) as (_, base):
        for path in state.files:
            print(f"{base}{path}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
