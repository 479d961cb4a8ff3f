"""The always-on benchmark's recordings and the running-speech training data, on small inputs."""
import numpy as np

from pipeline.config import COMMAND_WORDS, load_config
from pipeline.long_audio import add_noise, plan, split_speakers
from pipeline.stages.features import add_context


def test_noise_is_added_at_the_drawn_snr():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    speech = (0.5 * np.sin(2 * np.pi * 300 * t) * (t % 1.0 < 0.6)).astype(np.float32)  # on 60% of the time
    noise = rng.standard_normal(len(speech)).astype(np.float32)
    mixed, block_snrs = add_noise(speech, noise, rng=np.random.default_rng(1), sample_rate=16000)
    active = np.abs(speech) > 0.01
    snr = 10 * np.log10(np.mean(speech[active] ** 2) / np.mean((mixed - speech) ** 2))
    assert len(block_snrs) == 1 and block_snrs[0] in (30.0, 20.0, 10.0) and abs(snr - block_snrs[0]) < 0.3, snr


def test_a_plan_spaces_command_words_between_stretches_of_speech():
    pieces = plan(minutes=10, sample_rate=16000, voices=["en+m1", "en-us+f2"], rng=np.random.default_rng(0))
    keywords = [p for p in pieces if p["kind"] in ("alone", "phrase")]
    assert 25 <= len(keywords) <= 70  # one every 10-20 s of speech
    assert {p["kind"] for p in keywords} == {"alone", "phrase"} and {p["label"] for p in keywords} <= set(COMMAND_WORDS)
    for p in pieces:
        if p["kind"] == "speech":
            assert not set(COMMAND_WORDS) & set(p["text"].replace(".", " ").replace(",", " ").lower().split())
        if p["kind"] == "phrase":
            assert p["text"].split().count(p["label"]) == 1


def test_validation_and_test_recordings_speak_words_no_training_sentence_says():
    """export.long_audio_words: held-out (the default) gives the validation recordings, which pick the threshold, and
    the test ones, which report, vocabularies of their own; base keeps the pipeline's words (earlier figures)."""
    from pipeline.long_audio import sentence_words
    from pipeline.sentences import CARRIERS, HELD_OUT_WORDS, TEMPLATES, TRAINING_WORDS, VALIDATION_WORDS, WORDS

    cfg = load_config(None, [])
    assert sentence_words(cfg, "validation") is VALIDATION_WORDS and sentence_words(cfg, "test") is HELD_OUT_WORDS
    base = load_config(None, ["export.long_audio_words=base"])
    assert sentence_words(base, "validation") is WORDS and sentence_words(base, "test") is WORDS
    assert base.long_audio_dir != cfg.long_audio_dir  # recordings made in one vocabulary never pass for the other's
    trained = {w.lower() for kind, words in TRAINING_WORDS.items() if kind != "det" for w in words}
    literal = {w.lower().strip(",") for t in TEMPLATES + CARRIERS for w in t.split() if "{" not in w}
    for split in ("validation", "test"):
        pieces = plan(minutes=5, sample_rate=16000, voices=["en+m1"], rng=np.random.default_rng(2),
                      words=sentence_words(cfg, split))
        said = {w.lower() for p in pieces if p["kind"] != "alone"
                for w in p["text"].replace(".", " ").replace(",", " ").split()}
        content = said - {w.lower() for w in WORDS["det"] + sentence_words(cfg, split)["det"]}
        assert len(content) > 50 and content & trained <= literal, content & trained  # only the templates' own words


def test_validation_and_test_voices_are_disjoint_held_out_speakers():
    cfg = load_config(None, [])
    variants = ["m1", "m2", "m3", "f1", "f2", "f3", "croak", "whisper", "klatt", "Alex", "Andy", "Annie"]
    val, test = split_speakers(cfg, "validation", variants), split_speakers(cfg, "test", variants)
    assert val and test and not set(val) & set(test)
    assert len(val) + len(test) < 0.4 * len(cfg.synth.voices) * len(variants)  # most voices are training voices


def test_context_keeps_the_word_and_adds_speech_around_it():
    rng = np.random.default_rng(0)
    word = np.zeros(16000, np.float32)
    word[6000:9000] = 0.5 * np.sin(np.arange(3000) / 5)
    speech = (0.3 * rng.standard_normal(48000)).astype(np.float32)
    out = add_context(word, speech, rng=rng, sample_rate=16000)
    np.testing.assert_array_equal(out[6100:8900], word[6100:8900])  # the word itself is untouched
    assert np.abs(out[:4000]).max() > 0.05 or np.abs(out[12000:]).max() > 0.05  # speech before or after
    assert np.abs(out).max() <= 1.0 and out.dtype == np.float32


