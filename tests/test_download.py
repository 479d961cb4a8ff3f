"""Download stage: resumable, retried, verified HTTP fetch; safe extraction; run(cfg) end to end.

Everything is offline: archives are built in tmp_path and served from a real HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from http_server import server  # noqa: F401  (the pytest fixture: a real HTTP server on 127.0.0.1)
from pipeline.stages import download
from pipeline.config import COMMAND_WORDS, REPO_ROOT, SILENCE_LABEL, UNKNOWN_LABEL, load_config
from pipeline.stages.download import DownloadError, fetch, safe_extract

FAST = dict(backoff_s=0.01, timeout_s=5.0, progress=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def blob() -> bytes:
    return np.random.default_rng(0).bytes(300_000)


# ---- archives in the Speech Commands layout -----------------------------------------------------

def _wav(path: Path, seconds: float = 0.05, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.1, 0.1, int(16000 * seconds)).astype(np.float32)
    sf.write(str(path), audio, 16000, subtype="PCM_16")


def make_train_tree(root: Path) -> set[str]:
    """Word folders, _background_noise_, list files, LICENSE, README.md; returns the file paths."""
    for i, word in enumerate(["yes", "no", "up"]):
        for j, speaker in enumerate(["0a7c2a8d", "1b2c3d4e"]):
            _wav(root / word / f"{speaker}_nohash_0.wav", seed=10 * i + j)
    _wav(root / "_background_noise_" / "white_noise.wav", seconds=1.0, seed=99)
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    (root / "validation_list.txt").write_text("yes/1b2c3d4e_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/1b2c3d4e_nohash_0.wav\n")
    (root / "LICENSE").write_text("CC BY 4.0\n")
    (root / "README.md").write_text("Speech Commands\n")
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def make_test_tree(root: Path) -> set[str]:
    """The official test archive: one folder per label of the 12-label task."""
    for i, label in enumerate([SILENCE_LABEL, UNKNOWN_LABEL] + COMMAND_WORDS):
        _wav(root / label / f"{i:08x}_nohash_0.wav", seed=i)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def tar_tree(root: Path, archive: Path, *, dot_prefix: bool = False) -> bytes:
    """Tar the folder's contents at the archive root (optionally as './x'); return the archive bytes."""
    mode = "w" if archive.suffix == ".tar" else "w:gz"
    with tarfile.open(archive, mode) as tar:
        if dot_prefix:
            tar.add(root, arcname=".")
        else:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name)
    return archive.read_bytes()


def tar_members(archive: Path, members: list[tarfile.TarInfo]) -> Path:
    """A tar.gz from hand-made members (empty or small regular files get b'x' * size content)."""
    with tarfile.open(archive, "w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    return archive


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def train_archive(tmp_path) -> tuple[Path, set[str]]:
    files = make_train_tree(tmp_path / "src")
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    tar_tree(tmp_path / "src", archive, dot_prefix=True)
    return archive, files


# ---- fetch over HTTP ----------------------------------------------------------------------------

def test_cut_transfer_resumes_with_range_request(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.cut_after = 120_000
    dest = tmp_path / "a.tar.gz"
    assert fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST) == dest
    assert [r for _, r in state.requests] == [None, "bytes=120000-"]
    assert sha(dest.read_bytes()) == sha(blob)
    assert not dest.with_name("a.tar.gz.part").exists()


def test_interrupted_download_leaves_only_part_and_next_call_resumes(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.cut_after, state.down_after = 100_000, 1  # cut, then the server goes down
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match=r"HTTP 503 .*giving up after 2 attempts without progress"):
        fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), retries=1, **FAST)
    assert len(state.requests) == 3  # the cut attempt made progress, so it did not count
    assert not dest.exists()
    assert dest.with_name("a.tar.gz.part").stat().st_size == 100_000
    state.down_after = None
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST)
    assert state.requests[-1][1] == "bytes=100000-"
    assert dest.read_bytes() == blob


def test_stalled_connection_times_out_and_resumes(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.cut_after, state.stall_s = 50_000, 2.0
    dest = tmp_path / "a.tar.gz"
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), retries=2, backoff_s=0.01, timeout_s=0.3, progress=False)
    assert state.requests[-1][1] == "bytes=50000-"
    assert dest.read_bytes() == blob


