"""Every stage end to end through the CLI, on a tiny synthesized dataset (real espeak, librosa, TF, TFLite).

One session-scoped run (tests/conftest.py) is shared by the assertions; the re-run checks reuse its folders.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, TINY, cli

pytestmark = pytest.mark.slow


def test_all_stages_write_the_contract_outputs(tiny_run):
    tmp, run_dir, result = tiny_run
    for stage in ("synth", "prepare", "features", "train", "evaluate", "export", "verify"):
        assert f"==> {stage}" in result.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labels = (run_dir / "labels.txt").read_text().split()
    assert manifest["labels"] == labels == metrics["labels"] and len(labels) == 12
    assert set(manifest["feature_spec"]) >= {"sample_rate", "clip_samples", "n_fft", "win_length", "hop_length",
                                             "n_mels", "fmin", "fmax", "center", "log"}
    assert metrics["num_test_examples"] == sum(v["support"] for v in metrics["per_class"].values()) > 0
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (12, 12) and cm.sum() == metrics["num_test_examples"]
    assert abs(np.trace(cm) / cm.sum() - metrics["test_accuracy"]) < 1e-6
    assert manifest["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    for picture in ("confusion_matrix.png", "training_curves.png"):
        assert (run_dir / picture).read_bytes()[:4] == b"\x89PNG"
    assert manifest["verified"]["ok"] is True
    # the continuous sequences and the benchmark recordings were made beside the 1-s training, and used
    assert "the side process had made the continuous sequences" in result.stdout
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["continuous"]["built_beside_training"] and summary["continuous"]["sequences"] > 0
    long_audio = manifest["long_audio"]
    assert long_audio["keywords"] > 0 and 0 <= long_audio["recall"] <= 1 and long_audio["false_alarms_per_hour"] >= 0
    # the demo's three validation recordings and three quiet ones pick the threshold
    assert long_audio["validation_minutes"] == (3 + 3) * 0.5
    # the quiet test recording is reported apart, at the same threshold: commands said alone only
    quiet = long_audio["quiet_test"]
    assert quiet["alone"] == quiet["keywords"] and quiet["in_phrases"] == 0 and quiet["hours"] == round(0.5 / 60, 3)
    assert quiet["hits"] == round(quiet["recall"] * quiet["keywords"]) and quiet["false_alarms"] >= 0
    assert long_audio["validation"]["keywords"] > long_audio["keywords"]
    assert (run_dir / "det_curve.png").read_bytes()[:4] == b"\x89PNG"
    # recall of words said alone, split by the noise level they were said in, adds up to the whole
    test, by_snr = long_audio["test"], long_audio["test"]["recall_alone_by_snr"]
    assert set(by_snr) <= {"30 dB", "20 dB", "10 dB"} and sum(v["keywords"] for v in by_snr.values()) == test["alone"]
    if test["alone"]:
        assert sum(v["hits"] for v in by_snr.values()) == round(test["recall_alone"] * test["alone"])
    # every false alarm at the chosen threshold is listed with what was being said before it
    listed = json.loads((run_dir / "long_audio.json").read_text())["test_false_alarms"]
    assert len(listed) == long_audio["false_alarms"] and all(isinstance(fa["heard"], str) for fa in listed)
    # the recording's transcript places each keyword event inside a piece of its kind
    recording = json.loads(next((tmp / "data").glob("*_long_audio_v*/test.json")).read_text())
    for event in recording["events"]:
        assert any(p["kind"] == event["kind"] and p["start_s"] - 1e-3 <= event["start_s"] < event["end_s"] <= p["end_s"] + 1e-3
                   for p in recording["transcript"])


def test_every_artifact_is_verified_with_builtin_ops_and_float32_parity(tiny_run):
    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    variants = {(a["kind"], a["variant"], a["input"]) for a in manifest["artifacts"]}
    assert {("saved_model", "float32", "features"), ("tflite", "float32", "features"), ("tflite", "float32", "audio"),
            ("tflite", "dynamic_range", "features"), ("tflite", "int8", "features"),
            ("tflite", "streaming", "audio"), ("tflite", "streaming_int8", "features"),
            ("tflite", "continuous", "audio"), ("tflite", "continuous_int8", "features")} <= variants
    for art in manifest["artifacts"]:
        path = run_dir / art["path"]
        assert path.exists() and art["bytes"] > 0 and len(art["sha256"]) == 64
        checks = art["checks"]
        if art["kind"] == "tflite":
            assert checks["builtins_only"] and not any(op.startswith("Flex") for op in checks["ops"])
        if art["variant"] in ("float32", "streaming"):
            assert checks["max_abs_diff_vs_keras"] <= 1e-4 and checks["top1_agreement"] == 1.0
        if art["variant"] == "continuous":  # a minute through one state, against the Keras sequence model
            assert checks["parity_ok"] and checks["max_abs_diff_vs_keras"] <= 1e-4 and checks["frames"] >= 1000
        if art["variant"] == "continuous_int8":  # the same minute through the float frontend and the int8 network
            assert art["frontend"] == "model_streaming_frontend.tflite" and checks["frames"] >= 1000
            assert 0 < checks["mean_abs_diff_vs_keras"] < 0.05, checks  # int8 rounding, not another model
        for front in (checks, checks.get("audio_signature", {})):
            if "logmel_power_error" in front:
                assert front["logmel_power_error"] <= 1e-4 and front["logmel_max_abs_diff_db_within_60db"] < 0.01
    assert manifest["verified"]["goals_missed"] is not None
    detection = manifest["detection"]
    assert {"streams", "smooth_windows", "threshold", "refractory_s", "flush_hops", "window_samples",
            "stride_samples"} <= set(detection)
    assert detection["threshold"] == manifest["long_audio"]["threshold"]
    assert detection["design"] == manifest["long_audio"]["design"] == "continuous"  # the demo recipe's detector
    assert detection["model"] == "model_continuous.tflite"
    # the int8 detector ran the test recording at the run's threshold, through the edge runtime
    int8, test = manifest["long_audio"]["test_int8"], manifest["long_audio"]["test"]
    assert int8["model"] == "model_continuous_int8.tflite" and int8["keywords"] == manifest["long_audio"]["keywords"]
    assert int8["recall_drop_points"] == round(100 * (test["recall"] - int8["recall"]), 2)
    assert int8["within_goal"] == (int8["recall_drop_points"] <= 2.0 and int8["false_alarms"] <= test["false_alarms"] + 1)
    saved = next(a for a in manifest["artifacts"] if a["kind"] == "saved_model")
    assert saved["checks"]["audio_signature"]["max_abs_diff_vs_keras"] <= 1e-4


def test_saved_model_has_no_cudnn_ops_and_a_flexible_batch(tiny_run):
    import tensorflow as tf

    from pipeline.feature_spec import FeatureSpec
    from pipeline.stages.export import CUDNN_OP_TYPES, graph_op_types

    _, run_dir, _ = tiny_run
    spec = FeatureSpec.from_dict(json.loads((run_dir / "manifest.json").read_text())["feature_spec"])
    assert not graph_op_types(run_dir / "saved_model") & set(CUDNN_OP_TYPES)
    loaded = tf.saved_model.load(str(run_dir / "saved_model"))
    for batch in (1, 3):
        out = loaded.signatures["features"](features=tf.zeros([batch, *spec.shape]))["scores"]
        assert out.shape == (batch, 12)
        np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, atol=1e-5)


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def stage_lines(result) -> dict:
    """{stage: "ran" | "up to date"} from the runner's output."""
    out = {}
    for line in result.stdout.splitlines():
        if line.startswith("==> "):
            out[line[4:].strip()] = "ran"
        elif line.startswith("--  ") and line.endswith(": up to date"):
            out[line[4:-len(": up to date")]] = "up to date"
    return out