def test_the_sweep_counts_what_the_detection_algorithm_fires_at_each_threshold():
    # pick_detections steps only the windows that reach the threshold; it must find exactly what step 4
    # (the Picker the streaming Detector runs) finds stepping through every window
    from pipeline.edge.detection import DetectionParams, Picker
    from pipeline.stages.verify import THRESHOLDS, match_events, sweep

    rng = np.random.default_rng(3)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    times = np.arange(3000) * 0.2
    raw = rng.dirichlet([0.3, 0.3, 0.2, 0.2], size=len(times))
    # and scores that stay high for seconds, as a word's do, so that the arming matters
    slow = np.stack([np.convolve(raw[:, c], np.ones(15) / 15, mode="same") for c in range(len(labels))], axis=1)
    events = [{"label": str(rng.choice(["yes", "no"])), "kind": str(rng.choice(["alone", "phrase"])),
               "start_s": float(s), "end_s": float(s) + 0.5} for s in np.sort(rng.uniform(0, 590, 40))]
    params = DetectionParams(refractory_s=1.0)
    for scores in (raw, slow):
        points = sweep(times, scores, events, labels, hours=600 / 3600, params=params)
        assert [p["threshold"] for p in points] == [float(t) for t in THRESHOLDS]
        for p in points[::3]:
            picker = Picker(labels, threshold=p["threshold"], refractory_s=1.0)
            every_window = [d for d in (picker(t, row) for t, row in zip(times, scores)) if d]
            hits, false_alarms, _ = match_events(every_window, events)
            assert (p["hits"], p["false_alarms"]) == (hits, false_alarms)
        assert points[0]["false_alarms"] > points[-1]["false_alarms"]  # the random scores fire at low thresholds


def test_a_keyword_fires_once_per_rise_above_the_threshold():
    # a word's score that stays above the threshold for 3 s (a word said alone, then a pause) is one
    # detection, not one per refractory period; after it falls below, the next rise fires again
    from pipeline.edge.detection import Picker

    labels = ["_silence_", "_unknown_", "yes", "no"]
    yes = [0.0, 0.1, 0.9, 0.0]
    low = [0.8, 0.1, 0.1, 0.0]
    rows = [low] * 4 + [yes] * 12 + [low] + [yes] * 2 + [[0.0, 0.1, 0.0, 0.9]] * 6
    picker = Picker(labels, threshold=0.5, refractory_s=1.0)
    fired = [(t, d.label) for t, row in zip(np.arange(len(rows)) * 0.25, rows) if (d := picker(t, np.array(row)))]
    # yes at 1.0 s once (not again at 2.0 and 3.0 s); yes again right after the dip at 4.0 s; then no, once
    # the refractory period of that detection has passed
    assert fired == [(1.0, "yes"), (4.25, "yes"), (5.25, "no")]


def test_the_continuous_design_sees_the_same_log_mel_frames_chunk_by_chunk():
    # verify scores an hour through one state in chunks (pipeline/continuous.py); its frames must be logmel's
    import dataclasses

    from pipeline.continuous import stream_logmel
    from pipeline.feature_spec import FeatureSpec, logmel

    spec = FeatureSpec()
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3 + 77)).astype(np.float32)
    whole = logmel(audio, dataclasses.replace(spec, clip_samples=len(audio)))
    chunked = np.concatenate(list(stream_logmel(audio, spec, frames_per_chunk=97)))
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-3)  # dB; float32 rounding differs by pass grouping only


def test_continuous_training_weighs_only_the_frames_where_a_keyword_is_due():
    from pipeline.continuous import keyword_weighted

    labels = ["_silence_", "_unknown_", "yes", "no"]
    targets = np.array([[1, 1, 2, 2, 1], [0, 0, 3, 1, 1]])
    weights = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 0]], np.float32)  # 0: the word is being said
    np.testing.assert_array_equal(keyword_weighted(weights, targets, labels, 2.5),
                                  [[1, 0, 2.5, 2.5, 1], [1, 1, 2.5, 1, 0]])


def test_continuous_training_loss_is_the_smoothed_frame_weighted_cross_entropy():
    """train.continuous_label_smoothing: the loss Keras reports is the documented one, per frame and weighted
    (sum of weight x cross-entropy against (1 - s) one-hot + s / classes, over all frames), on the
    validation sequences too; at 0 it is the plain cross-entropy."""
    import keras

    from pipeline.continuous import _fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 7, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(6, 7))
    w = rng.uniform(0, 2, size=(6, 7)).astype(np.float32)
    for smoothing in (0.0, 0.2):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(None, 3))
        model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(inputs))
        history = _fit(model, x, y, w, (x, y, w), learning_rate=1e-2, epochs=1, batch=6, label_smoothing=smoothing)
        p = model.predict(x, verbose=0)
        target = np.eye(4)[y] * (1 - smoothing) + smoothing / 4
        expected = np.sum(w * -np.sum(target * np.log(p), axis=-1)) / w.size
        assert abs(history["val_loss"][0] - expected) < 1e-5 * max(1.0, expected), (smoothing, history, expected)
        accuracy = np.sum(w * (p.argmax(-1) == y)) / np.sum(w)
        assert abs(history["val_accuracy"][0] - accuracy) < 1e-5


