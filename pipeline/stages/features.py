"""Features stage: librosa log-mel of every prepared clip, streamed to an on-disk float16 cache.

Work is cut into batches of ``features.batch_size`` clips (one librosa call per batch is ~2x faster
than one call per clip) and spread over ``features.workers`` processes. Arrays are written straight
into ``.npy`` memmaps, so memory stays bounded whatever the dataset size.

Augmentation happens here, in the waveform domain before librosa (time shift and background-noise
mixing, as in TF examples/speech_commands, then pipeline/augment.py's voice and room augmentation, off
by default; see ``augment_clip``): ``augment.copies`` augmented versions of each training clip
are cached next to the clean one, and training draws one version per clip per epoch. Offline copies
cost one more feature pass; on-the-fly librosa would cost that pass every epoch on the same 2 cores
that train (see README, "Augmentation").

Layout of ``cfg.features_dir``:
    {split}.npy        float16 [versions, N, frames, n_mels]  (versions = 1 + copies for train, else 1)
    {split}_labels.npy int32 [N];  {split}_valid.npy bool [N] (False = undecodable, skipped)
    stats.json         train-set per-mel mean/variance (clean version), counts, skipped files
    timing.json        seconds, clips/s and workers of the run that wrote the cache
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.audio import AudioError, fit_length, load_audio
from pipeline.augment import AugmentParams, noise_segment, augment as augment_waveform
from pipeline.config import SILENCE_LABEL, Config
from pipeline.dataset import SPLITS, load_clip, noise_audio, read_rows, training_speech
from pipeline.errors import MissingInputError, StageError
from pipeline.feature_spec import FeatureSpec, logmel

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def add_context(audio: np.ndarray, speech: np.ndarray, *, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A word with running speech around it, as a sliding window sees a command said in a sentence: a
    random piece of another utterance, silenced over the word plus a 0-200 ms guard on each side,
    added at 0.2-1.0 of the word's peak level. The label stays the word's."""
    peak = float(np.abs(audio).max())
    loud = np.flatnonzero(np.abs(audio) > 0.1 * peak) if peak > 0 else np.zeros(0, int)
    if loud.size == 0 or len(speech) == 0:
        return audio
    start = int(rng.integers(0, max(1, len(speech) - len(audio))))
    piece = fit_length(speech[start:start + len(audio)], len(audio)).copy()
    guard = int(rng.uniform(0.0, 0.2) * sample_rate)
    piece[max(0, loud[0] - guard):loud[-1] + 1 + guard] = 0.0
    piece_peak = float(np.abs(piece).max())
    if piece_peak == 0.0:
        return audio
    return np.clip(audio + piece * (rng.uniform(0.2, 1.0) * peak / piece_peak), -1.0, 1.0).astype(np.float32)


def augment_clip(audio: np.ndarray, *, rng: np.random.Generator, noise_files: list[str], spec: FeatureSpec,
                 time_shift_ms: float, noise_probability: float, noise_volume: float, is_silence: bool,
                 params: AugmentParams, context_probability: float = 0.0, context_files: list[str] = ()) -> np.ndarray:
    """Random time shift (zero fill) and background-noise mix, as in TF examples/speech_commands, then
    ``pipeline.augment.augment`` with ``params`` (speed, VTLP, tilt, reverb, SNR noise, gain; all off by
    default, and then this is exactly the TF recipe). When ``augment.noise_snr_db`` is set, word clips
    get their noise from ``augment`` at an SNR instead of the volume mix here (after speed, VTLP, tilt
    and reverb: the noise is in the room, not spoken); silence clips always keep the volume mix."""
    shift_max = int(spec.sample_rate * time_shift_ms / 1000)
    shift = int(rng.integers(-shift_max, shift_max + 1)) if shift_max else 0
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio[:-shift]])
    elif shift < 0:
        audio = np.concatenate([audio[-shift:], np.zeros(-shift, np.float32)])
    if context_files and not is_silence and rng.random() < context_probability:
        speech = load_audio(context_files[int(rng.integers(len(context_files)))], sample_rate=spec.sample_rate)
        audio = add_context(audio, speech, rng=rng, sample_rate=spec.sample_rate)
    snr_noise = params.noise_probability > 0  # AugmentParams.from_config: only with augment.noise_snr_db
    if noise_files and (is_silence or (not snr_noise and rng.random() < noise_probability)):
        noise = noise_segment(noise_audio(noise_files[int(rng.integers(len(noise_files)))], spec.sample_rate),
                              spec.clip_samples, rng)
        volume = rng.uniform(0, 1.0 if is_silence else noise_volume)
        audio = np.clip(audio + volume * noise, -1.0, 1.0)
    noise = [noise_audio(f, spec.sample_rate) for f in noise_files] if snr_noise and not is_silence else []
    audio = augment_waveform(audio, rng=rng, params=params, noise=noise, sample_rate=spec.sample_rate)
    return audio.astype(np.float32)


