"""Ablation of the voice and room augmentations and the espeak breadth: which ones carry a model past its
training voices?

For each variant (a list of ``--set`` overrides on top of a config) this builds the data with the
pipeline's own stages (synth, prepare, features: the same code and caches as ``./run``), trains the
config's model, and scores it on

- ``test``: the split's own held-out speakers (the demo's ">= 99%" figure);
- ``accents``, ``settings``: the unseen-voice set (pipeline/unseen_voices.py: other-language voices, and
  rates and pitches outside training), keyword accuracy and rejection of words never trained on.

Training mirrors the train stage (same model builder, AdamW with warmup and cosine decay, label smoothing,
one random cached version per clip per epoch, SpecAugment masks filled with the mean, best validation
epoch kept) but is a plain Keras loop on any backend, so it runs on the torch backend on a GPU machine
without TensorFlow: ``KERAS_BACKEND=torch``. Variants train in parallel processes (``--parallel``).

    .venv/bin/python scripts/voice_ablation.py --out /tmp/ablation              # every variant, CPU
    KERAS_BACKEND=torch python scripts/voice_ablation.py --out /tmp/ablation --parallel 8 --workers 16

Writes ``<out>/results.json`` and prints the markdown table of docs/voice_ablation.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import ALL_WORDS_V2, NEAR_COMMAND_WORDS  # noqa: E402

# The base of the single-change rows says the 25 other words of the real dataset and NEAR_COMMAND_WORDS for
# _unknown_ (53 words); "12_unknown_words" is the config's default list.
BASE_UNKNOWN_WORDS = "synth.unknown_words=[" + ", ".join(ALL_WORDS_V2[10:] + NEAR_COMMAND_WORDS) + "]"
# name -> overrides on top of the config. "base" is the config as it is; each "+x" turns one thing on.
ON = 0.5  # probability of each augmentation in its own row
VARIANTS = {
    "base": [],
    "+speed": [f"augment.speed_probability={ON}"],
    "+vtlp": [f"augment.vtlp_probability={ON}"],
    "+tilt": [f"augment.tilt_probability={ON}"],
    "+reverb": [f"augment.reverb_probability={ON}"],
    "+snr_noise": ["augment.noise_snr_db=[5, 20]"],
    "+gain": [f"augment.gain_probability={ON}"],
    "+all_six": [f"augment.speed_probability={ON}", f"augment.vtlp_probability={ON}", f"augment.tilt_probability={ON}",
                 f"augment.reverb_probability={ON}", "augment.noise_snr_db=[5, 20]", f"augment.gain_probability={ON}"],
}
# espeak breadth: variants of the synthesized data itself (each is its own dataset)
ACCENTS = "[de, fr, es, it, nl, pt, sv, pl, cs, hu, fi, ro, id, af, da, nb]"
BREADTH = {
    "+accent_voices": [f"synth.accent_voices={ACCENTS}"],
    "+emphasis": ["synth.emphasis_probability=0.5"],
    "+phrase_takes": ["synth.phrase_take_probability=0.5"],
    "12_unknown_words": ["synth.unknown_words=[bed, bird, cat, dog, happy, house, marvin, sheila, tree, wow, zero, four]"],
}
# combinations of what helped above, to pick the demo's recipe
SC25 = "synth.unknown_words=[" + ", ".join(ALL_WORDS_V2[10:]) + "]"
RECIPES = {
    "sc25_words": [SC25],
    "sc25+accents+tilt": [SC25, f"synth.accent_voices={ACCENTS}", f"augment.tilt_probability={ON}"],
    "sc25+accents+tilt+phrase": [SC25, f"synth.accent_voices={ACCENTS}", f"augment.tilt_probability={ON}",
                                 "synth.phrase_take_probability=0.5"],
    "12w+accents+tilt+phrase": [BREADTH["12_unknown_words"][0], f"synth.accent_voices={ACCENTS}",
                                f"augment.tilt_probability={ON}", "synth.phrase_take_probability=0.5"],
}


def spec_augment(x: np.ndarray, rng: np.random.Generator, fill: np.ndarray, *, freq_masks: int, freq_mask_width: int,
                 time_masks: int, time_mask_width: int) -> np.ndarray:
    """SpecAugment as the train stage applies it (tensorflow-io's masks: width uniform in [0, W), start
    uniform in [0, size - width)), vectorized over a batch [B, T, M]; masked cells get ``fill`` [M]."""
    b, frames, mels = x.shape
    out = x.copy()
    for count, width, size, axis in ((freq_masks, freq_mask_width, mels, 2), (time_masks, time_mask_width, frames, 1)):
        for _ in range(count if width > 0 else 0):
            w = rng.integers(0, width, size=b)
            start = rng.integers(0, np.maximum(size - w, 1))
            idx = np.arange(size)
            mask = (idx[None, :] >= start[:, None]) & (idx[None, :] < (start + w)[:, None])  # [B, size]
            if axis == 2:
                out = np.where(mask[:, None, :], fill[None, None, :], out)
            else:
                out = np.where(mask[:, :, None], fill[None, None, :], out)
    return out


def scores(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """accuracy, keyword accuracy (rows whose label is a word) and unknown rejection."""
    pred = probs.argmax(1)
    unknown = names.index("_unknown_")
    words = np.array([n not in ("_unknown_", "_silence_") for n in names])[labels]
    unk = labels == unknown
    return {"accuracy": float(np.mean(pred == labels)), "n": int(len(labels)),
            "keyword_accuracy": float(np.mean(pred[words] == labels[words])) if words.any() else None,
            "unknown_rejection": float(np.mean(pred[unk] == unknown)) if unk.any() else None}


def train_and_score(args) -> None:
    """One variant (in its own process): train on its feature cache, score test + unseen, write JSON."""
    import keras

    from pipeline.config import load_config
    from pipeline.dataset import load_split, load_stats
    from pipeline.model import build_from_config

    cfg = load_config(args.config, args.set)
    t = cfg.train
    keras.utils.set_random_seed(cfg.run.seed)
    stats = load_stats(cfg.features_dir)
    names = stats["labels"]
    feats, y_train, rows = load_split(cfg.features_dir, "train")
    x_train = np.asarray(feats[:, rows])  # [versions, n, T, M] float16
    vx, vy, vrows = load_split(cfg.features_dir, "validation")
    x_val = np.asarray(vx[0, vrows], np.float32)
    tx, ty, trows = load_split(cfg.features_dir, "test")
    x_test = np.asarray(tx[0, trows], np.float32)
    unseen = np.load(args.unseen)
    mean = np.asarray(stats["mean"], np.float32)
    a = cfg.augment
    masks = dict(freq_masks=a.freq_masks, freq_mask_width=a.freq_mask_width, time_masks=a.time_masks,
                 time_mask_width=a.time_mask_width)

    model = build_from_config(cfg, stats)
    steps = int(np.ceil(len(y_train) / t.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, steps * t.epochs), warmup_target=t.learning_rate,
        warmup_steps=int(steps * t.warmup_epochs), alpha=0.01)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing))
    rng = np.random.default_rng(cfg.run.seed)
    onehot = np.eye(len(names), dtype=np.float32)
    best, best_weights, t0 = -1.0, None, time.time()
    for epoch in range(t.epochs):
        version = rng.integers(x_train.shape[0], size=len(y_train))
        x = x_train[version, np.arange(len(y_train))].astype(np.float32)
        x = spec_augment(x, rng, mean, **masks)
        model.fit(x, onehot[y_train], batch_size=t.batch_size, epochs=1, shuffle=True, verbose=0)
        val = float(np.mean(model.predict(x_val, batch_size=512, verbose=0).argmax(1) == vy))
        if val > best:
            best, best_weights = val, model.get_weights()
        print(f"{args.name}: epoch {epoch + 1}/{t.epochs} val {val:.4f}", flush=True)
    model.set_weights(best_weights)
    result = {"variant": args.name, "overrides": args.set, "best_val_accuracy": best,
              "train_seconds": round(time.time() - t0, 1), "train_examples": int(len(y_train)),
              "backend": keras.backend.backend(),
              "test": scores(model.predict(x_test, batch_size=512, verbose=0), ty, names)}
    unseen_probs = model.predict(unseen["x"].astype(np.float32), batch_size=512, verbose=0)
    for group in ("accents", "settings"):
        pick = unseen["group"] == group
        result[group] = scores(unseen_probs[pick], unseen["y"][pick], names)
    Path(args.result).write_text(json.dumps(result, indent=1))


def unseen_features(cfg, folder: Path, out: Path) -> None:
    """Log-mel of every clip of the unseen-voice set (all 1 s) -> npz x [N, T, M], y [N], group [N]."""
    import csv

    from pipeline.audio import fit_length, load_audio
    from pipeline.feature_spec import FeatureSpec, logmel

    spec = FeatureSpec.from_config(cfg)
    names = cfg.labels
    audio, labels, groups = [], [], []
    for group in ("accents", "settings"):
        with open(folder / f"{group}.csv") as fh:
            for row in csv.DictReader(fh):
                audio.append(fit_length(load_audio(folder / row["path"], sample_rate=spec.sample_rate), spec.clip_samples))
                labels.append(names.index(row["label"]))
                groups.append(group)
    np.savez(out, x=logmel(np.stack(audio), spec).astype(np.float16), y=np.array(labels), group=np.array(groups))


def prepare_data(args, variants: dict) -> Path:
    """Synth, prepare and features of every variant (cached by the pipeline), and the unseen set's features."""
    from pipeline import unseen_voices
    from pipeline.config import load_config
    from pipeline.stages import features, prepare, synth

    for name, overrides in variants.items():
        cfg = load_config(args.config, args.base_set + overrides)
        t0 = time.time()
        synth.run(cfg)
        prepare.run(cfg)
        features.run(cfg)
        print(f"data {name}: {time.time() - t0:.0f} s", flush=True)
    cfg = load_config(args.config, args.base_set)
    folder = args.out / "unseen_voices"
    if not folder.exists():
        print("unseen voices:", unseen_voices.build(cfg, folder), flush=True)
    npz = args.out / "unseen_features.npz"
    if not npz.exists():
        unseen_features(cfg, folder, npz)
    return npz