def test_continuous_training_learns_from_the_augmented_batches_and_validates_on_clean_ones():
    """train.continuous_mel_augment: the epochs see each batch as ``augment`` leaves it. An augment that erases the
    features leaves a Dense layer's kernel without a gradient (its bias alone learns), and the validation loss is
    still the one of the clean sequences."""
    import keras

    from pipeline.config import load_config
    from pipeline.continuous import _fit, mel_augment
    from pipeline.mel_augment import MelAugment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 7, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(8, 7))
    w = np.ones((8, 7), np.float32)
    for erase in (False, True):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(None, 3))
        dense = keras.layers.Dense(4, activation="softmax")
        model = keras.Model(inputs, dense(inputs))
        kernel, bias = (v.copy() for v in dense.get_weights())
        history = _fit(model, x, y, w, (x, y, w), learning_rate=1e-2, epochs=2, batch=4,
                       augment=(lambda batch: batch * 0.0) if erase else None)
        assert np.allclose(dense.get_weights()[0], kernel) == erase
        assert not np.allclose(dense.get_weights()[1], bias)
        p = model.predict(x, verbose=0)
        expected = np.mean(-np.log(np.take_along_axis(p, y[..., None], axis=-1)))
        assert abs(history["val_loss"][-1] - expected) < 1e-5 * max(1.0, expected)

    assert mel_augment(load_config(None, ["augment.mel_eq_probability=0.5"])) is None  # the key is off by default
    assert isinstance(mel_augment(load_config(None, ["augment.mel_eq_probability=0.5",
                                                    "train.continuous_mel_augment=true"])), MelAugment)


def test_chained_sequences_keep_whole_pieces_and_a_floor_fills_only_the_quiet_frames():
    from pipeline.continuous import FLOOR_DB, _frame_db, chain_sequences

    rng = np.random.default_rng(0)
    count, frames, mels = 7, 5, 4
    x = np.full((count, frames, mels), -100.0, np.float16)  # digital silence ...
    x[:, 2] = np.arange(count)[:, None] * 0.1 - 20  # ... around one loud frame that tells the pieces apart
    y = np.repeat(np.arange(count)[:, None], frames, axis=1)
    w = np.ones((count, frames), np.float32)
    assert chain_sequences(x, y, w, pieces=1, floor_probability=0.0, floors=[], rng=rng)[0] is x  # off: untouched

    cx, cy, cw = chain_sequences(x, y, w, pieces=3, floor_probability=0.0, floors=[], rng=rng)
    assert cx.shape == (2, 3 * frames, mels) and cy.shape == cw.shape == (2, 3 * frames)
    pieces = cy[:, ::frames].ravel()
    assert len(set(pieces)) == 6  # 6 different pieces, the 7th dropped
    for chain_x, chain_y in zip(cx, cy):  # each piece whole, its features with its own targets
        for at in range(0, 3 * frames, frames):
            np.testing.assert_array_equal(chain_x[at:at + frames], x[chain_y[at]])
            assert (chain_y[at:at + frames] == chain_y[at]).all()

    floor = np.full((40, mels), -30.0, np.float32)  # a steady floor, much longer than a chain
    fx, fy, _ = chain_sequences(x, y, w, pieces=3, floor_probability=1.0, floors=[floor], rng=rng)
    for chain in fx:
        quiet_db = _frame_db(np.delete(chain, np.s_[2::frames], axis=0))
        speech_db = np.percentile(_frame_db(chain), 95)
        assert np.ptp(quiet_db) < 0.1  # steady: the same level all through the chain
        assert FLOOR_DB[0] - 0.5 <= speech_db - quiet_db[0] <= FLOOR_DB[1] + 0.5  # at FLOOR_DB under the speech
    for chain, chain_y in zip(fx, fy):  # the loud frames hardly move
        original = np.stack([x[k, 2] for k in chain_y[::frames]]).astype(np.float64)
        assert np.abs(chain[2::frames] - original).max() < 0.1


