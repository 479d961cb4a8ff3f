"""The dataset's SHA1 split rule and the prepare stage's TF examples/speech_commands semantics."""
import hashlib
import math
import re

import numpy as np
import soundfile as sf

from pipeline.stages import prepare
from pipeline.config import load_config
from pipeline.dataset import read_rows, which_set


def reference_which_set(filename, validation_percentage, testing_percentage):
    """Written from the dataset README's description, independently of pipeline.prepare."""
    base_name = filename.split("/")[-1]
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    value = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    percentage_hash = (value % ((2**27 - 1) + 1)) * (100.0 / (2**27 - 1))
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def test_which_set_matches_the_reference_rule():
    rng = np.random.default_rng(0)
    for _ in range(500):
        name = f"{rng.integers(2**32):08x}_nohash_{rng.integers(5)}.wav"
        assert which_set(name, validation_percentage=10, testing_percentage=10) == reference_which_set(name, 10, 10)


def test_which_set_keeps_a_speaker_in_one_split():
    for speaker in ("0a7c2a8d", "ffd2ba2f", "c50f55b8", "3bfd30e6"):
        splits = {which_set(f"{speaker}_nohash_{n}.wav", validation_percentage=10, testing_percentage=10) for n in range(6)}
        assert len(splits) == 1


def test_which_set_proportions_are_about_right():
    names = [f"{i:08x}_nohash_0.wav" for i in range(4000)]
    counts = {s: 0 for s in ("training", "validation", "testing")}
    for name in names:
        counts[which_set(name, validation_percentage=10, testing_percentage=10)] += 1
    assert 0.08 < counts["validation"] / 4000 < 0.12 and 0.08 < counts["testing"] / 4000 < 0.12


def _make_dataset(root, words, speakers, *, lists=True, extra_files=True):
    rng = np.random.default_rng(1)
    test_names, val_names = [], []
    for word in words:
        (root / word).mkdir(parents=True)
        for spk in speakers:
            name = f"{spk}_nohash_0.wav"
            sf.write(root / word / name, rng.uniform(-0.1, 0.1, 8000).astype(np.float32), 16000)
            split = which_set(name, validation_percentage=10, testing_percentage=10)
            (test_names if split == "testing" else val_names if split == "validation" else []).append(f"{word}/{name}")
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white.wav", rng.uniform(-0.5, 0.5, 48000).astype(np.float32), 16000)
    if extra_files:
        (root / "_background_noise_" / "README.md").write_text("noise")
        (root / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF not really a wav")
        (root / "LICENSE").write_text("cc-by")
    if lists:
        (root / "testing_list.txt").write_text("\n".join(test_names) + "\n")
        (root / "validation_list.txt").write_text("\n".join(val_names) + "\n")
    return test_names, val_names


def test_prepare_follows_lists_adds_silence_unknown_and_skips_bad_files(tmp_path):
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat"]
    speakers = [f"{i:08x}" for i in range(60)]
    root = tmp_path / "ds"
    test_names, _ = _make_dataset(root, words, speakers)
    cfg = load_config("configs/demo.yaml", [f"paths.data={tmp_path}"])
    cfg_dataset = cfg.dataset_dir
    root.rename(cfg_dataset)
    prepare.run(cfg)
    report = __import__("json").loads((cfg.prepared_dir / "report.json").read_text())
    test = read_rows(cfg.prepared_dir, "test")
    keyword_test = sorted(f"{r['label']}/{r['path'].split('/')[-1]}" for r in test if not r["label"].startswith("_"))
    assert keyword_test == sorted(n for n in test_names if n.split("/")[0] not in ("bed", "cat"))
    n_known = len(keyword_test)
    counts = report["counts"]["test"]
    assert counts["_silence_"] == math.ceil(n_known * 0.1)
    assert counts["_unknown_"] == math.ceil(n_known * 0.1)  # the bed/cat pool (2 per speaker) is large enough
    assert report["skipped"] == 1 and "broken" in report["skipped_files"][0]["path"]
    assert all(v == 0 for v in report["speaker_overlap"].values())


def test_prepare_without_lists_uses_the_sha1_rule(tmp_path):
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    speakers = [f"{i:08x}" for i in range(40)]
    cfg = load_config("configs/demo.yaml", [f"paths.data={tmp_path}"])
    test_names, _ = _make_dataset(cfg.dataset_dir, words, speakers, lists=False, extra_files=False)
    prepare.run(cfg)
    report = __import__("json").loads((cfg.prepared_dir / "report.json").read_text())
    assert report["lists"] == "sha1 which_set rule"
    test = read_rows(cfg.prepared_dir, "test")
    assert sorted(f"{r['label']}/{r['path'].split('/')[-1]}" for r in test if not r["label"].startswith("_")) == sorted(test_names)


def test_training_only_words_are_extra_unknown_rows_of_train(tmp_path):
    """synth.training_unknown_words: task.training_unknown_percentage more _unknown_ rows in train, drawn from
    those words alone; the rows drawn from the held-out vocabulary (unknown_percentage) stay as they were."""
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat"]
    speakers = [f"{i:08x}" for i in range(60)]
    keys = [f"paths.data={tmp_path}", "synth.training_unknown_per_speaker=1", "synth.training_unknown_words=[mess, kite]"]
    cfg = load_config("configs/demo.yaml", keys + ["task.training_unknown_percentage=20"])
    test_names, val_names = _make_dataset(tmp_path / "ds", words, speakers, extra_files=False)
    for word in ("mess", "kite"):  # training only: in neither list, as synth leaves them
        (tmp_path / "ds" / word).mkdir()
        for spk in speakers:
            sf.write(tmp_path / "ds" / word / f"{spk}_nohash_0.wav", np.zeros(8000, np.float32), 16000)
    (tmp_path / "ds").rename(cfg.dataset_dir)
    prepare.run(cfg)
    train = read_rows(cfg.prepared_dir, "train")
    n_known = sum(not r["label"].startswith("_") for r in train)
    extra = [r for r in train if r["path"].split("/")[-2] in ("mess", "kite")]
    assert len(extra) == math.ceil(n_known * 0.2) and all(r["label"] == "_unknown_" for r in extra)
    assert not any(r["path"].split("/")[-2] in ("mess", "kite") for split in ("validation", "test")
                   for r in read_rows(cfg.prepared_dir, split))
    plain = load_config("configs/demo.yaml", keys + ["task.training_unknown_percentage=0"])
    assert plain.dataset_dir == cfg.dataset_dir and plain.prepared_dir != cfg.prepared_dir
    prepare.run(plain)
    assert [r for r in train if r not in extra] == read_rows(plain.prepared_dir, "train")
