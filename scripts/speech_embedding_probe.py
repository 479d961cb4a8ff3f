"""Does a speech representation learned from real speech carry a model to other synthesizers' voices?

A probe, not a stage. It trains a small GRU head on the demo's own training clips (espeak-ng only: each
clean clip and one augmented copy, as the features stage makes them), fed with the embeddings of Google's
speech_embedding network in place of log-mels, and reads it beside the run's own 1-s model and the mean of
the two models' scores, on the run's test split and on any scoring sets (docs/voice_ablation.md, "A speech
embedding learned from real speech").

The embedding network is not a dependency of the project. openWakeWord 0.4.0's wheel ships ONNX copies of it
(``melspectrogram.onnx``: 32 mel bands every 10 ms; ``embedding_model.onnx``: 96 numbers for every 76 frames)
under CC BY-NC-SA 4.0, a non-commercial licence, so no model this pipeline ships may contain them. Install
them into the project's environment by hand for the probe:

    .venv/bin/pip install onnxruntime && .venv/bin/pip install --no-deps openwakeword==0.4.0

Usage (after ./run demo, scripts/make_other_synth_set.py and scripts/make_unseen_voices.py; ~15 min here):
    .venv/bin/python scripts/speech_embedding_probe.py --run exports/demo --out /tmp/embedding_probe \\
        data/other_synth/flite.csv data/other_synth/festival.csv data/unseen/accents.csv

Each model is read at its own decision and at equal rejection of the sets' new words (55%, 67% and 73.5% of
them labelled ``_unknown_``), by scaling its ``_unknown_`` score: a model can buy keywords with rejection.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import AudioError, load_audio  # noqa: E402
from pipeline.commands.predict import Predictor, loudest_window  # noqa: E402
from pipeline.commands.score import collect, label_mapping, summary  # noqa: E402
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, load_config  # noqa: E402
from pipeline.dataset import load_clip, read_rows  # noqa: E402
from pipeline.feature_spec import FeatureSpec  # noqa: E402
from pipeline.io import write_text_atomic  # noqa: E402
from pipeline.stages.features import augment_clip, augment_options  # noqa: E402

REJECTIONS = (0.55, 0.67, 0.735)
WINDOW_FRAMES, WINDOW_STEP, EMBEDDING = 76, 8, 96  # the embedding network's input and its native 80-ms step
PAD_S = 0.25  # silence on each side of a 1-s clip: 1.5 s give 9 embeddings, a word seen whole in several


def keywords_at_rejection(scores: np.ndarray, y: np.ndarray, labels: list[str], rejection: float) -> float | None:
    """Keyword accuracy once the ``_unknown_`` score is scaled (the smallest scale on a log grid) until at least
    ``rejection`` of the ``_unknown_`` clips are predicted ``_unknown_``; None without new words or keywords."""
    unknown = labels.index(UNKNOWN_LABEL)
    for scale in np.exp(np.linspace(-8.0, 8.0, 321)):
        scaled = scores.copy()
        scaled[:, unknown] *= scale
        read = summary(y, scaled.argmax(1), labels)  # ./run score's figures
        if read["keyword_accuracy"] is None or read["unknown_rejection"] is None:
            return None
        if read["unknown_rejection"] >= rejection:
            return read["keyword_accuracy"]
    return None


def reading(scores: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """A model's figures on one set: at its own decision (as ``./run score`` gives them), and at each of REJECTIONS."""
    read = summary(y, scores.argmax(1), labels)
    out = {"clips": read["clips"], "accuracy": read["accuracy"], "keywords": read["keyword_accuracy"],
           "rejected": read["unknown_rejection"]}
    out.update({f"keywords_at_{r}": keywords_at_rejection(scores, y, labels, r) for r in REJECTIONS})
    return out


