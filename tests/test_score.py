"""./run score MODEL DATA: collecting clips from WORD/ folders or a CSV, the label mapping, the metrics,
one-line errors; the slow tests score real clips with the tiny run's model and check against predict."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import cli
from pipeline.commands.score import collect, describe_mapping, label_mapping, summary

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def tone(path, rate=16000, channels=1):
    audio = 0.1 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    sf.write(path, np.stack([audio] * channels, axis=1) if channels > 1 else audio, rate)


def test_collect_reads_word_folders_and_skips_what_is_not_audio(tmp_path):
    for name in ("yes", "bed", "_background_noise_"):
        (tmp_path / name).mkdir()
    tone(tmp_path / "yes" / "b.wav")
    tone(tmp_path / "yes" / "a.wav")
    (tmp_path / "yes" / "notes.txt").write_text("not a clip")
    tone(tmp_path / "bed" / "c.flac", rate=44100, channels=2)
    tone(tmp_path / "_background_noise_" / "noise.wav")
    tone(tmp_path / "top_level.wav")  # not in a word folder: no label
    rows, ignored = collect(tmp_path)
    assert rows == [(tmp_path / "bed" / "c.flac", "bed"), (tmp_path / "yes" / "a.wav", "yes"),
                    (tmp_path / "yes" / "b.wav", "yes")]
    assert ignored == ["_background_noise_"]


def test_collect_reads_a_csv_with_relative_and_absolute_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    absolute = tmp_path / "elsewhere.wav"
    (tmp_path / "list.csv").write_text(f"path,label\nclips/a.wav,yes\n{absolute},bed\nclips/n.wav,_background_noise_\n")
    rows, ignored = collect(tmp_path / "list.csv")
    assert rows == [(tmp_path / "clips" / "a.wav", "yes"), (absolute, "bed")]
    assert ignored == ["_background_noise_"]


def test_mapping_sends_other_words_to_unknown_or_leaves_them_out():
    mapping = label_mapping(["yes", "bed", "cat", "yes", "_silence_"], LABELS)
    assert mapping == {"_silence_": "_silence_", "bed": "_unknown_", "cat": "_unknown_", "yes": "yes"}
    assert describe_mapping(mapping, ["_background_noise_"]) == \
        "labels: _silence_, yes: model labels; bed, cat -> _unknown_; _background_noise_: ignored"
    assert label_mapping(["yes", "bed"], ["yes", "no"]) == {"bed": None, "yes": "yes"}


def test_summary_counts_keywords_and_unknown_rejection():
    # true:      yes yes no  unk unk unk  sil
    # predicted: yes no  no  unk yes unk  sil
    y_true = np.array([2, 2, 3, 1, 1, 1, 0])
    y_pred = np.array([2, 3, 3, 1, 2, 1, 0])
    result = summary(y_true, y_pred, LABELS)
    assert result["accuracy"] == round(5 / 7, 6)
    assert result["keyword_accuracy"] == round(2 / 3, 6) and result["keyword_clips"] == 3
    assert result["unknown_rejection"] == round(2 / 3, 6) and result["unknown_clips"] == 3
    assert result["per_class"]["yes"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result["confusion_matrix"][2] == [0, 0, 1, 1]
    assert summary(np.array([2]), np.array([2]), LABELS)["unknown_rejection"] is None


@pytest.mark.parametrize("kind, needle", [
    ("missing", "missing: no such folder or CSV file"),
    ("empty", "no audio clips to score"),
    ("bad_csv", "expected a CSV with the header path,label"),
    ("binary_csv", "not a readable CSV file"),
])
def test_a_missing_or_empty_data_path_is_one_line_and_exit_1(tmp_path, kind, needle):
    data = tmp_path / "missing"
    if kind == "empty":
        data = tmp_path / "empty"
        (data / "yes").mkdir(parents=True)  # an empty word folder is still no clips
    elif kind == "bad_csv":
        data = tmp_path / "bad.csv"
        data.write_text("file,word\nx.wav,yes\n")
    elif kind == "binary_csv":
        data = tmp_path / "clips.csv"
        data.write_bytes(b"\xff\xfe\x00RIFF\x00\x80")
    result = cli("score", str(tmp_path / "no_model"), str(data), tmp=tmp_path)  # DATA is checked before the model
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0] and str(data) in lines[0]


def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_scoring(tmp_path):
    data = tmp_path / "recordings"
    (data / "yes").mkdir(parents=True)
    sf.write(data / "yes" / "a.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "taken").write_text("a file where the output folder would go")
    result = cli("score", str(tmp_path / "no_model"), str(data), "--out", str(tmp_path / "taken"), tmp=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "can't write the results there" in lines[0], result.stderr
    assert (tmp_path / "taken").read_text().startswith("a file")  # left as it was


# ---- with the tiny run's model (slow) -----------------------------------------------------------

@pytest.fixture
def recordings(tiny_run, tmp_path):
    """yes/ (3 clips + a broken file), no/ (2 clips + one as 44.1 kHz stereo flac), an other word (2 clips),
    _background_noise_/ (ignored), copied from the tiny run's synthesized dataset."""
    tmp, run_dir, _ = tiny_run
    dataset = next((tmp / "data").glob("synth_*/yes")).parent
    labels = (run_dir / "labels.txt").read_text().split()
    other = next(p.name for p in sorted(dataset.iterdir())  # a word with 2 clips (a training-only word may have 1)
                 if p.is_dir() and p.name not in labels and not p.name.startswith("_")
                 and len(list(p.glob("*.wav"))) >= 2)
    data = tmp_path / "recordings"
    for word, count in (("yes", 3), ("no", 2), (other, 2), ("_background_noise_", 1)):
        (data / word).mkdir(parents=True)
        for clip in sorted((dataset / word).glob("*.wav"))[:count]:
            shutil.copy(clip, data / word / clip.name)
    audio, rate = sf.read(sorted((dataset / "no").glob("*.wav"))[2])
    import librosa

    sf.write(data / "no" / "stereo44k.flac", np.stack([librosa.resample(audio, orig_sr=rate, target_sr=44100)] * 2, axis=1),
             44100)
    (data / "yes" / "broken.wav").write_bytes(b"not audio at all")
    return tmp, run_dir, data, other