def table(results: list[dict]) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    lines = ["| variant | own held-out voices (test) | unseen accents: keywords | unseen accents: unknown rejected "
             "| unseen settings: keywords | unseen settings: unknown rejected | best val |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['variant']} | {pct(r['test']['accuracy'])} | {pct(r['accents']['keyword_accuracy'])} | "
                     f"{pct(r['accents']['unknown_rejection'])} | {pct(r['settings']['keyword_accuracy'])} | "
                     f"{pct(r['settings']['unknown_rejection'])} | {pct(r['best_val_accuracy'])} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--out", type=Path, required=True, help="work folder: data/, results.json, unseen set")
    p.add_argument("--base-set", action="append", default=[], help="override for every variant (key=value)")
    p.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    p.add_argument("--parallel", type=int, default=1, help="variants trained at once")
    p.add_argument("--workers", type=int, default=0, help="features.workers (0 = every core)")
    p.add_argument("--train-one", action="store_true", help=argparse.SUPPRESS)  # internal: one variant's process
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--unseen", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_one:
        train_and_score(args)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.base_set = [f"paths.data={args.out / 'data'}", f"paths.exports={args.out / 'exports'}",
                     f"features.workers={args.workers}", *args.base_set]
    if not any(item.startswith("synth.unknown_words=") for item in args.base_set):
        args.base_set.append(BASE_UNKNOWN_WORDS)
    variants = {**VARIANTS, **BREADTH}
    if args.only:
        variants = {k: {**variants, **RECIPES}[k] for k in args.only.split(",")}
    npz = prepare_data(args, variants)
    procs, results = [], []
    pending = list(variants.items())
    while pending or procs:
        while pending and len(procs) < args.parallel:
            name, overrides = pending.pop(0)
            result = args.out / f"result_{name.strip('+')}.json"
            cmd = [sys.executable, __file__, "--train-one", "--name", name, "--config", args.config, "--out", str(args.out),
                   "--unseen", str(npz), "--result", str(result)]
            for item in args.base_set + overrides:
                cmd += ["--set", item]
            log = open(args.out / f"train_{name.strip('+')}.log", "w")
            procs.append((name, result, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(2)
        for entry in list(procs):
            name, result, proc = entry
            if proc.poll() is not None:
                procs.remove(entry)
                if proc.returncode == 0:
                    results.append(json.loads(result.read_text()))
                    print(f"{name}: done, test {results[-1]['test']['accuracy']:.4f}", flush=True)
                else:
                    print(f"{name}: FAILED (see {args.out}/train_{name.strip('+')}.log)", flush=True)
    order = list(variants)
    results.sort(key=lambda r: order.index(r["variant"]))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
