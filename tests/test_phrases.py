"""Command words inside carrier phrases: the synth stage's _phrases_/ and the continuous design's sequences."""
import numpy as np

from pipeline.audio import load_audio
from pipeline.config import COMMAND_WORDS, load_config
from pipeline.espeak import Espeak
from pipeline.feature_spec import FeatureSpec
from pipeline.long_audio import word_span


def _phrase_job(tmp_path, text, word):
    return {"phrase_word": word, "text": text, "word_at": text.rindex(word), "voice": "en-us+m3", "rate": 170,
            "pitch": 50, "range": 50,
            "gain": 0.8, "seed": 1, "sample_rate": 16000, "clip_samples": 16000, "root": str(tmp_path),
            "path": "_phrases_/abcd1234_nohash_0.wav"}


def test_a_phrase_keeps_its_speech_and_says_where_the_command_word_is(tmp_path):
    from pipeline.stages import synth

    synth._init_worker()
    (tmp_path / "_phrases_").mkdir()
    path, error, span = synth._synth_phrase(_phrase_job(tmp_path, "tell the stone stop slowly", "stop"))
    assert error is None and span["word"] == "stop" and span["file"] == "abcd1234_nohash_0.wav"
    audio = load_audio(str(tmp_path / path), sample_rate=16000)
    start, end = span["start"], span["end"]
    assert 0 < start < end < len(audio)
    assert start > 0.4 * 16000 and len(audio) - end > 0.15 * 16000  # words before and after it stay
    # the span is the word as said alone would be: about as long, and loud
    espeak = Espeak()
    alone = espeak.say("stop", voice="en-us+m3", rate=170, pitch=50)
    alone_span = word_span(alone, espeak.sample_rate)
    assert 0.4 < (end - start) / 16000 / ((alone_span[1] - alone_span[0]) / espeak.sample_rate) < 1.6
    assert np.abs(audio[start:end]).max() > 0.2 * np.abs(audio).max()


def _phrase_sequence(tmp_path, text, word, *, confirm_s=0.0):
    """(feats, targets, weights, labels) of a continuous-design sequence made of one synthesized phrase."""
    from pipeline import continuous
    from pipeline.stages import synth

    synth._init_worker()
    (tmp_path / "_phrases_").mkdir(parents=True)
    _, _, span = synth._synth_phrase(_phrase_job(tmp_path, text, word))
    spec = FeatureSpec()
    labels = ["_silence_", "_unknown_", *COMMAND_WORDS]
    phrase = {"path": str(tmp_path / "_phrases_" / span["file"]), "word": word, "start": span["start"],
              "end": span["end"]}
    row = {"path": "unused.wav", "label": "no", "offset": 0, "gain": 1.0, "fragment": 0}
    continuous._init({"spec": spec, "samples": 40000, "rows": [row], "labels": labels, "seed": [0, 0],
                      "speech_files": [], "phrases": [phrase], "noise": [], "confirm_s": confirm_s})
    old = continuous.PHRASE
    continuous.PHRASE = 1.0  # every keyword row becomes the phrase (the row's own file does not exist)
    try:
        return (*continuous.make_sequence(3), labels)
    finally:
        continuous.PHRASE = old


def test_a_phrase_sequence_labels_the_command_from_its_end(tmp_path):
    from pipeline import continuous

    feats, targets, weights, labels = _phrase_sequence(tmp_path, "I think yes was the answer", "yes")
    keyword = np.flatnonzero(targets == labels.index("yes"))
    assert len(keyword) == int(continuous.LABEL_S * 100)  # LABEL_S of 10-ms frames, from the word's end
    unknowable = np.flatnonzero(weights == 0)  # while the word is said
    assert unknowable[-1] + 1 == keyword[0]
    assert 0.1 < len(unknowable) / 100 < 0.8
    # the phrase's other words sound around it, and are _unknown_
    loud = feats.astype(np.float32).max(axis=1) > -40
    assert loud[:unknowable[0]].any() or loud[keyword[-1] + 1:].any()
    assert set(targets[weights > 0]) == {labels.index("_unknown_"), labels.index("yes")}


def test_with_confirm_time_a_command_is_due_only_when_no_speech_follows_it(tmp_path):
    """train.continuous_confirm_s: after a phrase-final "yes" the label waits that long, then is due; a "yes"
    that the sentence goes on after is _unknown_ (a word inside a sentence is not a command)."""
    from pipeline import continuous

    _, targets, weights, labels = _phrase_sequence(tmp_path / "final", "the answer was yes", "yes", confirm_s=0.2)
    yes, unknown = labels.index("yes"), labels.index("_unknown_")
    keyword = np.flatnonzero(targets == yes)
    assert len(keyword) > 0.8 * continuous.LABEL_S * 100  # due for LABEL_S (the sequence may cut its end)
    unknowable = np.flatnonzero(weights == 0)  # the word, then 20 frames of waiting
    assert unknowable[-1] + 1 == keyword[0]
    assert 0.3 < len(unknowable) / 100 < 1.0

    _, targets, weights, _ = _phrase_sequence(tmp_path / "inside", "I think yes was the answer", "yes",
                                              confirm_s=0.2)
    assert not (targets == yes).any()
    after = np.flatnonzero(weights == 0)[-1] + 1
    assert (targets[after:after + 60] == unknown).all() and (weights[after:after + 60] > 0).all()