def init_worker() -> None:
    """One BLAS/OpenMP thread per worker process: the processes already fill the cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def extract_batch(job: dict) -> dict:
    """One batch of rows -> float16 log-mel (decode, augment when version > 0, one librosa call).
    A plain dict in and out, so it pickles to worker processes; bench times the stage's path with it."""
    spec = FeatureSpec.from_dict(job["spec"])
    audio = np.zeros((len(job["rows"]), spec.clip_samples), np.float32)
    ok = np.ones(len(job["rows"]), bool)
    failures = []
    for i, row in enumerate(job["rows"]):
        try:
            clip = load_clip(row, spec)
        except AudioError as e:
            ok[i] = False
            failures.append(str(e))
            continue
        if job["version"] > 0:
            rng = np.random.default_rng([job["seed"], SPLIT_IDS[job["split"]], job["version"], job["start"] + i])
            clip = augment_clip(clip, rng=rng, spec=spec, is_silence=row["label"] == SILENCE_LABEL, **job["augment"])
        audio[i] = clip
    feats = logmel(audio, spec)
    return {"split": job["split"], "version": job["version"], "start": job["start"], "features": feats.astype(np.float16),
            "ok": ok, "failures": failures}


def augment_options(cfg: Config) -> dict:
    """``augment_clip``'s keyword arguments (all but the clip's own) for the augmented copies of this config."""
    noise_dir = cfg.dataset_dir / "_background_noise_"
    a = cfg.augment
    return {"time_shift_ms": a.time_shift_ms, "noise_probability": a.noise_probability, "noise_volume": a.noise_volume,
            "noise_files": sorted(str(p) for p in noise_dir.glob("*.wav")) if noise_dir.is_dir() else [],
            "params": AugmentParams.from_config(a), "context_probability": a.context_probability,
            "context_files": training_speech(cfg) if a.context_probability > 0 else []}


def _extract(cfg: Config, spec: FeatureSpec, rows: dict, ranges: dict, out: Path) -> dict:
    """Features of rows[split][lo:hi] for every split into ``out`` (arrays as in the module docstring).
    Returns the partial statistics: per-mel sums over clean train frames, counts, failures."""
    label_index = {label: i for i, label in enumerate(cfg.labels)}
    a = cfg.augment
    augment = augment_options(cfg)
    arrays, valid, jobs = {}, {}, []
    for split in SPLITS:
        lo, hi = ranges[split]
        versions = 1 + a.copies if split == "train" else 1
        arrays[split] = np.lib.format.open_memmap(out / f"{split}.npy", mode="w+", dtype=np.float16,
                                                  shape=(versions, hi - lo, *spec.shape))
        valid[split] = np.ones(hi - lo, bool)
        np.save(out / f"{split}_labels.npy", np.array([label_index[r["label"]] for r in rows[split][lo:hi]], np.int32))
        for version in range(versions):
            for start in range(lo, hi, cfg.features.batch_size):
                stop = min(hi, start + cfg.features.batch_size)
                jobs.append({"split": split, "version": version, "start": start, "offset": lo, "spec": spec.to_dict(),
                             "rows": rows[split][start:stop], "seed": cfg.run.seed, "augment": augment})
    total = sum(len(j["rows"]) for j in jobs)
    partial = {"mel_sum": np.zeros(spec.n_mels), "mel_sumsq": np.zeros(spec.n_mels), "frames": 0, "failures": [],
               "clips": total}
    workers = cfg.features.workers or os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) as pool, \
            tqdm(total=total, desc="features", unit="clip") as bar:
        for res, job in zip(pool.imap(extract_batch, jobs), jobs):  # ordered: pairs each result with its job
            split, version, feats = job["split"], job["version"], res["features"]
            at = job["start"] - job["offset"]
            arrays[split][version, at:at + len(feats)] = feats
            if version == 0:
                valid[split][at:at + len(feats)] &= res["ok"]
                partial["failures"].extend(res["failures"])
                if split == "train":  # statistics of the clean training clips only
                    good = feats[res["ok"]].astype(np.float64)
                    partial["mel_sum"] += good.sum(axis=(0, 1))
                    partial["mel_sumsq"] += (good**2).sum(axis=(0, 1))
                    partial["frames"] += good.shape[0] * good.shape[1]
            bar.update(len(feats))
    for split in SPLITS:
        arrays[split].flush()
        np.save(out / f"{split}_valid.npy", valid[split])
    partial["workers"] = workers
    return partial


def _shards_dir(cfg: Config) -> Path:
    return cfg.features_dir.with_name(cfg.features_dir.name + ".shards")