class SpeechEmbedding:
    """1-s clips (float, [-1, 1]) -> (N, 9, 96) embeddings, through the two ONNX networks of openWakeWord 0.4.0."""

    def __init__(self, sample_rate: int):
        import onnxruntime as ort

        spec = importlib.util.find_spec("openwakeword")  # its files only: importing it would need its other deps
        if spec is None or spec.submodule_search_locations is None:
            raise SystemExit("no openwakeword here: .venv/bin/pip install --no-deps openwakeword==0.4.0")
        models = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
        if not (models / "embedding_model.onnx").exists():
            raise SystemExit(f"{models}: no embedding_model.onnx (only openwakeword 0.4.0's wheel ships it)")
        if sample_rate != 16000:
            raise SystemExit(f"the embedding network takes 16 kHz audio, the run has {sample_rate} Hz")
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.mel = ort.InferenceSession(str(models / "melspectrogram.onnx"), options, providers=["CPUExecutionProvider"])
        self.net = ort.InferenceSession(str(models / "embedding_model.onnx"), options, providers=["CPUExecutionProvider"])
        self.pad = int(PAD_S * sample_rate)

    def __call__(self, audio: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        for start in tqdm(range(0, len(audio), batch), desc="embed", unit="batch", leave=False):
            # int16-scaled samples and (log-mel / 10 + 2): the scale openWakeWord feeds the network with
            x = np.pad(audio[start:start + batch] * 32767.0, ((0, 0), (self.pad, self.pad))).astype(np.float32)
            mel = self.mel.run(None, {"input": x})[0].reshape(len(x), -1, 32) / 10.0 + 2.0
            starts = range(0, mel.shape[1] - WINDOW_FRAMES + 1, WINDOW_STEP)
            windows = np.stack([mel[:, t:t + WINDOW_FRAMES] for t in starts], 1)
            n, w = windows.shape[:2]
            emb = self.net.run(None, {"input_1": windows.reshape(n * w, WINDOW_FRAMES, 32, 1).astype(np.float32)})[0]
            out.append(emb.reshape(n, w, EMBEDDING).astype(np.float32))
        return np.concatenate(out)


def split_audio(cfg, spec: FeatureSpec, split: str, *, augmented: bool) -> tuple[np.ndarray, np.ndarray]:
    """The split's clips as the features stage reads them; with ``augmented``, each clean clip and one augmented
    copy (the run's waveform recipe, seeded per clip as the stage seeds them)."""
    rows, index = read_rows(cfg.prepared_dir, split), {label: i for i, label in enumerate(cfg.labels)}
    options = augment_options(cfg) if augmented else None
    clips = []
    for i, row in enumerate(tqdm(rows, desc=f"load {split}", unit="clip", leave=False)):
        clip = load_clip(row, spec)
        clips.append(clip)
        if augmented:
            rng = np.random.default_rng([cfg.run.seed, 0, 1, i])
            clips.append(augment_clip(clip, rng=rng, spec=spec, is_silence=row["label"] == SILENCE_LABEL, **options))
    y = np.array([index[row["label"]] for row in rows], np.int32)
    return np.stack(clips), np.repeat(y, 2) if augmented else y


def set_audio(data: Path, spec: FeatureSpec, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A scoring set (``./run score``'s DATA) as its clips' loudest 1-s windows, as ``./run score`` reads them."""
    rows, _ = collect(data)
    mapping = label_mapping([label for _, label in rows], labels)
    index = {label: i for i, label in enumerate(labels)}
    clips, y, unreadable = [], [], 0
    for path, label in tqdm(rows, desc=f"load {data.name}", unit="clip", leave=False):
        try:
            audio = load_audio(path, sample_rate=spec.sample_rate)
        except AudioError as e:  # skipped and counted, as ./run score does
            tqdm.write(f"error: {e}", file=sys.stderr)
            unreadable += 1
            continue
        clips.append(loudest_window(audio, spec.clip_samples, spec.hop_length))
        y.append(index[mapping[label]])
    if unreadable:
        print(f"{data}: {unreadable} of {len(rows)} files could not be read", file=sys.stderr)
    return np.stack(clips), np.array(y, np.int32)


def train_head(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, classes: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(x.shape[1:])
    # each of the 96 numbers to zero mean and unit variance over the training rows: raw, they sit between -31 and +46
    # with spreads of 6-11, which saturates the GRU's gates (a head on them found up to 14 points fewer keywords)
    normalize = keras.layers.Normalization(axis=-1)
    normalize.adapt(x.reshape(-1, x.shape[-1]))
    hidden = keras.layers.GRU(96)(keras.layers.Dropout(0.2)(normalize(inputs)))
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.Dropout(0.3)(hidden))
    head = keras.Model(inputs, outputs)
    head.compile(keras.optimizers.AdamW(1e-3, weight_decay=1e-3),
                 keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
    head.fit(x, keras.utils.to_categorical(y, classes), batch_size=128, epochs=40, verbose=2,
             validation_data=(x_val, keras.utils.to_categorical(y_val, classes)),
             callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=6, restore_best_weights=True)])
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run's export folder (its 1-s model is read beside)")
    ap.add_argument("--config", default="configs/demo.yaml", help="the run's config (and --set) for its data")
    ap.add_argument("--set", action="append", default=[], help="key=value, as given to the run")
    ap.add_argument("--out", required=True, help="a folder for the embeddings and results.json")
    ap.add_argument("--seed", type=int, default=0, help="the head's seed")
    ap.add_argument("data", nargs="*", help="scoring sets: WORD/ folders or path,label CSVs")
    args = ap.parse_args()

    cfg = load_config(args.config, args.set)
    spec, labels = FeatureSpec.from_config(cfg), cfg.labels
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embed = SpeechEmbedding(spec.sample_rate)
    own = Predictor(Path(args.run) / "model_float32.tflite")
    if own.labels != labels:
        raise SystemExit(f"{args.run}: its labels differ from the config's: give the run's --config and --set")

    def embedded(name: str, source: str, load, keep_audio: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        # the embeddings take most of the time: kept for reruns of the head, under a name that says whose they are
        cached = out / f"{name}_{hashlib.sha1(source.encode()).hexdigest()[:8]}.npz"
        if cached.exists():
            saved = np.load(cached)
            return saved["audio"] if keep_audio else None, saved["embedding"], saved["y"]
        audio, y = load()
        emb = embed(audio)
        partial = cached.with_suffix(".partial.npz")
        np.savez(partial, audio=audio if keep_audio else np.zeros(0), embedding=emb, y=y)
        partial.rename(cached)
        return audio, emb, y

    data_key = f"{cfg.prepared_dir.resolve()} {cfg.section_hash('augment')}"
    _, x_train, y_train = embedded("train", data_key, lambda: split_audio(cfg, spec, "train", augmented=True),
                                   keep_audio=False)
    _, x_val, y_val = embedded("validation", data_key, lambda: split_audio(cfg, spec, "validation", augmented=False),
                               keep_audio=False)
    head = train_head(x_train, y_train, x_val, y_val, len(labels), args.seed)

    sets = {"own test": (data_key, lambda: split_audio(cfg, spec, "test", augmented=False))}
    sets.update({Path(d).stem: (str(Path(d).resolve()), lambda d=d: set_audio(Path(d), spec, labels)) for d in args.data})
    results = {}
    for name, (source, load) in sets.items():
        audio, emb, y = embedded(name.replace(" ", "_"), source, load)
        head_scores = head.predict(emb, batch_size=512, verbose=0)
        own_scores = np.stack([own(clip.astype(np.float32)) for clip in audio])
        results[name] = {"log-mel model (the run's)": reading(own_scores, y, labels),
                         "embedding head": reading(head_scores, y, labels),
                         "mean of the two": reading((own_scores + head_scores) / 2, y, labels)}
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))  # a cut-off run leaves no half file

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    print("| set | model | keywords | new words rejected | keywords at " + " / ".join(f"{r:.1%}" for r in REJECTIONS)
          + " rejected |\n|---|---|---|---|---|")
    for name, models in results.items():
        for model, r in models.items():
            at = " / ".join(pct(r[f"keywords_at_{x}"]) for x in REJECTIONS)
            print(f"| {name} | {model} | {pct(r['keywords'])} | {pct(r['rejected'])} | {at} |")
    print(f"-> {out / 'results.json'}")


if __name__ == "__main__":
    main()