def test_server_ignoring_range_restarts_from_zero(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.ignore_range = True
    dest = tmp_path / "a.tar.gz"
    dest.with_name("a.tar.gz.part").write_bytes(b"stale bytes that must not stay in front")
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST)
    assert state.requests == [("/a.tar.gz", "bytes=39-")]
    assert dest.read_bytes() == blob


def test_complete_part_answered_416_is_finished_without_refetch(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    dest = tmp_path / "a.tar.gz"
    dest.with_name("a.tar.gz.part").write_bytes(blob)
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST)
    assert state.requests == [("/a.tar.gz", f"bytes={len(blob)}-")]
    assert dest.read_bytes() == blob


def test_503_is_retried_then_succeeds(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.fail_first = 2
    dest = fetch(f"{base}/a.tar.gz", tmp_path / "a.tar.gz", sha256=sha(blob), retries=5, **FAST)
    assert len(state.requests) == 3
    assert dest.read_bytes() == blob


def test_persistent_503_fails_with_clear_error(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    state.fail_first = 100
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match=r"a\.tar\.gz: HTTP 503 .*giving up after 3 attempts"):
        fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), retries=2, **FAST)
    assert len(state.requests) == 3
    assert not dest.exists()


def test_404_fails_at_once_without_retry(server, tmp_path):
    state, base = server
    with pytest.raises(DownloadError, match=r"/missing\.tar\.gz: HTTP 404"):
        fetch(f"{base}/missing.tar.gz", tmp_path / "m.tar.gz", sha256=None, retries=5, **FAST)
    assert len(state.requests) == 1


def test_unreachable_server_is_retried_then_fails(tmp_path):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127\.0\.0\.1:{port}/a\.tar\.gz: .*refused.*giving up after 2"):
        fetch(f"http://127.0.0.1:{port}/a.tar.gz", tmp_path / "a.tar.gz", sha256=None, retries=1, **FAST)


def test_checksum_mismatch_names_sums_keeps_bad_file_aside_and_does_not_reuse_it(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    dest = tmp_path / "a.tar.gz"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(f"{base}/a.tar.gz", dest, sha256=wrong, **FAST)
    assert f"expected {wrong}" in str(err.value) and f"got {sha(blob)}" in str(err.value)
    assert not dest.exists() and not dest.with_name("a.tar.gz.part").exists()
    assert dest.with_name("a.tar.gz.bad").read_bytes() == blob
    # The next call downloads afresh (no Range from the bad file) and now verifies.
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST)
    assert state.requests[-1] == ("/a.tar.gz", None)
    assert dest.read_bytes() == blob


def test_verified_dest_is_returned_without_network(server, blob, tmp_path):
    state, base = server
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(blob)
    assert fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob).upper(), **FAST) == dest
    assert state.requests == []


def test_dest_failing_a_new_pinned_sum_is_set_aside_and_refetched(server, blob, tmp_path):
    state, base = server
    state.files["/a.tar.gz"] = blob
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"an older download")
    fetch(f"{base}/a.tar.gz", dest, sha256=sha(blob), **FAST)
    assert dest.read_bytes() == blob
    assert dest.with_name("a.tar.gz.bad").read_bytes() == b"an older download"


def test_too_little_disk_space_fails_before_writing(server, blob, tmp_path, monkeypatch):
    state, base = server
    state.files["/a.tar.gz"] = blob
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match=r"not enough disk space .*need 300\.0 KB, 1\.0 KB free"):
        fetch(f"{base}/a.tar.gz", dest, sha256=None, **FAST)
    assert not dest.exists() and not dest.with_name("a.tar.gz.part").exists()


def test_malformed_sha256_is_rejected(tmp_path):
    with pytest.raises(DownloadError, match=r"'abc' is not 64 hex digits"):
        fetch("http://127.0.0.1:9/a.tar.gz", tmp_path / "a.tar.gz", sha256="abc", **FAST)


# ---- fetch from local files ---------------------------------------------------------------------

