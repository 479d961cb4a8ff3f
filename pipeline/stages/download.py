"""Download stage: fetch a Speech Commands archive, verify its sha256, and extract it safely.

``dataset.url`` (and ``dataset.test_url``) may be http(s)://, file:// or a plain local path. Over HTTP an
interrupted transfer resumes with a Range request, and connection drops, timeouts and 5xx answers are
retried with exponential backoff. Only a verified archive is ever at its final name, and a dataset folder
only ever exists complete (extraction goes to a temporary sibling that is renamed at the end).
"""
from __future__ import annotations

import http.client
import os
import posixpath
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.io import sha256_file

if TYPE_CHECKING:
    from pipeline.config import Config

_CHUNK = 1 << 20  # 1 MiB per read/write
_USER_AGENT = "speech-commands-pipeline/0.1 (urllib)"
# Everything a dropped or stalled connection raises: URLError, timeouts and resets are OSErrors,
# IncompleteRead and RemoteDisconnected are HTTPExceptions.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class DownloadError(PipelineError, RuntimeError):
    """A download or extraction problem, reported as one line naming the URL, file or archive member."""


class _Transient(Exception):
    """A failure worth retrying: connection drop, timeout, 5xx."""


# ---- fetch --------------------------------------------------------------------------------------

def fetch(url: str, dest: Path, *, sha256: str | None, retries: int = 5, backoff_s: float = 0.5,
          timeout_s: float = 60.0, progress: bool = True) -> Path:
    """Make a verified copy of ``url`` available and return its path.

    url : http(s)://, file:// or a plain local path. A local file is not copied: its sha256 is checked
        and its own path is returned (``dest`` is then unused).
    dest : where an HTTP download ends up. The transfer goes to ``dest.part`` (resumed with a Range
        request when it exists) and is renamed to ``dest`` only after the sha256 matched, so a file at
        ``dest`` is always complete. An existing ``dest`` that verifies is returned without network.
    sha256 : expected hex digest, or None to skip the check.
    retries : attempts in a row without progress (connection drop, timeout, HTTP 5xx) before giving up;
        an attempt that made progress resets the count. HTTP 4xx (except 416) fails at once.
    backoff_s : first wait between attempts; doubled after each failure without progress.
    timeout_s : socket timeout for connecting and for each read.

    On a checksum mismatch the file is moved aside to ``dest.bad`` (never reused) and DownloadError
    names the expected and actual sums.
    """
    expected = _check_sha256_arg(sha256)
    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"{local}: no such file (from {url})")
        if expected is not None:
            actual = sha256_file(local, progress=progress)
            if actual != expected:
                raise DownloadError(f"{local}: sha256 mismatch: expected {expected}, got {actual}")
        return local

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    bad = dest.with_name(dest.name + ".bad")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if expected is None or sha256_file(dest, progress=progress) == expected:
            return dest
        # Downloaded before under another pinned sum: keep it aside and fetch again.
        os.replace(dest, bad)

    failures = 0
    while True:
        before = _size(part)
        try:
            _download_once(url, part, timeout_s=timeout_s, progress=progress)
            break
        except _Transient as e:
            failures = 0 if _size(part) > before else failures + 1
            if failures > retries:
                raise DownloadError(f"{url}: {e}; giving up after {failures} attempts without progress") from None
            delay = backoff_s * 2 ** max(failures - 1, 0)
            print(f"download: {url}: {e}; retrying in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)
        except OSError as e:  # network errors became _Transient inside, so this is local disk I/O
            raise DownloadError(f"{url}: writing {part}: {e.strerror or e}") from None

    if expected is not None:
        actual = sha256_file(part, progress=progress)
        if actual != expected:
            os.replace(part, bad)
            raise DownloadError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; "
                                f"the downloaded file was kept aside as {bad}")
    os.replace(part, dest)
    return dest