STAGES = ("synth", "prepare", "features", "train", "evaluate", "export", "verify")


def test_second_run_does_no_work(tiny_run):
    tmp, run_dir, _ = tiny_run
    before = mtimes(tmp / "exports")
    result = cli("all", tmp=tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    assert stage_lines(result) == dict.fromkeys(STAGES, "up to date")
    assert mtimes(tmp / "exports") == before


def test_keys_that_change_no_result_rerun_nothing(tiny_run):
    tmp, run_dir, _ = tiny_run
    before = mtimes(tmp / "exports") | mtimes(tmp / "data")
    result = cli("all", tmp=tmp, extra=["features.workers=1", "features.batch_size=7"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert stage_lines(result) == dict.fromkeys(STAGES, "up to date")
    assert mtimes(tmp / "exports") | mtimes(tmp / "data") == before


def test_a_stage_writing_identical_outputs_does_not_rerun_the_next(tiny_run):
    tmp, run_dir, _ = tiny_run
    (run_dir / "confusion_matrix.png").unlink()  # evaluate must run again; its metrics come out the same
    export_files = {p: t for p, t in mtimes(run_dir).items() if p.suffix == ".tflite" or p.name == "export.json"}
    result = cli("all", tmp=tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = stage_lines(result)
    assert lines["evaluate"] == "ran" and lines["export"] == lines["verify"] == "up to date", lines
    assert (run_dir / "confusion_matrix.png").is_file()
    assert {p: t for p, t in mtimes(run_dir).items() if p in export_files} == export_files


def test_a_key_only_verify_reads_reruns_verify_alone(tiny_run):
    tmp, run_dir, _ = tiny_run
    export_json = (run_dir / "export.json").stat().st_mtime_ns
    assert json.loads((run_dir / "manifest.json").read_text())["long_audio"]["sentence_words"] == "held-out"
    result = cli("all", tmp=tmp, extra=["export.long_audio_minutes=0.4", "export.long_audio_words=base"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert stage_lines(result) == {**dict.fromkeys(STAGES[:-1], "up to date"), "verify": "ran"}
    assert (run_dir / "export.json").stat().st_mtime_ns == export_json
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["long_audio"]["minutes"] == 0.4 and manifest["config"]["export"]["long_audio_minutes"] == 0.4
    assert manifest["long_audio"]["sentence_words"] == "base"
    back = cli("all", tmp=tmp)  # and back to the fixture's value, for the tests that follow
    assert back.returncode == 0 and stage_lines(back)["verify"] == "ran"


def test_changing_a_training_key_reruns_train_and_later_stages_only(tiny_run):
    tmp, run_dir, _ = tiny_run
    features_stats = next((tmp / "data").glob("*_features_*/stats.json"))
    stats_mtime = features_stats.stat().st_mtime_ns
    model_mtime = (run_dir / "model.keras").stat().st_mtime_ns
    continuous = json.loads((run_dir / "train_summary.json").read_text())["continuous"]
    assert continuous["sequences"] > 100 and continuous["chain"] == 2
    mined = continuous["hard_negatives"]  # places where the trained state fired on speech, 6 sequences each
    assert mined["speech_hours"] > 0 and mined["sequences"] == 6 * mined["places"]
    assert len(mined["places_each_round"]) == 2 and sum(mined["places_each_round"]) == mined["places"]
    # one epoch, and the continuous design off: the run falls back to the staggered design
    result = cli("all", tmp=tmp, extra=["train.epochs=1", "train.continuous_sequences=0"])
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("synth", "prepare", "features"):
        assert f"--  {stage}: up to date" in result.stdout
    for stage in ("train", "evaluate", "export", "verify"):
        assert f"==> {stage}" in result.stdout
    assert features_stats.stat().st_mtime_ns == stats_mtime
    assert (run_dir / "model.keras").stat().st_mtime_ns != model_mtime
    assert json.loads((run_dir / "train_summary.json").read_text())["epochs_run"] == 1
    # the earlier run's continuous model is gone, not exported as this run's detector
    assert not (run_dir / "model_continuous.keras").exists() and not (run_dir / "model_continuous.tflite").exists()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["verified"]["ok"] and "continuous" not in {a["variant"] for a in manifest["artifacts"]}
    assert manifest["detection"]["design"] == manifest["long_audio"]["design"] == "staggered"
    assert manifest["detection"]["model"] == "model_streaming.tflite"
    back = cli("all", tmp=tmp)  # and back to the fixture's run, for the tests that follow
    assert back.returncode == 0, back.stderr[-2000:]
    assert json.loads((run_dir / "manifest.json").read_text())["detection"]["design"] == "continuous"


def test_predict_takes_every_artifact_and_one_line_per_bad_file(tiny_run, tmp_path):
    tmp, run_dir, _ = tiny_run
    clip = next((tmp / "data").glob("synth_*/yes/*.wav"))
    stereo_44k = tmp_path / "stereo.flac"
    audio, rate = sf.read(clip)
    import librosa

    sf.write(stereo_44k, np.stack([librosa.resample(audio, orig_sr=rate, target_sr=44100)] * 2, axis=1), 44100)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    labels = (run_dir / "labels.txt").read_text().split()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    models = [a["path"] for a in manifest["artifacts"] if a["variant"] != "streaming_frontend"] + ["."]
    assert "model_streaming_int8.tflite" in models and len(models) == len(manifest["artifacts"])
    top = {}
    for model in models:
        result = cli("predict", str(run_dir / model), str(clip), str(stereo_44k), str(bad), "--json", "--top-k", "3", tmp=tmp)
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["file"] for line in lines] == [str(clip), str(stereo_44k)]
        assert all(line["label"] in labels and len(line["top_k"]) == 3 for line in lines)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(bad) in errors[0]
        top[model] = lines[0]["score"]
    float_models = ["model_float32.tflite", "model_audio_float32.tflite", "model_streaming.tflite", "saved_model", "."]
    assert max(top[m] for m in float_models) - min(top[m] for m in float_models) < 1e-4  # the same model, 5 ways


def test_predict_refuses_the_streaming_frontend_alone_in_one_line(tiny_run):
    tmp, run_dir, _ = tiny_run
    clip = next((tmp / "data").glob("synth_*/yes/*.wav"))
    result = cli("predict", str(run_dir / "model_streaming_frontend.tflite"), str(clip), tmp=tmp)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "model_streaming_int8.tflite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_detect_streams_a_file_and_matches_the_edge_runtime(tiny_run, tmp_path):
    from pipeline.edge.detection import DetectionParams, Detector
    from pipeline.edge.run_folder import RunFolder

    tmp, run_dir, _ = tiny_run
    clips = sorted((tmp / "data").glob("synth_*/*/*.wav"))[::7][:12]
    audio = np.concatenate([np.concatenate([sf.read(c, dtype="float32")[0], np.zeros(8000, np.float32)]) for c in clips])
    path, path_44k = tmp_path / "long.wav", tmp_path / "long_44k.flac"
    sf.write(path, audio, 16000)
    import librosa

    sf.write(path_44k, librosa.resample(audio, orig_sr=16000, target_sr=44100), 44100)
    audio = sf.read(path, dtype="float32")[0]  # what detect reads: 16-bit samples
    # a threshold that fires on some windows and not others (the tiny model's scores are flat)
    run = RunFolder(run_dir)
    params = DetectionParams.from_manifest(run.manifest)
    assert params.design == "continuous" and run.manifest["detection"]["model"] == "model_continuous.tflite"
    step = run.streaming_step(run.artifact(run_dir / "model_continuous.tflite"))  # the run's detector
    keyword_ids = [i for i, label in enumerate(run.labels) if not label.startswith("_")]
    windows = list(Detector(step, run.geometry, run.labels, params, window_samples=16000, sample_rate=16000).windows(audio))
    best = np.array([row[keyword_ids].max() for _, row in windows])
    threshold = round(float(np.quantile(best, 0.7)), 6)
    result = cli("detect", str(run_dir), str(path), "--json", "--threshold", str(threshold), tmp=tmp)
    assert result.returncode == 0, result.stderr
    detections = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(detections) >= 2 and all(0 <= d["time_s"] <= len(audio) / 16000 for d in detections)
    times = [d["time_s"] for d in detections]
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(times, times[1:]))  # refractory period
    assert "real-time factor" in result.stderr and "peak memory" in result.stderr
    # the command reads 10-s blocks; the runtime fed all at once finds the same detections
    detector = Detector(step, run.geometry, run.labels, DetectionParams(**{**params.__dict__, "threshold": threshold}),
                        window_samples=16000, sample_rate=16000)
    expected = [{"time_s": round(d.time_s, 2), "label": d.label, "score": round(d.score, 4)} for d in detector.feed(audio)]
    assert detections == expected
    # another rate goes through the streaming resampler; the split int8 pairs run the same algorithm
    for model, file in ((run_dir, path_44k), (run_dir / "model_streaming_int8.tflite", path),
                        (run_dir / "model_continuous_int8.tflite", path)):
        other = cli("detect", str(model), str(file), "--json", "--threshold", "0.0", tmp=tmp)
        assert other.returncode == 0, other.stderr
        other_times = [json.loads(line)["time_s"] for line in other.stdout.splitlines()]
        assert other_times and all(0 <= t <= len(audio) / 16000 + 0.5 for t in other_times)
    # without --threshold: the int8 continuous network is the run's own design, so its threshold applies as it is
    int8 = cli("detect", str(run_dir / "model_continuous_int8.tflite"), str(path), "--json", tmp=tmp)
    staggered = cli("detect", str(run_dir / "model_streaming_int8.tflite"), str(path), "--json", tmp=tmp)
    assert int8.returncode == staggered.returncode == 0
    assert "tuned for its continuous design" not in int8.stderr and "tuned for its continuous design" in staggered.stderr


def test_detect_runs_on_litert_without_tensorflow(tiny_run, tmp_path):
    """ai-edge-litert is a dependency: detect and the edge runtime never load TensorFlow (its import alone
    is ~500 MB, the reason a 1-h detect stayed over 200 MB)."""
    tmp, run_dir, _ = tiny_run
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(48000, np.float32), 16000)
    code = ("import sys; from pipeline.commands import detect; "
            f"rc = detect.main(model={str(run_dir)!r}, file={str(path)!r}); "
            "print('tensorflow' in sys.modules, rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # the last line is ours; detections come before it (whether the tiny model fires here depends on the
    # threshold its verify picked, which other tests may have re-run)
    assert result.stdout.splitlines()[-1].split() == ["False", "0"], result.stdout[-2000:]
    from pipeline.edge.runtime import _interpreter_class

    assert _interpreter_class().__module__.startswith("ai_edge_litert")


@pytest.mark.parametrize("content", [None, b"", b"not audio"], ids=["missing", "empty", "unreadable"])
def test_detect_on_a_bad_file_is_one_line(tiny_run, tmp_path, content):
    tmp, run_dir, _ = tiny_run
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    result = cli("detect", str(run_dir), str(path), tmp=tmp)
    assert result.returncode == 1 and result.stderr.strip().startswith("error:") and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_detect_names_a_folder_it_cannot_run_and_an_untuned_threshold(tiny_run, tmp_path):
    tmp, run_dir, _ = tiny_run
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(32000, np.float32), 16000)
    saved = cli("detect", str(run_dir / "saved_model"), str(path), tmp=tmp)  # a folder, but not the run's
    assert saved.returncode == 1 and len(saved.stderr.strip().splitlines()) == 1, saved.stderr
    assert "not a streaming model" in saved.stderr
    bare = tmp_path / "run"  # exported, not verified: export.json holds the default threshold
    bare.mkdir()
    for name in ("export.json", "labels.txt", "model_continuous.tflite"):
        shutil.copy(run_dir / name, bare / name)
    untuned = cli("detect", str(bare), str(path), tmp=tmp)
    assert untuned.returncode == 0 and "verify has not run" in untuned.stderr, untuned.stderr
    tuned = cli("detect", str(bare), str(path), "--threshold", "0.5", tmp=tmp)
    assert tuned.returncode == 0 and "verify has not run" not in tuned.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hard_negative_mining_continues_training_on_what_the_model_fires_on(tiny_run):
    """Threshold 0 mines every window of the training speakers' speech; training then goes on one epoch."""
    tmp, _, _ = tiny_run
    result = cli("train", tmp=tmp, extra=["run.name=tiny_mined", "train.epochs=1", "train.hard_negative_epochs=1",
                                           "train.hard_negative_threshold=0.0", "train.hard_negative_hop_ms=500"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp / "exports" / "tiny_mined" / "train_summary.json").read_text())
    mined = summary["hard_negatives"]
    assert mined["mined"] == mined["windows_scored"] > 0 and summary["epochs_run"] == 2
    assert summary["jit_compile"] is True  # the demo's XLA training step, on a CPU-only machine
    assert len((tmp / "exports" / "tiny_mined" / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_two_towers_fold_into_one_network_that_every_export_and_check_takes(tiny_run):
    """model.towers=2: two 16-unit models from their own seeds, each with its continuous design, folded into one
    network of 32 units; export, verify (float parity of every artifact, the continuous model against its
    Keras sequence model, the always-on benchmark) and the manifest take it like any model."""
    tmp, _, _ = tiny_run
    result = cli("all", tmp=tmp, extra=["run.name=tiny_towers", "model.towers=2", "train.epochs=1"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = tmp / "exports" / "tiny_towers"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert [t["seed"] for t in summary["towers"]] == [1234, 2234] and "2 towers folded into one network" in result.stdout
    assert all(t["continuous"]["sequences"] > 0 and t["continuous"]["hard_negatives"]["speech_hours"] > 0
               for t in summary["towers"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["gru_units"] == [32, 32] and manifest["model"]["tower_gru_units"] == [16, 16]
    assert manifest["verified"]["ok"] and manifest["detection"]["design"] == "continuous"
    streaming = next(a for a in manifest["artifacts"] if a["variant"] == "continuous")
    assert streaming["io"]["inputs"]["gru_0_state"] == [1, 32]  # the runtimes step one 32-unit state


def test_the_continuous_candidate_kept_is_the_one_the_validation_pick_rates_best(tiny_run):
    """train.continuous_candidates=2: the continuous design trained twice from the same 1-s weights, each on its
    own draw; the train stage keeps the candidate that verify's threshold pick over the validation
    recordings rates best, and verify then gives the kept model that same validation point."""
    tmp, _, _ = tiny_run
    result = cli("all", tmp=tmp, extra=["run.name=tiny_candidates", "train.epochs=1", "train.continuous_candidates=2"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = tmp / "exports" / "tiny_candidates"
    continuous = json.loads((run_dir / "train_summary.json").read_text())["continuous"]
    candidates = continuous["candidates"]
    assert len(candidates) == 2 and candidates[0]["loss"] != candidates[1]["loss"]  # own draws

    def rating(candidate):  # under the false-alarm target first, then commands found, then fewer false alarms
        judged = candidate["judged"]
        return judged["false_alarms"] <= judged["hours"], judged["hits"], -judged["false_alarms"]
    chosen = continuous["chosen_candidate"]
    assert chosen == max(range(2), key=lambda k: rating(candidates[k]))
    assert continuous["judged"] == candidates[chosen]["judged"] and continuous["hard_negatives"] == candidates[chosen]["hard_negatives"]
    assert f"candidate {chosen + 1} of 2 kept" in result.stdout
    long_audio = json.loads((run_dir / "manifest.json").read_text())["long_audio"]
    judged = candidates[chosen]["judged"]
    assert (long_audio["threshold"], long_audio["validation"]["hits"], long_audio["validation"]["false_alarms"]) == \
        (judged["threshold"], judged["hits"], judged["false_alarms"])


def test_mirrored_training_over_two_logical_cpu_devices(tiny_run):
    tmp, _, _ = tiny_run
    result = cli("train", tmp=tmp, extra=["run.name=tiny_mirrored", "train.distribute=mirrored", "train.cpu_devices=2",
                                           "train.epochs=1"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp / "exports" / "tiny_mirrored" / "train_summary.json").read_text())
    assert summary["distribute"] == "mirrored" and summary["replicas"] == 2 and summary["epochs_run"] == 1
    assert not summary["jit_compile"] and "train.jit_compile ignored under train.distribute=mirrored" in result.stdout
    assert "features: " in result.stdout and "already complete" in result.stdout  # the cache was reused


def test_multi_worker_training_on_localhost_gives_the_same_artifact_contract(tiny_run):
    tmp, _, _ = tiny_run
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "pipeline", "train"]
        for item in TINY + [f"paths.data={tmp / 'data'}", f"paths.exports={tmp / f'exports_w{index}'}",
                            "run.name=tiny_mw", "train.distribute=multi_worker", "train.epochs=2"]:
            cmd += ["--set", item]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
    chief_dir = tmp / "exports_w0" / "tiny_mw"
    summary = json.loads((chief_dir / "train_summary.json").read_text())
    assert summary["distribute"] == "multi_worker" and summary["replicas"] == 2 and summary["epochs_run"] == 2
    assert not (tmp / "exports_w1" / "tiny_mw" / "model.keras").exists()  # only the chief writes outputs
    # the rest of the pipeline runs on the multi-worker model like on any other
    result = cli("all", tmp=tmp, extra=[f"paths.exports={tmp / 'exports_w0'}", "run.name=tiny_mw",
                                        "train.distribute=multi_worker", "train.epochs=2"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "--  train: up to date" in result.stdout
    manifest = json.loads((chief_dir / "manifest.json").read_text())
    assert manifest["verified"]["ok"] and len(manifest["artifacts"]) >= 7


def test_feature_shards_merge_into_the_same_cache(tiny_run):
    tmp, _, _ = tiny_run
    original = next(p for p in (tmp / "data").glob("*_features_*") if p.suffix == "" and (p / "stats.json").is_file())
    shard_set = ["augment.copies=0", "run.name=tiny_shards"]  # another cache key; clean features are the same
    first = cli("features", tmp=tmp, extra=shard_set + ["features.shard=0/2"])
    assert first.returncode == 0, first.stderr[-2000:]
    early_merge = cli("features", tmp=tmp, extra=shard_set)
    assert early_merge.returncode != 0
    assert "shards [1] of 2 are missing" in early_merge.stderr and len(early_merge.stderr.strip().splitlines()) == 1
    second = cli("features", tmp=tmp, extra=shard_set + ["features.shard=1/2"])
    assert second.returncode == 0, second.stderr[-2000:]
    merged = cli("features", tmp=tmp, extra=shard_set)
    assert merged.returncode == 0 and "merged 2 shards" in merged.stdout, merged.stderr[-2000:]
    merged_dir = next(p for p in (tmp / "data").glob("*_features_*") if p != original and (p / "stats.json").is_file())
    for split in ("train", "validation", "test"):
        # shard boundaries change librosa's batch shapes, hence float32 round-off that can flip the cache's
        # float16 rounding: equal within one float16 step (2**-10 relative) or 1e-3 dB
        np.testing.assert_allclose(np.load(merged_dir / f"{split}.npy")[0].astype(np.float32),
                                   np.load(original / f"{split}.npy")[0].astype(np.float32), rtol=2**-10, atol=1e-3)
        np.testing.assert_array_equal(np.load(merged_dir / f"{split}_labels.npy"), np.load(original / f"{split}_labels.npy"))
    a, b = (json.loads((d / "stats.json").read_text()) for d in (merged_dir, original))
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-6)
    np.testing.assert_allclose(a["variance"], b["variance"], rtol=1e-6)


def test_bench_quick_prints_its_table_and_writes_bench_json(tiny_run):
    tmp, run_dir, _ = tiny_run
    result = cli("bench", "--quick", tmp=tmp)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["features"]["speedup"] > 0 and bench["train"]["stage_samples_per_s"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(bench["tflite"]) == {a["path"] for a in manifest["artifacts"] if a["kind"] == "tflite"}
    assert "| features speedup |" in result.stdout
    spec = manifest["feature_spec"]  # streaming latencies are per hop of the run's own length
    assert f"per {1000 * spec['hop_length'] / spec['sample_rate']:g}-ms hop" in result.stdout
