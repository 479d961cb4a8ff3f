"""./run bench: feature, TFLite, training and size benchmarks of a finished run -> <run>/bench.json.

Shared machines are noisy, so each figure is a median over repeats, and speeds that have a natural
baseline are reported as a ratio against it measured in the same run:
    features  the features stage's path (batched librosa over worker processes) vs a plain per-clip
              librosa.feature.melspectrogram loop, on the same clips
    tflite    p50/p90 latency per 1-s clip on one thread (per hop and real-time factor for streaming)
    train     samples/s of the train stage's input pipeline + model vs model.fit on in-memory arrays
    sizes     every artifact's bytes, and the parameter count
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time

import numpy as np

from pipeline.config import Config
from pipeline.errors import MissingInputError


def _median_rate(fn, count: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - t0))
    return float(np.median(rates))


def bench_features(cfg: Config, *, clips: int, repeats: int) -> dict:
    import librosa

    from pipeline.dataset import load_clip, read_rows
    from pipeline.feature_spec import FeatureSpec
    from pipeline.stages.features import extract_batch, init_worker

    spec = FeatureSpec.from_config(cfg)
    rows = read_rows(cfg.prepared_dir, "train")[:clips]
    workers = cfg.features.workers or os.cpu_count() or 1
    jobs = [{"split": "train", "version": 0, "start": i, "spec": spec.to_dict(), "rows": rows[i:i + cfg.features.batch_size],
             "seed": 0, "augment": {}} for i in range(0, len(rows), cfg.features.batch_size)]

    def plain_loop():  # what a first attempt looks like: decode + one librosa call per clip, one process
        for row in rows:
            audio = load_clip(row, spec)
            mel = librosa.feature.melspectrogram(y=audio, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
                                                 win_length=spec.win_length, center=True, pad_mode="constant",
                                                 n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
            10 * np.log10(np.maximum(mel, 1e-10))

    with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) as pool:
        pool.map(extract_batch, jobs[:workers])  # warm the workers (imports) before timing

        def stage_path():
            for _ in pool.imap_unordered(extract_batch, jobs):
                pass

        stage = _median_rate(stage_path, len(rows), repeats)
    plain = _median_rate(plain_loop, len(rows), repeats)
    return {"clips": len(rows), "workers": workers, "batch_size": cfg.features.batch_size,
            "stage_clips_per_s": round(stage, 1), "plain_librosa_loop_clips_per_s": round(plain, 1),
            "speedup": round(stage / plain, 2)}


def bench_tflite(run_dir, manifest: dict, *, repeats: int) -> dict:
    from pipeline.edge.runtime import TFLiteModel

    rng = np.random.default_rng(0)
    results = {}
    for art in manifest["artifacts"]:
        if art["kind"] != "tflite":
            continue
        runner = TFLiteModel(run_dir / art["path"], threads=1)
        inputs = {name: (0.1 * rng.standard_normal(shape)).astype(np.float32) for name, shape in runner.input_shapes.items()}
        if "features" in inputs:
            inputs["features"] = (inputs["features"] * 100 - 40).astype(np.float32)  # dB-like values
        for _ in range(5):
            runner(inputs)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner(inputs)
            times.append(1000 * (time.perf_counter() - t0))
        p50, p90 = float(np.percentile(times, 50)), float(np.percentile(times, 90))
        if "audio_hop" in inputs or art["variant"].startswith(("streaming", "continuous")):
            hop_ms = 1000 * manifest["feature_spec"]["hop_length"] / manifest["feature_spec"]["sample_rate"]
            results[art["path"]] = {"latency_ms_per_hop_p50": round(p50, 4), "latency_ms_per_hop_p90": round(p90, 4),
                                    "hop_ms": round(hop_ms, 3), "real_time_factor": round(p50 / hop_ms, 5)}
        else:
            results[art["path"]] = {"latency_ms_p50": round(p50, 3), "latency_ms_p90": round(p90, 3)}
    return results


def bench_train(cfg: Config, *, batches: int, repeats: int) -> dict:
    import keras
    import tensorflow as tf

    from pipeline.dataset import load_split, load_stats
    from pipeline.model import build_from_config
    from pipeline.stages.train import make_dataset, training_augment

    stats = load_stats(cfg.features_dir)
    feats, labels, rows = load_split(cfg.features_dir, "train")
    batch = cfg.train.batch_size
    n = min(len(labels), batch * batches)
    augment = training_augment(cfg)

    def compiled():
        model = build_from_config(cfg, stats, one_tower=True)  # what a training step trains
        model.compile(optimizer=keras.optimizers.AdamW(cfg.train.learning_rate), loss="categorical_crossentropy",
                      jit_compile=cfg.train.jit_compile and not tf.config.list_physical_devices("GPU"))  # as train
        return model

    pipeline_ds = make_dataset(feats, labels[:n], rows[:n], num_classes=len(stats["labels"]), batch_size=batch,
                               training=True, seed=0, augment=augment, mean=np.array(stats["mean"]))
    x = np.asarray(feats[0, rows[:n]], np.float32)
    y = keras.utils.to_categorical(labels[:n], len(stats["labels"]))
    ours, baseline = compiled(), compiled()
    ours.fit(pipeline_ds.take(2), epochs=1, verbose=0)  # trace before timing
    baseline.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0)
    stage = _median_rate(lambda: ours.fit(pipeline_ds, epochs=1, verbose=0), n, repeats)
    plain = _median_rate(lambda: baseline.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True), n, repeats)
    return {"examples": n, "batch_size": batch, "parameters": int(ours.count_params()),
            "stage_samples_per_s": round(stage, 1), "plain_fit_in_memory_samples_per_s": round(plain, 1),
            "ratio": round(stage / plain, 3),
            "note": "stage = memmapped cache + random augmented version + SpecAugment (tf.data); plain = model.fit on arrays"}


def run(cfg: Config, *, quick: bool = False) -> int:
    run_dir = cfg.run_dir
    manifest_path = run_dir / "manifest.json"
    for needed in (manifest_path, cfg.prepared_dir / "train.csv", cfg.features_dir / "stats.json"):
        if not needed.is_file():
            raise MissingInputError(f"{needed} is missing: run `./run all` (or `./run demo`) for this config first")
    manifest = json.loads(manifest_path.read_text())
    repeats = 1 if quick else 3
    t0 = time.time()
    result = {"run": cfg.run.name, "machine": {"cpus": os.cpu_count()}, "repeats": repeats}
    result["features"] = bench_features(cfg, clips=256 if quick else 2048, repeats=repeats)
    result["tflite"] = bench_tflite(run_dir, manifest, repeats=50 if quick else 500)
    result["train"] = bench_train(cfg, batches=4 if quick else 30, repeats=repeats)
    result["sizes"] = {"parameters": manifest.get("parameters"),
                       "artifacts": {a["path"]: a["bytes"] for a in manifest["artifacts"]}}
    result["seconds"] = round(time.time() - t0, 1)
    tmp = run_dir / "bench.json.part"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(run_dir / "bench.json")
    print(format_table(result))
    print(f"-> {run_dir / 'bench.json'}")
    return 0


def format_table(result: dict) -> str:
    f, t = result["features"], result["train"]
    lines = ["| what | figure |", "|---|---|",
             f"| features stage ({f['workers']} workers, batches of {f['batch_size']}) | {f['stage_clips_per_s']} clips/s |",
             f"| plain per-clip librosa loop | {f['plain_librosa_loop_clips_per_s']} clips/s |",
             f"| features speedup | **{f['speedup']}x** |",
             f"| train stage input pipeline + model ({t['parameters']} params) | {t['stage_samples_per_s']} samples/s |",
             f"| model.fit on in-memory arrays | {t['plain_fit_in_memory_samples_per_s']} samples/s |",
             f"| train ratio (stage / plain) | {t['ratio']} |"]
    for name, r in result["tflite"].items():
        size = result["sizes"]["artifacts"].get(name, 0) / 1024
        if "latency_ms_p50" in r:
            lines.append(f"| {name} ({size:.0f} KB) | p50 {r['latency_ms_p50']} ms, p90 {r['latency_ms_p90']} ms per 1-s clip |")
        else:
            lines.append(f"| {name} ({size:.0f} KB) | p50 {r['latency_ms_per_hop_p50']} ms per {r['hop_ms']:g}-ms hop, "
                         f"real-time factor {r['real_time_factor']} |")
    return "\n".join(lines)