@pytest.mark.slow
def test_score_a_folder_matches_predict_file_by_file(recordings):
    tmp, run_dir, data, other = recordings
    result = cli("score", str(run_dir), str(data), "--json", tmp=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    score = json.loads(result.stdout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(data / "yes" / "broken.wav") in errors[0]
    assert score["unreadable"] == [str(data / "yes" / "broken.wav")]
    assert score["mapping"] == {"no": "no", other: "_unknown_", "yes": "yes"}
    assert score["ignored"] == ["_background_noise_"]
    assert score["clips"] == 8 and score["keyword_clips"] == 6 and score["unknown_clips"] == 2
    support = {label: m["support"] for label, m in score["per_class"].items() if m["support"]}
    assert support == {"yes": 3, "no": 3, "_unknown_": 2}
    assert (data.parent / "recordings_score" / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((data.parent / "recordings_score" / "score.json").read_text())["accuracy"] == score["accuracy"]

    files = [f["path"] for f in score["files"]]
    predicted = cli("predict", str(run_dir), *files, "--json", tmp=tmp)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines()]
    assert labels == [f["predicted"] for f in score["files"]]
    targets = [f["target"] for f in score["files"]]
    assert score["accuracy"] == round(float(np.mean([p == t for p, t in zip(labels, targets)])), 6)
    keyword = [(p, t) for p, t in zip(labels, targets) if t not in ("_unknown_", "_silence_")]
    assert score["keyword_accuracy"] == round(float(np.mean([p == t for p, t in keyword])), 6)


@pytest.mark.slow
def test_score_a_csv_with_a_tflite_model_prints_the_table(recordings, tmp_path):
    tmp, run_dir, data, other = recordings
    clips = sorted(p for p in data.rglob("*") if p.is_file() and "_background_noise_" not in p.parts)
    lines = ["path,label"] + [f"{p.relative_to(data)},{p.parent.name}" for p in clips]
    (data / "list.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    result = cli("score", str(run_dir / "model_float32.tflite"), str(data / "list.csv"), "--out", str(out), tmp=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("labels: ") == 1 and f"{other} -> _unknown_" in result.stdout
    assert "accuracy" in result.stdout and "keyword accuracy" in result.stdout and "unknown rejection" in result.stdout
    table = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()
             if line.split() and line.split()[0] in ("yes", "no", "_unknown_")}
    assert table == {"yes": "3", "no": "3", "_unknown_": "2"}
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
    score = json.loads((out / "score.json").read_text())
    assert score["clips"] == 8 and score["artifact"] == "model_float32.tflite"
    assert (out / "confusion_matrix.png").is_file()