def _merge_shards(shards: list[Path], out: Path, spec: FeatureSpec, versions: dict) -> dict:
    """Concatenate complete shard folders (in order) into ``out``; returns the summed partial statistics."""
    partial = {"mel_sum": 0.0, "mel_sumsq": 0.0, "frames": 0, "failures": [], "clips": 0, "workers": 0}
    for split in SPLITS:
        parts = [np.load(d / f"{split}.npy", mmap_mode="r") for d in shards]
        merged = np.lib.format.open_memmap(out / f"{split}.npy", mode="w+", dtype=np.float16,
                                           shape=(versions[split], sum(p.shape[1] for p in parts), *spec.shape))
        at = 0
        for part in parts:
            merged[:, at:at + part.shape[1]] = part
            at += part.shape[1]
        merged.flush()
        for name in ("labels", "valid"):
            np.save(out / f"{split}_{name}.npy", np.concatenate([np.load(d / f"{split}_{name}.npy") for d in shards]))
    for d in shards:
        p = json.loads((d / "partial.json").read_text())
        for key in ("mel_sum", "mel_sumsq"):
            partial[key] = partial[key] + np.array(p[key])
        for key in ("frames", "clips"):
            partial[key] += p[key]
        partial["failures"] += p["failures"]
        partial["workers"] = max(partial["workers"], p["workers"])
    return partial


def run(cfg: Config) -> Path:
    """All features, or one shard (features.shard = "i/n"); a later run without shard merges the shards."""
    out = cfg.features_dir
    if (out / "stats.json").is_file():  # the folder name is a hash of the split index, spec and augmentation
        print(f"features: {out} already complete")
        return out
    spec = FeatureSpec.from_config(cfg)
    rows = {split: read_rows(cfg.prepared_dir, split) for split in SPLITS}
    versions = {split: 1 + cfg.augment.copies if split == "train" else 1 for split in SPLITS}
    t0 = time.time()
    if cfg.features.shard:
        index, count = (int(v) for v in cfg.features.shard.split("/"))
        ranges = {s: (len(rows[s]) * index // count, len(rows[s]) * (index + 1) // count) for s in SPLITS}
        target = _shards_dir(cfg) / f"shard-{index}-of-{count}"
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        partial = _extract(cfg, spec, rows, ranges, tmp)
        (tmp / "partial.json").write_text(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                                                      for k, v in partial.items()}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        print(f"features: shard {index}/{count} ({partial['clips']} clips) in {time.time() - t0:.1f} s -> {target}; "
              "run features without features.shard once every shard is done, to merge")
        return target

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = sorted(p for p in _shards_dir(cfg).glob("shard-*-of-*") if not p.name.endswith(".partial"))
    if shards:
        count = int(shards[0].name.split("-")[-1])
        missing = [i for i in range(count) if not (_shards_dir(cfg) / f"shard-{i}-of-{count}" / "partial.json").is_file()]
        if missing:
            raise MissingInputError(f"features: shards {missing} of {count} are missing in {_shards_dir(cfg)}: run "
                                    f"--set features.shard=i/{count} for each before merging")
        partial = _merge_shards([_shards_dir(cfg) / f"shard-{i}-of-{count}" for i in range(count)], tmp, spec, versions)
        print(f"features: merged {count} shards")
    else:
        partial = _extract(cfg, spec, rows, {s: (0, len(rows[s])) for s in SPLITS}, tmp)
    if partial["frames"] == 0:
        raise StageError(f"features: no decodable training clips in {cfg.prepared_dir}")
    mean = partial["mel_sum"] / partial["frames"]
    variance = np.maximum(partial["mel_sumsq"] / partial["frames"] - mean**2, 1e-6)
    seconds = time.time() - t0
    failures = partial["failures"]
    stats = {"feature_spec": spec.to_dict(), "labels": cfg.labels, "mean": mean.tolist(), "variance": variance.tolist(),
             "counts": {s: int(np.load(tmp / f"{s}_valid.npy").sum()) for s in SPLITS},
             "augmented_copies": cfg.augment.copies, "skipped": len(failures), "skipped_files": failures}
    (tmp / "stats.json").write_text(json.dumps(stats, indent=1))  # the cache's content: no timings in it
    (tmp / "timing.json").write_text(json.dumps({"seconds": round(seconds, 2), "clips": partial["clips"],
                                                 "clips_per_second": round(partial["clips"] / seconds, 1),
                                                 "workers": partial["workers"], "merged_shards": len(shards)}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    shutil.rmtree(_shards_dir(cfg), ignore_errors=True)
    print(f"features: {partial['clips']} clips in {seconds:.1f} s ({partial['clips'] / seconds:.0f} clips/s, "
          f"{partial['workers']} workers)" + (f", {len(failures)} undecodable skipped (listed in stats.json)" if failures else ""))
    return out