def test_with_confirm_time_a_command_that_running_speech_follows_at_once_is_unknown(tmp_path, monkeypatch):
    """The demo's path: a command clip with the training speakers' running speech around it (no phrases)."""
    import soundfile as sf

    from pipeline import continuous

    espeak = Espeak()
    sf.write(tmp_path / "yes.wav", espeak.say("yes", voice="en-us+m3", rate=170, pitch=50), espeak.sample_rate)
    speech = espeak.say("the weather was nice and we walked along the river for an hour before lunch",
                        voice="en-us+f2", rate=170, pitch=50)
    sf.write(tmp_path / "speech.wav", speech, espeak.sample_rate)
    labels = ["_silence_", "_unknown_", *COMMAND_WORDS]
    row = {"path": str(tmp_path / "yes.wav"), "label": "yes", "offset": 0, "gain": 1.0, "fragment": 0}
    continuous._init({"spec": FeatureSpec(), "samples": 40000, "rows": [row], "labels": labels, "seed": [0, 0],
                      "speech_files": [str(tmp_path / "speech.wav")], "phrases": [], "noise": [], "confirm_s": 0.2})
    monkeypatch.setattr(continuous, "CONTEXT", 1.0)  # running speech around every word
    due = {}
    for gap_s in (0.0, 0.5):  # speech again at once after the word, or 0.5 s later
        monkeypatch.setattr(continuous, "GAP_S", (gap_s, gap_s))
        _, targets, weights = continuous.make_sequence(3)
        due[gap_s] = np.flatnonzero(targets == labels.index("yes"))
    assert len(due[0.0]) == 0 and len(due[0.5]) > 0
    assert (targets[:due[0.5][0]][weights[:due[0.5][0]] > 0] == labels.index("_unknown_")).all()


def test_the_word_is_found_at_its_slot_not_where_its_letters_first_appear():
    from pipeline.stages.synth import _in_carrier

    job = _in_carrier("tell the goat {} slowly", "go")
    assert job["text"] == "tell the goat go slowly" and job["text"][job["word_at"]:].startswith("go slowly")


def test_continuous_augment_colours_the_training_sequences_speech_and_keeps_their_labels(tmp_path):
    """train.continuous_augment: the word and the running speech around it get the 1-s clips' augmentations (here
    a +6 dB/octave tilt every time), each piece on its own draw; the targets and weights stay as they were."""
    import dataclasses

    import soundfile as sf

    from pipeline import continuous
    from pipeline.augment import AugmentParams

    espeak = Espeak()
    sf.write(tmp_path / "stop.wav", espeak.say("stop", voice="en-us+m3", rate=170, pitch=50), espeak.sample_rate)
    sf.write(tmp_path / "speech.wav", espeak.say("the weather was nice and we walked along the river",
                                                 voice="en-us+f2", rate=170, pitch=50), espeak.sample_rate)
    labels = ["_silence_", "_unknown_", *COMMAND_WORDS]
    row = {"path": str(tmp_path / "stop.wav"), "label": "stop", "offset": 0, "gain": 1.0, "fragment": 0}
    job = {"spec": FeatureSpec(), "samples": 40000, "rows": [row], "labels": labels, "seed": [0, 0],
           "speech_files": [str(tmp_path / "speech.wav")], "phrases": [], "noise": [], "confirm_s": 0.2}
    cfg = load_config(None, ["train.continuous_augment=true", "augment.tilt_probability=1.0",
                             "augment.tilt_db_per_octave=[6.0, 6.0]", "augment.noise_snr_db=[5.0, 20.0]",
                             *[f"augment.{n}_probability=0" for n in ("speed", "stretch", "pitch", "vtlp")]])
    voice = continuous.voice_params(cfg)
    assert AugmentParams.from_config(cfg.augment).noise_probability > 0  # the 1-s clips' SNR noise is on ...
    assert voice.noise_probability == 0  # ... and not here: a sequence has its own noise
    turned_on = {f.name for f in dataclasses.fields(voice) if f.name.endswith("_probability") and getattr(voice, f.name)}
    assert turned_on == {"tilt_probability"}  # the tilt alone
    assert continuous.voice_params(load_config(None, [])) is None

    made = {}
    for name, params in (("plain", None), ("voiced", voice)):
        continuous._init({**job, "voice": params})
        made[name] = [continuous.make_sequence(i) for i in range(6)]
    for (x0, y0, w0), (x1, y1, w1) in zip(made["plain"], made["voiced"]):
        assert (y0 == y1).all() and (w0 == w1).all()
        loud = x0.astype(np.float32).max(axis=1) > x0.max() - 30  # frames with speech in them
        high_minus_low = (x1 - x0).astype(np.float32)[loud]
        # +6 dB/octave about 1 kHz: the top 8 mel bands (~4-7.6 kHz) gain ~12-17 dB, the bottom 8 (~20-600 Hz) lose
        # ~4-20 dB (flat under 100 Hz): ~25 dB between them (measured 24.3-24.5)
        assert 18 < high_minus_low[:, -8:].mean() - high_minus_low[:, :8].mean() < 30