@pytest.mark.parametrize("as_uri", [True, False], ids=["file_url", "plain_path"])
def test_local_archive_is_verified_and_used_in_place(tmp_path, blob, as_uri):
    src = tmp_path / "have" / "a.tar.gz"
    src.parent.mkdir()
    src.write_bytes(blob)
    url = src.as_uri() if as_uri else str(src)
    dest = tmp_path / "archives" / "a.tar.gz"
    assert fetch(url, dest, sha256=sha(blob), **FAST) == src
    assert not dest.exists()  # not copied
    with pytest.raises(DownloadError, match=rf"{re.escape(str(src))}: sha256 mismatch: expected 0{{64}}, got {sha(blob)}"):
        fetch(url, dest, sha256="0" * 64, **FAST)
    assert src.read_bytes() == blob  # the user's file is left alone


def test_missing_local_archive_names_the_path(tmp_path):
    with pytest.raises(DownloadError, match=r"nope\.tar\.gz: no such file"):
        fetch(str(tmp_path / "nope.tar.gz"), tmp_path / "x", sha256=None, **FAST)


def test_unsupported_scheme_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match=r"unsupported URL scheme 'ftp'"):
        fetch("ftp://127.0.0.1/a.tar.gz", tmp_path / "a", sha256=None, **FAST)


# ---- safe extraction ----------------------------------------------------------------------------

def test_extracts_speech_commands_layout_with_dot_prefix(train_archive, tmp_path):
    archive, files = train_archive
    out = tmp_path / "data" / "sc"
    assert safe_extract(archive, out, progress=False) == len(files)
    assert {p for p in tree(out) if (out / p).is_file()} == files
    assert (out / "yes" / "0a7c2a8d_nohash_0.wav").is_file()
    assert not out.with_name("sc.partial").exists()


def test_extracts_plain_tar_and_in_tree_links(tmp_path):
    src = tmp_path / "src"
    make_test_tree(src)
    os.symlink("yes", src / "alias")  # a link that stays inside is fine, as with filter="data"
    archive = tmp_path / "t.tar"
    tar_tree(src, archive)
    with tarfile.open(archive, "a") as tar:
        tar.addfile(member("hard.wav", tarfile.LNKTYPE, linkname="yes/00000002_nohash_0.wav"))
    out = tmp_path / "out"
    safe_extract(archive, out, progress=False)
    assert (out / "alias").resolve() == (out / "yes").resolve()
    assert (out / "hard.wav").read_bytes() == (out / "yes" / "00000002_nohash_0.wav").read_bytes()


HOSTILE = {  # id: (member, why it is refused)
    "dotdot": (member("../evil", size=4), "'..' in path"),
    "dotdot_nested": (member("yes/../../evil", size=4), "'..' in path"),
    "absolute": (member("/abs/path", size=4), "absolute path"),
    "symlink_absolute": (member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink to absolute path"),
    "symlink_outside": (member("yes/x", tarfile.SYMTYPE, linkname="../../x"), "points outside"),
    "hardlink_outside": (member("hl", tarfile.LNKTYPE, linkname="../outside"), "points outside"),
    "hardlink_absolute": (member("hl", tarfile.LNKTYPE, linkname="/etc/passwd"), "hardlink to absolute path"),
    "char_device": (member("null", tarfile.CHRTYPE), "device file or fifo"),
    "block_device": (member("sda", tarfile.BLKTYPE), "device file or fifo"),
    "fifo": (member("pipe", tarfile.FIFOTYPE), "device file or fifo"),
}


@pytest.mark.parametrize(("bad", "why"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_member_is_refused_by_name_and_nothing_is_written(tmp_path, bad, why):
    work = tmp_path / "work"
    work.mkdir()
    # A harmless member first: nothing at all may be written before every member is checked.
    archive = tar_members(tmp_path / "evil.tar.gz", [member("yes/a.wav", size=3), bad])
    before = tree(tmp_path)
    out = work / "data" / "sc"
    with pytest.raises(DownloadError, match=rf"refusing member {re.escape(repr(bad.name))}: .*{re.escape(why)}"):
        safe_extract(archive, out, progress=False)
    assert tree(tmp_path) == before
    assert not out.exists()


def test_failed_extraction_leaves_no_dest_dir(train_archive, tmp_path, monkeypatch):
    archive, _ = train_archive
    calls = []

    def failing_copy(src, dst, length=0):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        dst.write(src.read())

    monkeypatch.setattr(download.shutil, "copyfileobj", failing_copy)
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"extracting member '.+': \[Errno 28\] No space left"):
        safe_extract(archive, out, progress=False)
    assert not out.exists() and not out.with_name("out.partial").exists()


def test_killed_extraction_never_looks_complete_and_is_redone(train_archive, tmp_path):
    archive, files = train_archive
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, shutil
        from pipeline.stages import download
        copy = shutil.copyfileobj
        calls = []
        def copy_then_die(src, dst, length=0):
            copy(src, dst, length)
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        download.shutil.copyfileobj = copy_then_die
        download.safe_extract({str(archive)!r}, {str(out)!r}, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not out.exists()
    assert len([p for p in out.with_name("out.partial").rglob("*") if p.is_file()]) == 4
    assert safe_extract(archive, out, progress=False) == len(files)
    assert not out.with_name("out.partial").exists()


def test_truncated_archive_is_a_clear_error(train_archive, tmp_path):
    archive, _ = train_archive
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DownloadError, match=r"cut\.tar\.gz: corrupt or truncated archive"):
        safe_extract(cut, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_extraction_checks_free_space(train_archive, tmp_path, monkeypatch):
    archive, _ = train_archive
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 0))
    with pytest.raises(DownloadError, match=r"not enough disk space .* to extract speech_commands_v0\.02\.tar\.gz"):
        safe_extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_dest_dir_is_not_overwritten(train_archive, tmp_path):
    archive, _ = train_archive
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match=r"out already exists"):
        safe_extract(archive, tmp_path / "out", progress=False)