def _download_once(url: str, part: Path, *, timeout_s: float, progress: bool) -> None:
    """One HTTP attempt: append to ``part`` (or restart it); raise _Transient when worth retrying."""
    have = _size(part)
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:
            # Nothing left to send from byte `have`: either the part is complete or it is too long.
            if _content_range_total(e.headers.get("Content-Range")) == have:
                return
            part.unlink()
            raise _Transient(f"HTTP 416 when resuming at byte {have}; restarting from zero") from None
        if e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except _NETWORK_ERRORS as e:
        raise _Transient(_describe(e)) from None

    with resp:
        offset = 0
        if resp.status == 206:
            offset = _content_range_start(resp.headers.get("Content-Range"))
            if offset != have:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {offset}, not {have}; restarting from zero")
        # A 200 carries the whole file (also when the server ignored our Range): start over.
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if total is not None:
            _check_free_space(part.parent, total - offset, f"to download {url}")
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                     desc=part.name.removesuffix(".part"), disable=not progress, mininterval=0.5) as bar:
            while True:
                try:
                    # read1 returns what has arrived, so bytes received before a stall reach the disk.
                    chunk = resp.read1(_CHUNK)
                except _NETWORK_ERRORS as e:
                    raise _Transient(_describe(e)) from None
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    size = _size(part)
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size} of {total} bytes")


