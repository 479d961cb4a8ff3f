"""The continuous design of always-on detection: one GRU state that is never reset.

The 1-s model learns from clips that start from silence, so the staggered detector (pipeline/edge/
detection.py) restarts five states every second. This module trains the same network to listen without
resets (docs/always_on.md has the comparison that chose it):

1. Training sequences (``train.continuous_seconds``, 2.5 s): a prepared training row (keyword, unknown
   word, word fragment, running-speech window or silence) placed so that the word ends at a random point;
   in CONTEXT of them running speech of the training speakers surrounds it (0-0.6 s clear each side: a
   command said alone, up to one said in a phrase); in PHRASE of the keyword rows, a whole carrier phrase
   of a training speaker (synth ``_phrases_/``) in place of the clip, the command word inside running
   speech as people say it; with ``train.continuous_augment``, the word and the speech around it each through
   the 1-s clips' waveform augmentations (their own draws, so the layout stays); background noise at -5 to 30
   dB SNR; with ``train.continuous_mel_augment``, the log-mel augmentations of the 1-s training on each chain,
   drawn anew each epoch. Frame targets: nothing (weight 0) while the keyword is said and for ``train.continuous_confirm_s``
   after it; then, if that time was clear of speech, the keyword for LABEL_S (weight
   ``train.continuous_keyword_weight``), and if speech went on, ``_unknown_``; ``_unknown_`` (``_silence_`` for
   silence rows) everywhere else.
   With ``train.continuous_chain``, that many sequences run one after another as one, and a steady noise
   floor can run under the whole chain (``chain_sequences``): a floor heard for longer than one 2.5-s
   sequence moves the state where training never took it, and the commands said over it are lost.
2. The model: the 1-s architecture with every GRU returning sequences and the dense head applied to every
   frame (``sequence_model``), started from the trained 1-s weights. The layers and weights are the 1-s
   model's, so the streaming step of the export stage runs it unchanged: one hop in, scores out.
3. Hard negatives (``train.continuous_hard_negative_epochs``): the training speakers' running speech goes
   through the trained model's never-reset state; sequences of that speech around each place where a keyword
   fires become ``_unknown_`` examples, and training goes on over old and new sequences
   (``train.continuous_hard_negative_rounds`` times, each mining with the model the round before left).
   With ``train.continuous_candidates`` the training (its epochs, then step 3) runs that many times from the
   1-s weights, each candidate on its own draw, and the train stage keeps the one that verify's threshold
   pick rates best on the validation recordings: retrainings from one set of 1-s weights spread far.
4. Scoring: the whole recording through one state, in chunks (``continuous_scores``); the detector reads
   a decision every stride of frames.
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import time

import numpy as np

from pipeline.audio import AudioError, fit_length, load_audio
from pipeline.augment import AugmentParams, add_noise, augment, noise_segment
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL
from pipeline.dataset import SPEECH_DIR, load_clip, noise_audio, read_rows, training_phrases, training_speech
from pipeline.errors import StageError
from pipeline.feature_spec import FeatureSpec, logmel
from pipeline.long_audio import word_span

CONTEXT = 0.7  # share of word sequences with running speech around the word
PHRASE = 0.3  # share of keyword sequences that are a carrier phrase instead (datasets with _phrases_/)
GAP_S = (0.0, 0.6)  # clear time between the word and the speech around it
LABEL_S = 0.6  # a keyword's label is due for this long, from confirm_s after its end (0.4 left a peak that three
# 200-ms decisions read only partly; 0.8 gave the same validation recall, 1.2 drowned it in false alarms: docs/always_on.md)
WORD_END = (0.35, 0.92)  # where in the sequence the word ends (share of its length)
SNR_DB = (-5.0, 30.0)  # from 5 dB: 2.7-3.3 points more commands said alone found on validation at the same false
# alarms, in three pairs of trainings on two trained bases; -10 dB added nothing (docs/always_on.md)
NOISE_PROBABILITY = 0.8
STREAMS = 16  # the training speech is scored as this many long streams side by side (one batch row each)
MINE_SPACING_S = 1.0  # one mined place per second at most: a false fire lasts several frames
HARD_NEGATIVE_LR_SCALE = 0.3  # the further epochs start from this share of the learning rate: they refine
FLOOR_DB = (20.0, 60.0)  # a chained sequence's steady noise floor, under its speech level (train.continuous_floor_probability)
SPEECH_LEVEL_PERCENTILE = 95  # a chain's speech level: this percentile of its frames' power


# ---- training sequences (worker processes) ------------------------------------------------------
_JOB: dict = {}


def _init(job: dict) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    _JOB.update(job)


def _speech_piece(rng: np.random.Generator, length: int, sr: int) -> np.ndarray:
    """``length`` samples of a random training speaker's running speech, from a random point. Only the piece
    is read: reading whole utterances was 80% of the time it takes to make a sequence."""
    import soundfile as sf

    files, sizes = _JOB["speech_files"], _JOB.setdefault("speech_sizes", {})
    path = files[int(rng.integers(len(files)))]
    if path not in sizes:
        info = sf.info(path)
        sizes[path] = info.frames if info.samplerate == sr else len(load_audio(path, sample_rate=sr))
    if sizes[path] <= length:
        audio = load_audio(path, sample_rate=sr)
        return np.pad(audio, (0, length - len(audio)))
    start = int(rng.integers(sizes[path] - length))
    return fit_length(load_audio(path, sample_rate=sr, start=start, frames=length), length)


def voice_params(cfg) -> AugmentParams | None:
    """The 1-s clips' waveform augmentations for the training sequences' speech (``train.continuous_augment``),
    without their noise (a sequence gets its own, sequence_features), or None when off."""
    if not cfg.train.continuous_augment:
        return None
    return dataclasses.replace(AugmentParams.from_config(cfg.augment), noise_probability=0.0)


def _voiced(audio: np.ndarray, rng: np.random.Generator | None, params: AugmentParams | None, sr: int) -> np.ndarray:
    """``audio`` through the augmentations of ``params`` (voice_params) on its own draw; as it is when None."""
    return audio if params is None else augment(audio, rng=rng, params=params, noise=[], sample_rate=sr)


def make_sequence(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(features [T, M] float16, frame targets [T] int, frame weights [T] float) of one sequence, or None
    for a row whose audio can't be read or holds no word."""
    job = _JOB
    spec: FeatureSpec = job["spec"]
    sr, length = spec.sample_rate, job["samples"]
    rng = np.random.default_rng([*job["seed"], index])
    row = job["rows"][int(rng.integers(len(job["rows"])))]
    labels = job["labels"]
    phrase = None
    if row["label"] not in (SILENCE_LABEL, UNKNOWN_LABEL) and job["phrases"] and rng.random() < PHRASE:
        phrase = job["phrases"][int(rng.integers(len(job["phrases"])))]
    try:
        clip = load_audio(phrase["path"], sample_rate=sr) if phrase else load_clip(row, spec)
    except AudioError:
        return None
    voice = job.get("voice")
    voice_rng = np.random.default_rng([*job["seed"], index, 1]) if voice else None  # its own draws: the layout stays
    if not phrase:  # a phrase's word timings would not survive a speed change: phrases stay as said
        clip = _voiced(clip, voice_rng, voice, sr)
    frames = 1 + length // spec.hop_length
    targets = np.full(frames, labels.index(UNKNOWN_LABEL), np.int32)
    weights = np.ones(frames, np.float32)
    canvas = np.zeros(length, np.float32)
    if row["label"] == SILENCE_LABEL:
        targets[:] = labels.index(SILENCE_LABEL)
    elif SPEECH_DIR in row["path"]:  # a running-speech row: running speech all through
        canvas = _voiced(_speech_piece(rng, length, sr), voice_rng, voice, sr)
    else:
        # the piece (the word, or the whole phrase) goes where the word's end, piece[word_end], lands at ``end``
        if phrase:
            piece, word_start, word_end = clip, phrase["start"], phrase["end"]
        else:
            span = word_span(clip, sr)
            if span is None:
                return None
            piece = clip[span[0]:span[1]]
            word_start, word_end = 0, len(piece)
        end = int(rng.uniform(*WORD_END) * length)
        at = end - word_end  # canvas index of piece[0]
        start = max(0, at + word_start)  # where the word itself starts on the canvas
        lo, hi = max(0, at), min(length, at + len(piece))
        if job["speech_files"] and rng.random() < CONTEXT:
            canvas = _voiced(_speech_piece(rng, length, sr), voice_rng, voice, sr)
            canvas *= float(np.abs(piece).max()) / max(float(np.abs(canvas).max()), 1e-6) * rng.uniform(0.5, 1.2)
            before, after = (int(rng.uniform(*GAP_S) * sr) for _ in range(2))
            canvas[max(0, lo - before):min(length, hi + after)] = 0.0
            clear_after = hi + after - end
        else:
            clear_after = length  # nothing follows the word but noise
        if phrase:  # the phrase's next word, if it has one: above 2% of the phrase's peak 50 ms on, as word_span
            grace = int(0.05 * sr)
            going_on = np.flatnonzero(np.abs(piece[word_end + grace:]) > 0.02 * float(np.abs(piece).max()))
            clear_after = min(clear_after, grace + int(going_on[0]) if going_on.size else length)
        canvas[lo:hi] = piece[lo - at:hi - at]
        label = phrase["word"] if phrase else row["label"]
        if label in labels and label != UNKNOWN_LABEL:
            # a keyword: unknowable while said and for confirm_s after; then due for LABEL_S if that time was
            # clear of speech (a command said alone), and _unknown_ if speech went on (a word inside a sentence)
            confirm_s = job.get("confirm_s", 0.0)
            first, last = start // spec.hop_length, end // spec.hop_length
            confirm = int(confirm_s * sr / spec.hop_length)
            weights[first:last + confirm] = 0.0
            if clear_after >= confirm_s * sr:
                due = min(frames, last + confirm + int(LABEL_S * sr / spec.hop_length))
                targets[last + confirm:due] = labels.index(label)
    return sequence_features(canvas, rng, job["noise"], spec, silence=row["label"] == SILENCE_LABEL), targets, weights