# ---- the stage ----------------------------------------------------------------------------------

def test_run_downloads_verifies_and_extracts_both_archives(server, train_archive, tmp_path, capsys):
    state, base = server
    archive, train_files = train_archive
    test_files = make_test_tree(tmp_path / "test_src")
    test_bytes = tar_tree(tmp_path / "test_src", tmp_path / "speech_commands_test_set_v0.02.tar.gz")
    state.files["/speech_commands_v0.02.tar.gz"] = archive.read_bytes()
    state.files["/speech_commands_test_set_v0.02.tar.gz"] = test_bytes
    state.cut_after = 5_000  # the first transfer is cut once and resumed

    config = tmp_path / "cfg.yaml"
    config.write_text("run: {name: dltest}\n")
    cfg = load_config(config, [
        "dataset.source=download",
        f"dataset.url={base}/speech_commands_v0.02.tar.gz",
        f"dataset.sha256={sha(archive.read_bytes())}",
        f"dataset.test_url={base}/speech_commands_test_set_v0.02.tar.gz",
        f"dataset.test_sha256={sha(test_bytes)}",
        f"paths.data={tmp_path / 'data'}",
        f"paths.exports={tmp_path / 'exports'}",
    ])
    download.run(cfg)

    assert {p for p in tree(cfg.dataset_dir) if (cfg.dataset_dir / p).is_file()} == train_files
    assert {p for p in tree(cfg.test_dataset_dir) if (cfg.test_dataset_dir / p).is_file()} == test_files
    assert {p.name for p in cfg.test_dataset_dir.iterdir()} == {SILENCE_LABEL, UNKNOWN_LABEL, *COMMAND_WORDS}
    assert (cfg.archives_dir / "speech_commands_v0.02.tar.gz").is_file()
    assert ("/speech_commands_v0.02.tar.gz", "bytes=5000-") in state.requests
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("sha256" in line and " s" in line for line in lines)

    # A second run finds both folders complete and touches no network.
    n = len(state.requests)
    download.run(cfg)
    assert len(state.requests) == n
    assert "already extracted" in capsys.readouterr().out


def test_run_uses_a_local_archive_in_place(train_archive, tmp_path):
    archive, train_files = train_archive
    config = tmp_path / "cfg.yaml"
    config.write_text("{}\n")
    cfg = load_config(config, ["dataset.source=download", f"dataset.url={archive.as_uri()}",
                               f"paths.data={tmp_path / 'data'}"])
    download.run(cfg)
    assert {p for p in tree(cfg.dataset_dir) if (cfg.dataset_dir / p).is_file()} == train_files
    assert not cfg.archives_dir.exists()


def test_run_refuses_synth_source(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("{}\n")
    with pytest.raises(DownloadError, match=r"dataset\.source=download"):
        download.run(load_config(config, [f"paths.data={tmp_path}"]))