def _check_sha256_arg(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise DownloadError(f"sha256 {sha256!r} is not 64 hex digits (use null to skip the check)")
    return value


def _local_path(url: str) -> Path | None:
    """The file a file:// URL or plain path names; None for http(s); DownloadError for other schemes."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise DownloadError(f"{url}: no host in URL")
        return None
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"{url}: file:// URLs on another host are not supported")
        return Path(urllib.request.url2pathname(parsed.path))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, i.e. a plain path
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (use http(s)://, file:// or a path)")
    return Path(url).expanduser()


def _content_range_start(value: str | None) -> int:
    m = re.match(r"bytes (\d+)-", value or "")
    return int(m.group(1)) if m else -1


def _content_range_total(value: str | None) -> int:
    m = re.search(r"/(\d+)$", value or "")
    return int(m.group(1)) if m else -1


def _describe(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # URLError wraps the socket error
    return f"{type(e).__name__}: {reason if reason is not None else e}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _check_free_space(folder: Path, need: int, what: str) -> None:
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise DownloadError(f"not enough disk space in {existing} {what}: need {_fmt_bytes(need)}, "
                            f"{_fmt_bytes(free)} free")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


# ---- extraction ---------------------------------------------------------------------------------

def safe_extract(archive: Path, dest_dir: Path, *, progress: bool = True) -> int:
    """Extract a .tar.gz / .tgz / .tar into ``dest_dir`` and return the number of files (non-directories).

    Every member is checked before anything is written. Refused, with DownloadError naming the member:
    absolute paths, '..' components, symlinks or hardlinks that point to an absolute path or outside
    the tree, device files and fifos (as strict as tarfile's ``filter="data"``, also on Pythons that
    lack it). Free disk space is checked against the sum of member sizes. Extraction goes to
    ``dest_dir.partial`` and is renamed to ``dest_dir`` at the end, so ``dest_dir`` only exists complete;
    on failure the partial folder is removed. ``dest_dir`` must not exist yet.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if dest_dir.exists():
        raise DownloadError(f"{dest_dir} already exists; remove it to extract {archive.name} again")
    partial = dest_dir.with_name(dest_dir.name + ".partial")
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DownloadError(f"{archive}: cannot open as a tar archive ({e})") from None
    with tar:
        try:
            members = tar.getmembers()  # reads the whole archive: truncation shows up here
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DownloadError(f"{archive}: corrupt or truncated archive ({e})") from None
        plan = [(m, _checked_name(archive, m)) for m in members]
        need = sum(m.size for m in members if m.isreg())
        _check_free_space(dest_dir.parent, need, f"to extract {archive.name}")
        if partial.exists():  # left by an extraction that was killed
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        try:
            count = _extract_members(tar, plan, archive=archive, root=partial, total=need, progress=progress)
            os.rename(partial, dest_dir)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return count


def _checked_name(archive: Path, m: tarfile.TarInfo) -> str | None:
    """The member's normalized relative path (None for the root '.' entry), or DownloadError."""
    def refuse(why: str) -> DownloadError:
        return DownloadError(f"{archive}: refusing member {m.name!r}: {why}")

    if m.isdev():  # character/block devices and fifos
        raise refuse("device file or fifo")
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise refuse(f"unsupported member type {m.type!r}")
    if m.name.startswith("/") or PurePosixPath(m.name).is_absolute():
        raise refuse("absolute path")
    if ".." in PurePosixPath(m.name).parts:
        raise refuse("'..' in path")
    name = posixpath.normpath(m.name)  # drops the './' prefix some archives have
    if name == ".":
        if m.isdir():
            return None
        raise refuse("not a file name")
    if m.issym() or m.islnk():
        kind = "symlink" if m.issym() else "hardlink"
        if m.linkname.startswith("/"):
            raise refuse(f"{kind} to absolute path {m.linkname!r}")
        # A symlink is relative to its own folder, a hardlink to the archive root.
        base = posixpath.dirname(name) if m.issym() else ""
        target = posixpath.normpath(posixpath.join(base, m.linkname))
        if target == ".." or target.startswith("../"):
            raise refuse(f"{kind} to {m.linkname!r} points outside the extraction folder")
    return name


def _extract_members(tar: tarfile.TarFile, plan: list[tuple[tarfile.TarInfo, str | None]], *,
                     archive: Path, root: Path, total: int, progress: bool) -> int:
    """Write the checked members under ``root`` (by hand, so no Python version's tarfile defaults matter)."""
    real_root = root.resolve()
    count = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {archive.name}",
              disable=not progress, mininterval=0.5) as bar:
        for m, name in plan:
            if name is None:
                continue
            target = root / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                # Defence in depth: a folder reached through an in-archive symlink must stay inside too.
                if not target.parent.resolve().is_relative_to(real_root):
                    raise DownloadError(f"{archive}: refusing member {m.name!r}: its folder resolves outside")
                if m.isdir():
                    target.mkdir(exist_ok=True)
                    continue
                if target.is_symlink() or target.exists():
                    target.unlink()  # a later duplicate wins, as with tar; never write through an old link
                if m.isreg():
                    with tar.extractfile(m) as src, open(target, "xb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    bar.update(m.size)
                elif m.issym():
                    os.symlink(m.linkname, target)
                else:
                    os.link(root / posixpath.normpath(m.linkname), target, follow_symlinks=False)
            except (OSError, tarfile.TarError, EOFError) as e:
                raise DownloadError(f"{archive}: extracting member {m.name!r}: {e}") from None
            count += 1
    return count


# ---- the stage ----------------------------------------------------------------------------------

def run(cfg: Config) -> None:
    """Download stage: fetch, verify and extract ``dataset.url`` (and ``dataset.test_url`` when set).

    cfg : pipeline.config.Config with ``dataset.source == "download"``. The archive goes to
    ``cfg.archives_dir/<basename of the URL>`` (a local file is used in place) and is extracted into
    ``cfg.dataset_dir`` / ``cfg.test_dataset_dir``. Both folder names hash the dataset section (URL and
    sha256 included), and they only ever exist complete, so an existing folder is skipped without network.
    Prints one line per archive.
    """
    ds = cfg.dataset
    if ds.source != "download":
        raise DownloadError(f"dataset.source is {ds.source!r}: the download stage needs dataset.source=download")
    if not ds.url:
        raise DownloadError("dataset.url is not set: give an http(s)://, file:// URL or a path to the .tar.gz")
    jobs = [(ds.url, ds.sha256, cfg.dataset_dir)]
    if ds.test_url:
        jobs.append((ds.test_url, ds.test_sha256, cfg.test_dataset_dir))
    for url, sha256, out_dir in jobs:
        if out_dir.is_dir():
            print(f"download: {out_dir} already extracted, skipped")
            continue
        start = time.monotonic()
        archive = fetch(url, cfg.archives_dir / _archive_name(url), sha256=sha256)
        # With no pinned sum, show the actual one so the user can pin it.
        shown = sha256.lower() if sha256 else f"{sha256_file(archive, progress=True)} (not pinned: set it to check)"
        files = safe_extract(archive, out_dir)
        print(f"download: {archive.name}: {_fmt_bytes(_size(archive))}, sha256 {shown}, "
              f"{files} files -> {out_dir} in {time.monotonic() - start:.1f} s")


def _archive_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "dataset.tar.gz"