def sequence_features(canvas: np.ndarray, rng: np.random.Generator, noise: list[np.ndarray], spec: FeatureSpec, *,
                      silence: bool = False) -> np.ndarray:
    """Log-mel frames [T, M] float16 of a sequence's audio, with background noise in NOISE_PROBABILITY of them:
    at SNR_DB against the speech, or (``silence``: no speech to set an SNR against) a random level, as the 1-s
    clips get it."""
    length = len(canvas)
    if noise and rng.random() < NOISE_PROBABILITY:
        if silence:
            piece = noise_segment(noise[int(rng.integers(len(noise)))], length, rng)
            canvas = canvas + piece.astype(np.float32) * rng.uniform(0, 1.0) * 0.3
        else:
            canvas = add_noise(canvas, rng=rng, noise=noise, snr_db=rng.uniform(*SNR_DB), sample_rate=spec.sample_rate)
    canvas = np.clip(canvas, -1.0, 1.0).astype(np.float32)
    return logmel(canvas, dataclasses.replace(spec, clip_samples=length)).astype(np.float16)


def noise_clips(cfg, sample_rate: int) -> list[np.ndarray]:
    """The dataset's background-noise files, at ``sample_rate``."""
    return [noise_audio(str(p), sample_rate) for p in sorted((cfg.dataset_dir / "_background_noise_").glob("*.wav"))]


