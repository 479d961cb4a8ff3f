"""The CLI end to end on archives in the REAL Speech Commands layout, served over HTTP on 127.0.0.1.

scripts/make_speech_commands_archive.py builds a small archive with the real data's quirks (clips shorter
and longer than 1 s, 8 kHz / 44.1 kHz / stereo clips, undecodable files, README/LICENSE files) and a small
official-test archive ('_silence_'/'_unknown_' folders, '.wav.wav' names). The expected numbers come
from reading the archives here (list files, decodability), independently of the pipeline.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from http_server import ServerState, serve
from pipeline.config import COMMAND_WORDS, SILENCE_LABEL, UNKNOWN_LABEL

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make_speech_commands_archive.py"
CONFIG = REPO / "configs" / "speech_commands_v2_12.yaml"
pytestmark = pytest.mark.slow

FAST = [  # keep the real v2_12 config, make it cheap
    "train.epochs=1",
    "model.gru_units=[16, 16]",
    "model.dense_units=16",
    "augment.copies=1",
    "export.int8_calibration_examples=20",
    "export.long_audio_minutes=0.5",
]


def build_archive(out: Path, *args: str) -> str:
    """Run the archive script; return the sha256 it prints (checked against the file)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("sha256 ", "bytes ")))
    assert printed["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert int(printed["bytes"]) == out.stat().st_size
    return printed["sha256"]


def read_archive(path: Path) -> dict:
    """What is in an archive: file names (without './'), the list files, and which WAVs decode."""
    files, lists, decodable = [], {}, {}
    with tarfile.open(path) as tar:
        for m in tar:
            if not m.isreg():
                continue
            name = os.path.normpath(m.name)
            files.append(name)
            data = tar.extractfile(m).read()
            if name in ("validation_list.txt", "testing_list.txt"):
                lists[name] = [line for line in data.decode().splitlines() if line.strip()]
            elif name.endswith(".wav"):
                try:
                    decodable[name] = sf.info(io.BytesIO(data)).frames > 0
                except Exception:
                    decodable[name] = False
    return {"files": files, "lists": lists, "decodable": decodable}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("archives")
    small = ["--clips", "600", "--words", "12", "--speakers", "40", "--noise-seconds", "10", "--seed", "0"]
    built = {
        "speech_commands_v0.02.tar.gz": build_archive(tmp / "speech_commands_v0.02.tar.gz", *small, "--quirks"),
        "speech_commands_test_set_v0.02.tar.gz": build_archive(
            tmp / "speech_commands_test_set_v0.02.tar.gz", "--official-test", "--clips", "240", "--words", "12",
            "--speakers", "30", "--quirks", "--seed", "1"),
        "nolists.tar.gz": build_archive(tmp / "nolists.tar.gz", *small[:-2], "--seed", "2", "--no-lists"),
    }
    return {name: (tmp / name, digest) for name, digest in built.items()}


@pytest.fixture(scope="module")
def http(archives):
    """The archives served from disk by a real HTTP server on 127.0.0.1: yields (state, base_url)."""
    state = ServerState(files={f"/{name}": path for name, (path, _) in archives.items()})
    with serve(state) as served:
        yield served


def cli(stage: str, tmp: Path, sets: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline", stage, "--config", str(CONFIG)]
    for item in [*sets, f"paths.data={tmp / 'data'}", f"paths.exports={tmp / 'exports'}"]:
        cmd += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def one(pattern: str) -> Path:
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return Path(found[0])


def split_rows(prepared: Path) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "validation", "test"):
        with open(prepared / f"{split}.csv", newline="") as fh:
            out[split] = list(csv.DictReader(fh))
    return out


def speaker(path: str) -> str:
    return re.sub(r"_nohash_.*$", "", Path(path).name)


def rel(path: str) -> str:
    """'<word>/<file>' of an extracted clip path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


# ---- the default path: test split from testing_list.txt --------------------------------------------

def test_all_stages_on_a_quirky_archive_follow_its_list_files(archives, http, tmp_path):
    state, base = http
    path, digest = archives["speech_commands_v0.02.tar.gz"]
    truth = read_archive(path)
    result = cli("all", tmp_path, [f"dataset.url={base}/speech_commands_v0.02.tar.gz", f"dataset.sha256={digest}",
                                   "dataset.test_url=null", *FAST])
    assert ("/speech_commands_v0.02.tar.gz", None) in state.requests
    for stage in ("download", "prepare", "features", "train", "evaluate", "export", "verify"):
        assert f"==> {stage}" in result.stdout

    run_dir = tmp_path / "exports" / "speech_commands_v2_12"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["num_test_examples"] == metrics["num_test_examples"]

    # Test support of each keyword = its decodable entries on testing_list.txt.
    testing = truth["lists"]["testing_list.txt"]
    undecodable = {name for name, ok in truth["decodable"].items() if not ok}
    assert undecodable & set(testing), "the archive should put an undecodable clip on the test list"
    want = Counter(name.split("/")[0] for name in testing if name not in undecodable)
    for word in COMMAND_WORDS:
        assert want[word] > 0
        assert metrics["per_class"][word]["support"] == want[word], word
    keywords = sum(want[w] for w in COMMAND_WORDS)
    assert metrics["per_class"][SILENCE_LABEL]["support"] == -(-keywords // 10)  # ceil(10 %)
    assert 0 < metrics["per_class"][UNKNOWN_LABEL]["support"] <= -(-keywords // 10)

    # The split report: no speaker in two splits, every undecodable file counted as skipped.
    prepared = one(str(tmp_path / "data" / "*_prepared_*" / "report.json")).parent
    report = json.loads((prepared / "report.json").read_text())
    assert report["lists"] == "files" and report["official_test_archive"] is False
    assert report["speaker_overlap"] == {"train&validation": 0, "train&test": 0, "validation&test": 0}
    assert report["skipped"] == len(undecodable) == 3
    assert {rel(f["path"]) for f in report["skipped_files"]} == undecodable
    rows = split_rows(prepared)
    speakers = {s: {speaker(r["path"]) for r in rows[s] if r["label"] != SILENCE_LABEL} for s in rows}
    assert not (speakers["train"] & speakers["validation"] or speakers["train"] & speakers["test"]
                or speakers["validation"] & speakers["test"])
    validation = set(truth["lists"]["validation_list.txt"])
    for split, listed in (("validation", validation), ("test", set(testing))):
        words = [rel(r["path"]) for r in rows[split] if r["label"] in COMMAND_WORDS]
        assert set(words) <= listed, split
    assert not {rel(r["path"]) for r in rows["train"]} & (validation | set(testing))

    # Short, long, 8 kHz, 44.1 kHz and stereo clips all made it through the feature stage.
    stats = json.loads(one(str(tmp_path / "data" / "*_features_*" / "stats.json")).read_text())
    assert stats["skipped"] == 0
    assert stats["counts"] == report["totals"]


# ---- the official test archive as the test split ---------------------------------------------------

def test_official_test_archive_is_the_test_split(archives, http, tmp_path):
    _, base = http
    path, digest = archives["speech_commands_v0.02.tar.gz"]
    test_path, test_digest = archives["speech_commands_test_set_v0.02.tar.gz"]
    truth = read_archive(test_path)
    assert {name.split("/")[0] for name in truth["files"]} == {SILENCE_LABEL, UNKNOWN_LABEL, *COMMAND_WORDS}
    assert any(name.endswith(".wav.wav") for name in truth["files"])
    cli("evaluate", tmp_path, [f"dataset.url={base}/speech_commands_v0.02.tar.gz", f"dataset.sha256={digest}",
                               f"dataset.test_url={base}/speech_commands_test_set_v0.02.tar.gz",
                               f"dataset.test_sha256={test_digest}", *FAST])

    per_folder = Counter(name.split("/")[0] for name, ok in truth["decodable"].items() if ok)
    metrics = json.loads((tmp_path / "exports" / "speech_commands_v2_12" / "metrics.json").read_text())
    assert {label: v["support"] for label, v in metrics["per_class"].items()} == dict(per_folder)
    assert metrics["num_test_examples"] == sum(per_folder.values()) == 239  # 240 minus one empty file

    report = json.loads(one(str(tmp_path / "data" / "*_prepared_*" / "report.json")).read_text())
    assert report["official_test_archive"] is True
    assert report["counts"]["test"] == dict(sorted(per_folder.items()))
    # The train archive's own testing_list.txt clips are neither trained on nor tested on.
    testing = set(read_archive(path)["lists"]["testing_list.txt"])
    prepared = one(str(tmp_path / "data" / "*_prepared_*" / "report.json")).parent
    rows = split_rows(prepared)
    assert not {rel(r["path"]) for s in ("train", "validation") for r in rows[s]} & testing
    assert all("_test" in Path(r["path"]).parent.parent.name for r in rows["test"])


# ---- no list files: the SHA1 rule ------------------------------------------------------------------

def reference_which_set(name: str) -> str:
    """The dataset README's rule, written out here independently of pipeline.prepare."""
    value = int(hashlib.sha1(re.sub(r"_nohash_.*$", "", name).encode()).hexdigest(), 16)
    percentage = (value % (2**27)) * (100.0 / (2**27 - 1))
    return "validation" if percentage < 10 else "test" if percentage < 20 else "train"


def test_archive_without_list_files_is_split_by_the_sha1_rule(archives, http, tmp_path):
    _, base = http
    path, digest = archives["nolists.tar.gz"]
    truth = read_archive(path)
    assert not truth["lists"]
    cli("prepare", tmp_path, [f"dataset.url={base}/nolists.tar.gz", f"dataset.sha256={digest}", "dataset.test_url=null"])
    prepared = one(str(tmp_path / "data" / "*_prepared_*" / "report.json")).parent
    report = json.loads((prepared / "report.json").read_text())
    assert report["lists"] == "sha1 which_set rule"
    assert report["skipped"] == 0
    rows = split_rows(prepared)
    for split, split_rows_ in rows.items():
        for r in split_rows_:
            if r["label"] in COMMAND_WORDS:
                assert reference_which_set(Path(r["path"]).name) == split, r["path"]
    # Every command-word clip of the archive is in exactly one split.
    placed = Counter(rel(r["path"]) for s in rows.values() for r in s if r["label"] in COMMAND_WORDS)
    assert set(placed.values()) == {1}
    assert set(placed) == {n for n in truth["decodable"] if n.split("/")[0] in COMMAND_WORDS}
    assert report["speaker_overlap"] == {"train&validation": 0, "train&test": 0, "validation&test": 0}
