"""./run live [RUN] [--port P]: serve the live keyword-spotting page (web/) and one run folder on 127.0.0.1.

Only three kinds of files leave the disk: the page's own assets (files directly in web/), the few files of
web/node_modules the page imports (LiteRT.js and its WASM), and the run folder's manifest.json, labels.txt
and *.tflite. Every other path is a 404, whatever it contains ('..', encoded slashes, sub-folders).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

WEB = Path(__file__).resolve().parent.parent.parent / "web"
STAMP = ".installed-package-lock"  # in web/node_modules: sha256 of the package-lock.json it was installed from

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
                 ".wasm": "application/wasm", ".tflite": "application/octet-stream", ".png": "image/png"}
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # one path segment, no leading dot
# node_modules: the ES module entry points and the WASM folder, nothing else of the package trees
NODE_MODULES = (re.compile(r"@litertjs/(core|wasm-utils)/dist/index\.js"),
                re.compile(r"@litertjs/core/wasm/litert_wasm_[a-z_]+\.(js|wasm)"))


def resolve(url_path: str, *, run_dir: Path, web_dir: Path = WEB) -> Path | None:
    """The file a URL path maps to, or None (404). Pure: no file is read."""
    path = unquote(urlsplit(url_path).path)
    if "\\" in path or "\0" in path:
        return None
    if path == "/":
        return web_dir / "index.html"
    parts = path.lstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    if parts[0] == "run" and len(parts) == 2:
        name = parts[1]
        if name in ("manifest.json", "labels.txt") or (NAME.fullmatch(name) and name.endswith(".tflite")):
            return run_dir / name
        return None
    if parts[0] == "node_modules":
        rest = "/".join(parts[1:])
        return web_dir / "node_modules" / rest if any(p.fullmatch(rest) for p in NODE_MODULES) else None
    if len(parts) == 1 and NAME.fullmatch(parts[0]) and Path(parts[0]).suffix in (".html", ".js", ".css"):
        return web_dir / parts[0]
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "kws-live"

    def __init__(self, *args, run_dir: Path, web_dir: Path, **kwargs):
        self.run_dir, self.web_dir = run_dir, web_dir
        super().__init__(*args, **kwargs)

    def do_GET(self, head: bool = False) -> None:
        path = resolve(self.path, run_dir=self.run_dir, web_dir=self.web_dir)
        if path is None or not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")  # a re-exported run must not be served stale
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def log_message(self, format: str, *args) -> None:  # quiet: only failed requests are worth a line
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            sys.stderr.write(f"live: {self.command} {self.path} -> {args[1]}\n")


def ensure_js_deps(web_dir: Path = WEB) -> None:
    """npm ci in web/ when node_modules is missing or was installed from another package-lock.json."""
    lock = web_dir / "package-lock.json"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = web_dir / "node_modules" / STAMP
    if stamp.is_file() and stamp.read_text().strip() == want:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm not found: the live page needs Node.js 20+ and npm once, to install web/node_modules")
    print("live: installing the page's JS dependencies (npm ci in web/) ...", file=sys.stderr, flush=True)
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=web_dir,
                            stdout=sys.stderr, stderr=sys.stderr)
    if result.returncode != 0:
        raise FileNotFoundError(f"npm ci in {web_dir} failed (exit {result.returncode}); see the npm output above")
    stamp.write_text(want + "\n")


def main(*, run: str, port: int) -> int:
    run_dir = Path(run)
    if not (run_dir / "manifest.json").is_file():
        what = "no such run folder" if not run_dir.is_dir() else "no manifest.json in it (run ./run demo, or verify)"
        print(f"error: {run_dir}: {what}", file=sys.stderr)
        return 1
    try:
        ensure_js_deps()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    handler = partial(Handler, run_dir=run_dir.resolve(), web_dir=WEB)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        print(f"error: can't listen on 127.0.0.1:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    print(f"live: serving {run_dir} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