def test_validation_recordings_join_into_one_longer_recording():
    from pipeline.config import load_config
    from pipeline.long_audio import recording_names
    from pipeline.stages.verify import join_recordings

    cfg = load_config(None, ["export.long_audio_validation_recordings=3", "export.long_audio_quiet_recordings=0"])
    assert recording_names(cfg) == [("validation", "validation", 1), ("validation_2", "validation", 2),
                                    ("validation_3", "validation", 3), ("test", "test", 1)]
    event = {"label": "yes", "kind": "alone", "start_s": 10.0, "end_s": 10.5}
    parts = [(np.array([0.2, 0.4]), np.ones((2, 3)), [event], 60.0, {"keywords": 1, "alone": 1, "voices": 5}),
             (np.array([0.2]), np.zeros((1, 3)), [event, {**event, "start_s": 30.0, "end_s": 30.4}], 30.0,
              {"keywords": 2, "alone": 2, "voices": 5})]
    times, scores, events, seconds, counts = join_recordings(parts)
    np.testing.assert_allclose(times, [0.2, 0.4, 60.2])
    assert scores.shape == (3, 3) and seconds == 90.0
    assert [(e["start_s"], e["end_s"]) for e in events] == [(10.0, 10.5), (70.0, 70.5), (90.0, 90.4)]
    assert counts == {"keywords": 3, "alone": 3, "voices": 5}  # voices: the split's, not a sum


def test_a_quiet_plan_says_commands_only_in_its_first_minutes():
    """The quiet recordings (and scripts/quiet_hour.py) are laid out like the outside check's hour:
    commands said alone among single sentences at first, then only running speech, where the false alarms
    are counted."""
    from pipeline.long_audio import plan_quiet

    voices = ["en+m1", "en-us+f2"]
    pieces = plan_quiet(np.random.default_rng(0), voices, minutes=12, command_minutes=2, sample_rate=16000)
    kinds = [p["kind"] for p in pieces]
    last_command = max(i for i, k in enumerate(kinds) if k == "alone")
    assert 15 <= kinds.count("alone") <= 40  # one after every 2-6 s of speech, for 2 minutes
    assert all(p["voice"] in voices for p in pieces if p["kind"] == "speech")
    early, late = pieces[:last_command], pieces[last_command + 1:]
    assert all(p["text"].count(". ") == 0 for p in early if p["kind"] == "speech")  # one sentence between commands
    assert "alone" not in [p["kind"] for p in late] and len(late) > 2 * len(early)  # then speech only, most of it


def test_quiet_recordings_join_the_validation_ones_and_a_quiet_test_one_is_named_apart():
    from pipeline.config import load_config
    from pipeline.long_audio import is_quiet, recording_names

    cfg = load_config(None, ["export.long_audio_validation_recordings=2", "export.long_audio_quiet_recordings=2"])
    names = recording_names(cfg)
    assert names == [("validation", "validation", 1), ("validation_2", "validation", 2), ("test", "test", 1),
                     ("validation_quiet", "validation", 1), ("validation_quiet_2", "validation", 2),
                     ("test_quiet", "test", 1)]
    assert [is_quiet(name) for name, _, _ in names] == [False, False, False, True, True, True]
    # the cache folder changes with the count, so recordings made without them are never taken for complete
    assert cfg.long_audio_dir != load_config(None, ["export.long_audio_validation_recordings=2",
                                                            "export.long_audio_quiet_recordings=0"]).long_audio_dir


def test_hard_negative_places_are_spaced_and_land_where_a_word_would_end(tmp_path):
    from pipeline.continuous import WORD_END, fire_places, negative_sequences
    from pipeline.feature_spec import FeatureSpec

    labels = ["_silence_", "_unknown_", "yes", "no"]
    scores = np.zeros((400, 4), np.float32)
    scores[:, 1] = 1.0
    for frame, label, value in ((50, 2, 0.3), (60, 3, 0.5), (120, 2, 0.05), (200, 3, 0.2), (390, 2, 0.9)):
        scores[frame, label] = value
    scores[:, 0] = 0.9  # silence is no keyword: it never counts
    # 60 is within a second (100 frames) of 50; 120 is under the threshold
    assert fire_places(scores, labels, threshold=0.1, spacing=100) == [50, 200, 390]

    cfg = load_config(None, [f"paths.data={tmp_path}"])  # no noise files there: the sequences stay clean
    spec = FeatureSpec()
    stream = np.zeros(16000 * 20, np.float32)
    clicks = [300, 1000, 1900]  # frames of a loud 20-ms tone in silence: each mined place
    for frame in clicks:
        at = frame * spec.hop_length
        stream[at - 160:at + 160] = 0.5 * np.sin(np.arange(320) * 0.3)
    x, y, w = negative_sequences(cfg, spec, labels, [stream], [(0, f) for f in clicks], copies=5, seed=[0])
    assert x.shape[0] == 15 and (y == labels.index("_unknown_")).all() and (w == 1).all()
    loudest = x.astype(np.float32).max(axis=2).argmax(axis=1) / x.shape[1]  # where the tone sits in each sequence
    assert ((loudest > WORD_END[0] - 0.02) & (loudest < WORD_END[1] + 0.02)).all()
    assert np.ptp(loudest) > 0.1  # at random places in that range