def build_sequences(cfg, spec: FeatureSpec, labels: list[str], split: str, count: int, *, seconds: float, seed: int,
                    workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` sequences around rows of ``split`` (make_sequence, in worker processes): features [N, T, M],
    frame targets [N, T], frame weights [N, T]. The running speech around words is always the training
    speakers' (none for a dataset without ``_speech_/``: words then sit in noise alone)."""
    from tqdm import tqdm

    job = {"spec": spec, "samples": int(seconds * spec.sample_rate), "rows": read_rows(cfg.prepared_dir, split),
           "labels": labels, "seed": [seed, ("train", "validation", "test").index(split)],
           "speech_files": training_speech(cfg), "phrases": training_phrases(cfg),
           "noise": noise_clips(cfg, spec.sample_rate), "confirm_s": cfg.train.continuous_confirm_s,
           "voice": voice_params(cfg) if split == "train" else None}  # validation stays clean, as the 1-s one
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(job,)) as pool:
        out = [r for r in tqdm(pool.imap(make_sequence, range(count), chunksize=32), total=count,
                               desc=f"continuous sequences ({split})", unit="seq", disable=None) if r is not None]
    if not out:
        raise StageError(f"train: no continuous-design sequences could be made from {cfg.prepared_dir / (split + '.csv')} "
                         "(no readable clip with a word in it)")
    x, y, w = (np.stack(parts) for parts in zip(*out))
    return x, y, w


# ---- the model ----------------------------------------------------------------------------------

def sequence_model(one_second, *, stateful_batch: int | None = None):
    """The 1-s model with every GRU returning sequences (per-frame scores), weights copied by layer name.
    With ``stateful_batch``: an inference model whose GRU states carry over from call to call."""
    import keras

    shape = dict(batch_shape=(stateful_batch, None, one_second.input_shape[-1])) if stateful_batch else \
        dict(shape=(None, one_second.input_shape[-1]))
    inputs = keras.Input(name="features", **shape)
    x = inputs
    for layer in one_second.layers[1:]:
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.GRU):
            cfg.update(return_sequences=True, stateful=bool(stateful_batch))
        x = layer.__class__.from_config(cfg)(x)
    model = keras.Model(inputs, x, name="gru_kws_continuous")
    for layer in one_second.layers[1:]:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def keyword_weighted(weights: np.ndarray, targets: np.ndarray, labels: list[str], factor: float) -> np.ndarray:
    """Frame weights with the frames where a keyword is due multiplied by ``factor``."""
    keyword = ~np.isin(targets, [labels.index(UNKNOWN_LABEL), labels.index(SILENCE_LABEL)])
    return weights * np.where(keyword, np.float32(factor), np.float32(1.0))


def training_sequences(cfg, spec: FeatureSpec, labels: list[str], *, workers: int | None = None) -> tuple[tuple, tuple]:
    """The sequences ``train`` learns and validates on: ((features, targets, weights) of the training split,
    the same of the validation split). They need no model, so the train stage makes them beside the 1-s
    training (pipeline/side_work.py)."""
    t = cfg.train
    workers = workers or multiprocessing.cpu_count()
    return (build_sequences(cfg, spec, labels, "train", t.continuous_sequences, seconds=t.continuous_seconds,
                            seed=cfg.run.seed, workers=workers),
            build_sequences(cfg, spec, labels, "validation", max(64, t.continuous_sequences // 10),
                            seconds=t.continuous_seconds, seed=cfg.run.seed, workers=workers))


def train(cfg, one_second, spec: FeatureSpec, labels: list[str], *, workers: int | None = None,
          built: tuple[tuple, tuple] | None = None, tower: int = 0, judge=None):
    """The continuous model: ``train.continuous_sequences`` training sequences, ``train.continuous_epochs``
    epochs from the 1-s weights; then, with ``train.continuous_hard_negative_epochs``, the places where it
    fires on the training speakers' running speech join as ``_unknown_`` sequences and training goes on.
    With ``train.continuous_candidates`` > 1 all of that runs that many times from the 1-s weights, each
    candidate on its own draw (chaining, speech mined, the order of its batches), and ``judge(model) ->
    (score, report)`` keeps the best. ``built``: the sequences already made (``training_sequences``); ``tower``
    (of ``model.towers``) draws its own chaining and mined sequences, on the same training sequences.
    Returns (model, report)."""
    t = cfg.train
    t0 = time.time()
    if built is None:
        built = training_sequences(cfg, spec, labels, workers=workers)
    (x, y, w), (vx, vy, vw) = built
    built_s = time.time() - t0
    factor = t.continuous_keyword_weight  # the keyword frames' loss weight (the validation loss is weighed alike)
    w, vw = keyword_weighted(w, y, labels, factor), keyword_weighted(vw, vy, labels, factor)
    floors = noise_floor_mels(cfg, spec, seconds=t.continuous_chain * t.continuous_seconds + 1) \
        if t.continuous_floor_probability else []
    chain = functools.partial(chain_sequences, pieces=t.continuous_chain, floor_probability=t.continuous_floor_probability,
                              floors=floors)
    stream = [tower] if tower else []  # tower 0 draws as a single model always did
    rng = np.random.default_rng([cfg.run.seed, 4, *stream])
    batch = max(8, t.continuous_batch_size // t.continuous_chain)  # as many steps an epoch as unchained
    validation_count = len(vx)
    vx, vy, vw = chain(vx, vy, vw, rng=rng)  # one validation set for every candidate
    validation = (vx.astype(np.float32), vy, vw)
    about = {"sequences": int(len(x)), "validation_sequences": validation_count, "seconds_each": t.continuous_seconds,
             "chain": t.continuous_chain, "floor_probability": t.continuous_floor_probability,
             "epochs": t.continuous_epochs, "keyword_weight": factor, "build_s": round(built_s, 1)}
    candidates = []  # (score, model, report) of each
    for candidate in range(t.continuous_candidates):
        draw = stream + [1000 + candidate] if candidate else stream  # the first candidate draws as one model always did
        if candidate:
            print(f"train: continuous design, candidate {candidate + 1} of {t.continuous_candidates}: trained again from "
                  "the 1-s weights, on its own draw", flush=True)
        chain_rng = np.random.default_rng([cfg.run.seed, 4, *draw]) if candidate else rng
        model, report = train_one(cfg, one_second, spec, labels, (x, y, w), validation, batch=batch,
                                  chained=functools.partial(chain, rng=chain_rng), mine_seed=[cfg.run.seed, 3, *draw])
        report = {**about, **report}
        if t.continuous_candidates == 1:
            return model, report
        score, report["judged"] = judge(model)
        print(f"train: continuous design, candidate {candidate + 1}: {report['judged']['summary']}", flush=True)
        candidates.append((score, model, report))
    chosen = max(range(len(candidates)), key=lambda k: candidates[k][0])  # the first of equals
    print(f"train: continuous design, candidate {chosen + 1} of {len(candidates)} kept", flush=True)
    _, model, report = candidates[chosen]
    return model, {**report, "candidates": [report for _, _, report in candidates], "chosen_candidate": chosen}


def train_one(cfg, one_second, spec: FeatureSpec, labels: list[str], xyw: tuple, validation: tuple, *, batch: int,
              chained, mine_seed: list) -> tuple:
    """One continuous model from the 1-s weights: its epochs over ``xyw`` (``chained`` chains them), then its
    hard negatives (``tune_on_hard_negatives``, the speech dealt by ``mine_seed``). Returns (model, report)."""
    t = cfg.train
    t0 = time.time()
    model = sequence_model(one_second)
    history = _fit(model, *chained(*xyw), validation, learning_rate=t.continuous_learning_rate,
                   epochs=t.continuous_epochs, batch=batch, label_smoothing=t.continuous_label_smoothing,
                   augment=mel_augment(cfg))
    report = {"train_s": round(time.time() - t0, 1), "loss": [round(float(v), 4) for v in history["loss"]],
              "frame_accuracy": [round(float(v), 4) for v in history["accuracy"]],
              "val_frame_accuracy": [round(float(v), 4) for v in history["val_accuracy"]]}
    speech = training_speech(cfg)
    if t.continuous_hard_negative_epochs and speech:
        t1 = time.time()
        report["hard_negatives"] = tune_on_hard_negatives(cfg, model, spec, labels, speech, xyw, validation,
                                                          batch=batch, seed=mine_seed, chained=chained)
        report["hard_negatives"]["seconds"] = round(time.time() - t1, 1)
    return model, report


def tune_on_hard_negatives(cfg, model, spec: FeatureSpec, labels: list[str], speech: list[str], xyw: tuple,
                           validation: tuple, *, batch: int, seed: list, chained) -> dict:
    """Step 3 of the module docstring, in place on ``model``: ``train.continuous_hard_negative_rounds`` times,
    mine the places where it fires on the training speakers' running speech (dealt into streams by
    ``seed``), add ``_unknown_`` sequences around them to ``xyw`` and train on, ``chained`` as in ``train``.
    Returns the report."""
    t = cfg.train
    x, y, w = xyw
    streams = speech_streams(speech, spec.sample_rate, seed=seed)
    hours = sum(len(s) for s in streams) / spec.sample_rate / 3600
    places = []
    for round_ in range(t.continuous_hard_negative_rounds):
        # each round mines the same speech with the model the last round left: where it still fires
        spots = false_fires(model, streams, spec, labels, threshold=t.continuous_hard_negative_threshold)
        mx, my, mw = negative_sequences(cfg, spec, labels, streams, spots, copies=t.continuous_hard_negative_copies,
                                        seed=seed + [round_] if round_ else seed)
        x, y, w = np.concatenate([x, mx]), np.concatenate([y, my]), np.concatenate([w, mw])
        places.append(len(spots))
        print(f"train: continuous design, {len(spots)} places in {hours:.1f} h of training speakers' speech where a "
              f"keyword scores >= {t.continuous_hard_negative_threshold:g}: {len(mx)} _unknown_ sequences around them, "
              f"{t.continuous_hard_negative_epochs} more epoch(s) over all", flush=True)
        history = _fit(model, *chained(x, y, w), validation,
                       learning_rate=t.continuous_learning_rate * HARD_NEGATIVE_LR_SCALE,
                       epochs=t.continuous_hard_negative_epochs, batch=batch,
                       label_smoothing=t.continuous_label_smoothing, augment=mel_augment(cfg))
    return {"speech_hours": round(hours, 2), "threshold": t.continuous_hard_negative_threshold, "places": sum(places),
            "places_each_round": places, "sequences": int(len(x) - len(xyw[0])),
            "epochs": t.continuous_hard_negative_epochs,
            "frame_accuracy": [round(float(v), 4) for v in history["accuracy"]],
            "val_frame_accuracy": [round(float(v), 4) for v in history["val_accuracy"]]}


def noise_floor_mels(cfg, spec: FeatureSpec, *, seconds: float) -> list[np.ndarray]:
    """Log-mel frames [F, M] float32 of each background-noise file scaled to unit power and tiled to ``seconds``:
    the floors ``chain_sequences`` lays under a chain."""
    length = int(seconds * spec.sample_rate)
    floors = []
    for noise in noise_clips(cfg, spec.sample_rate):
        power = float(np.mean(noise.astype(np.float64) ** 2))
        if power > 0:
            audio = np.resize(noise / np.sqrt(power), length).astype(np.float32)
            floors.append(logmel(audio, dataclasses.replace(spec, clip_samples=length)).astype(np.float32))
    return floors


def chain_sequences(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, pieces: int, floor_probability: float,
                    floors: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pieces`` training sequences one after another as one, in a random order ([N // pieces, pieces * T, M]; the
    few left over are dropped), so one state hears ``pieces`` of them in a row. In ``floor_probability`` of the chains a steady noise
    floor runs under all of it: a random stretch of one of ``floors`` (noise_floor_mels) at FLOOR_DB under the
    chain's speech level (its frames' SPEECH_LEVEL_PERCENTILE power), added as power, as the mel powers of
    independent sounds add on average. With 1 piece and no floor: the arrays as they were."""
    if pieces == 1 and not (floor_probability and floors):
        return x, y, w
    count = len(x) // pieces * pieces
    if count == 0:
        raise StageError(f"train.continuous_chain {pieces} is more than the {len(x)} sequences there are to chain")
    order = rng.permutation(len(x))[:count]
    frames = pieces * x.shape[1]
    x = x[order].reshape(count // pieces, frames, x.shape[2])
    y, w = y[order].reshape(count // pieces, frames), w[order].reshape(count // pieces, frames)
    out = np.empty_like(x)
    for i, chain in enumerate(x):
        chain = chain.astype(np.float32)
        if floors and rng.random() < floor_probability:
            floor = floors[int(rng.integers(len(floors)))]
            start = int(rng.integers(len(floor) - frames + 1))
            floor = floor[start:start + frames]
            speech_db = np.percentile(_frame_db(chain), SPEECH_LEVEL_PERCENTILE)
            gain_db = speech_db - float(rng.uniform(*FLOOR_DB)) - 10 * np.log10(np.mean(10 ** (_frame_db(floor) / 10)))
            chain = 10 * np.log10(10 ** (chain / 10) + 10 ** ((floor + gain_db) / 10))
        out[i] = chain
    return out, y, w


def mel_augment(cfg):
    """The log-mel augmentations for the continuous epochs (``train.continuous_mel_augment``), or None."""
    from pipeline.mel_augment import MelAugment

    return MelAugment.from_config(cfg) if cfg.train.continuous_mel_augment else None


def _frame_db(frames: np.ndarray) -> np.ndarray:
    """Each log-mel frame's power in dB (its mel powers summed)."""
    return 10 * np.log10(np.sum(10 ** (frames.astype(np.float64) / 10), axis=1))


def _fit(model, x, y, w, validation, *, learning_rate: float, epochs: int, batch: int,
         label_smoothing: float = 0.0, augment=None) -> dict:
    """Frame-weighted training with a cosine-decayed Adam; the history's dict. ``label_smoothing`` > 0 trains
    on one-hot targets smoothed by it (Keras' sparse loss has no smoothing). ``augment``: a batch function on the
    dB log-mel (pipeline/mel_augment.py, ``train.continuous_mel_augment``), drawn anew every epoch."""
    import keras

    loss = "sparse_categorical_crossentropy"
    if label_smoothing:
        classes = model.output_shape[-1]
        y = one_hot_frames(y, classes)
        validation = (validation[0], one_hot_frames(validation[1], classes), *validation[2:])
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=epochs * (len(x) // batch + 1), alpha=0.05)),
        loss=loss, weighted_metrics=["accuracy"],
        jit_compile=False)  # XLA on CPU: 2.5x slower over 250-frame sequences (51 against 21 s an epoch, demo)
    if augment is None:
        return model.fit(x.astype(np.float32), y, sample_weight=w, epochs=epochs, batch_size=batch,
                         validation_data=validation, verbose=2).history
    import tensorflow as tf

    data = (tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y, w.astype(np.float32)))
            .shuffle(len(x), reshuffle_each_iteration=True).batch(batch)
            .map(lambda xb, yb, wb: (augment(xb), yb, wb)).prefetch(2))
    return model.fit(data, epochs=epochs, validation_data=validation, shuffle=False, verbose=2).history  # shuffled above


def one_hot_frames(targets: np.ndarray, classes: int) -> np.ndarray:
    """Per-frame class indices [N, F] -> one-hot float32 [N, F, classes]."""
    return np.eye(classes, dtype=np.float32)[targets]


# ---- hard negatives from running speech -----------------------------------------------------------

def speech_streams(files: list[str], sample_rate: int, *, seed, count: int = STREAMS) -> list[np.ndarray]:
    """The running-speech files in a random order, dealt into ``count`` long streams with 0.2-0.8 s of
    silence between utterances (one batch row each when scored). A file that can't be read is skipped."""
    rng = np.random.default_rng(seed)
    streams: list[list[np.ndarray]] = [[] for _ in range(count)]
    for i, k in enumerate(rng.permutation(len(files))):
        try:
            audio = load_audio(files[k], sample_rate=sample_rate)
        except AudioError:
            continue
        streams[i % count] += [audio, np.zeros(int(rng.uniform(0.2, 0.8) * sample_rate), np.float32)]
    return [np.concatenate(s) for s in streams if s]


def false_fires(model, streams: list[np.ndarray], spec: FeatureSpec, labels: list[str], *,
                threshold: float) -> list[tuple[int, int]]:
    """(stream, frame) of each place where the continuous model fires (``fire_places``) on speech that holds no
    command word. The streams go through one never-reset state each, as the detector hears speech."""
    if not streams:  # no readable speech
        return []
    stateful = sequence_model(model, stateful_batch=len(streams))
    spacing = int(MINE_SPACING_S * spec.sample_rate / spec.hop_length)
    return [(stream, frame) for stream, frame_scores in enumerate(continuous_scores(stateful, streams, spec))
            for frame in fire_places(frame_scores, labels, threshold=threshold, spacing=spacing)]


def fire_places(frame_scores: np.ndarray, labels: list[str], *, threshold: float, spacing: int) -> list[int]:
    """The frames where a keyword's score reaches ``threshold``: the first such frame, then none for
    ``spacing`` frames (a false fire spans several frames)."""
    keywords = [i for i, label in enumerate(labels) if label not in (UNKNOWN_LABEL, SILENCE_LABEL)]
    places, last = [], -spacing
    for frame in np.flatnonzero(frame_scores[:, keywords].max(axis=1) >= threshold):
        if frame - last >= spacing:
            places.append(int(frame))
            last = frame
    return places


def negative_sequences(cfg, spec: FeatureSpec, labels: list[str], streams: list[np.ndarray],
                       spots: list[tuple[int, int]], *, copies: int, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``copies`` training sequences around each mined place: the stream's speech with the place where a word's
    end would be (WORD_END), noise as in make_sequence, ``_unknown_`` at every frame."""
    length = int(cfg.train.continuous_seconds * spec.sample_rate)
    rng = np.random.default_rng([*seed, 1])
    noise = noise_clips(cfg, spec.sample_rate)
    voice = voice_params(cfg)
    voice_rng = np.random.default_rng([*seed, 2]) if voice else None  # its own draws, as in make_sequence
    frames = 1 + length // spec.hop_length
    feats = []
    for stream, frame in spots:
        audio = streams[stream]
        for _ in range(copies):
            start = frame * spec.hop_length - int(rng.uniform(*WORD_END) * length)
            canvas = np.zeros(length, np.float32)
            lo, hi = max(0, start), min(len(audio), start + length)
            canvas[lo - start:hi - start] = audio[lo:hi]
            feats.append(sequence_features(_voiced(canvas, voice_rng, voice, spec.sample_rate), rng, noise, spec))
    if not feats:
        return (np.zeros((0, frames, spec.n_mels), np.float16), np.zeros((0, frames), np.int32),
                np.zeros((0, frames), np.float32))
    return (np.stack(feats), np.full((len(feats), frames), labels.index(UNKNOWN_LABEL), np.int32),
            np.ones((len(feats), frames), np.float32))


# ---- scoring long audio -------------------------------------------------------------------------

def stream_logmel(audio: np.ndarray, spec: FeatureSpec, *, frames_per_chunk: int = 6000):
    """The log-mel frames of a long recording, chunk by chunk, equal to logmel() of the whole (librosa's
    centred framing). Each chunk is computed by logmel() itself on its audio plus a few hops either side,
    and the frames that the chunk's own zero padding touched are dropped."""
    edge_hops = -(-spec.n_fft // 2 // spec.hop_length)  # hops covering half a frame: 2 for 512/160
    edge = edge_hops * spec.hop_length
    padded = np.pad(np.asarray(audio, np.float32), (edge, edge))  # zeros beyond the ends, as centring adds
    total = 1 + len(audio) // spec.hop_length
    for first in range(0, total, frames_per_chunk):
        count = min(frames_per_chunk, total - first)
        piece = padded[first * spec.hop_length:first * spec.hop_length + (count - 1) * spec.hop_length + 2 * edge]
        feats = logmel(piece, dataclasses.replace(spec, clip_samples=len(piece)))
        yield feats[edge_hops:edge_hops + count]


def continuous_scores(model, recordings: list[np.ndarray], spec: FeatureSpec, *,
                      transform=None) -> list[np.ndarray]:
    """Per-frame scores [F, C] of each recording through its own GRU state, never reset (``model``: a
    ``sequence_model(..., stateful_batch=len(recordings))``). The recordings go through side by side, one
    batch row each, so an hour of each costs about what one does; a recording that ends first gets
    zero frames after its end, which only its discarded rows see. ``transform`` (log-mel frames -> frames of
    the same shape), if given, changes each chunk before the model hears it (scripts/warp_ensemble_probe.py)."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    chunked = [stream_logmel(audio, spec) for audio in recordings]
    out: list[list[np.ndarray]] = [[] for _ in recordings]
    while True:
        chunks = [next(frames, None) for frames in chunked]
        if all(chunk is None for chunk in chunks):
            return [np.concatenate(parts) for parts in out]
        batch = np.zeros((len(chunks), max(len(c) for c in chunks if c is not None), spec.n_mels), np.float32)
        for row, chunk in enumerate(chunks):
            if chunk is not None:
                batch[row, :len(chunk)] = chunk if transform is None else transform(chunk)
        scores = np.asarray(model.predict_on_batch(batch))
        for row, chunk in enumerate(chunks):
            if chunk is not None:
                out[row].append(scores[row, :len(chunk)])


def decisions(frame_scores: np.ndarray, *, stride_hops: int, delay: int, whole_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, their scores) read by the continuous detector: every ``stride_hops``-th frame, among
    the frames that ``whole_hops`` hops of streaming complete (the last ``delay - 1`` frames of a recording
    need audio after its end). Frame f's time is its centre, f * hop / sample rate."""
    last = whole_hops - delay  # the last frame the stream completes
    picks = np.arange(stride_hops - 1, min(len(frame_scores), last + 1), stride_hops)
    return picks, frame_scores[picks]
