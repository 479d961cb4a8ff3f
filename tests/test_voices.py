"""espeak breadth (accent voices, SSML emphasis) and the unseen-voice set, with real espeak on small plans."""
import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import load_audio
from pipeline.config import COMMAND_WORDS, UNKNOWN_LABEL, ConfigError, load_config
from pipeline.dataset import which_set
from pipeline.stages import synth
from pipeline.unseen_voices import UNSEEN_ACCENTS, UNSEEN_UNKNOWN_WORDS, build, plan

VARIANTS = ["m1", "m2", "m3", "f1", "f2", "f3", "croak", "klatt"]


def test_accent_voices_add_a_few_random_variants_each(tmp_path):
    cfg = load_config(None, ["synth.voices=[en, en-us]", "synth.accent_voices=[de, fr]", "synth.accent_variants=3",
                             "synth.speech_per_speaker=0"])
    jobs, speakers = synth.plan_jobs(cfg, VARIANTS, tmp_path)
    by_voice = {v: [s["variant"] for s in speakers if s["voice"] == v] for v in ("en", "en-us", "de", "fr")}
    assert by_voice["en"] == VARIANTS and by_voice["en-us"] == VARIANTS
    assert len(by_voice["de"]) == len(set(by_voice["de"])) == 3 and set(by_voice["fr"]) <= set(VARIANTS)
    assert {j["voice"].split("+")[0] for j in jobs} == {"en", "en-us", "de", "fr"}
    again, _ = synth.plan_jobs(cfg, VARIANTS, tmp_path)
    assert again == jobs  # seeded


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_emphasis_probability_marks_word_takes_only(tmp_path, probability):
    cfg = load_config(None, ["synth.voices=[en]", f"synth.emphasis_probability={probability}", "synth.speech_per_speaker=1"])
    jobs, _ = synth.plan_jobs(cfg, VARIANTS[:2], tmp_path)
    words = [j for j in jobs if "text" not in j]
    assert words and all(("emphasis" in j) == (probability == 1.0) for j in words)
    assert not any("emphasis" in j for j in jobs if "text" in j)  # running speech stays plain text


def test_an_emphasized_take_renders_through_ssml_and_differs_from_a_reduced_one(tmp_path):
    synth._init_worker()
    base = {"word": "stop", "voice": "en+m1", "rate": 160, "pitch": 50, "range": 50, "gain": 0.5, "seed": 1,
            "sample_rate": 16000, "clip_samples": 16000, "root": str(tmp_path), "volume": "medium"}
    (tmp_path / "stop").mkdir()
    clips = {}
    for level in ("strong", "reduced"):
        path, error, _ = synth._synth_job(dict(base, emphasis=level, path=f"stop/{level}.wav"))
        assert error is None
        clips[level] = load_audio(tmp_path / path, sample_rate=16000)
    voiced = {k: int(np.sum(np.abs(v) > 0.02)) for k, v in clips.items()}
    assert min(voiced.values()) > 1600  # a word was spoken (>0.1 s above the floor), not the markup
    assert voiced["strong"] != voiced["reduced"]


def test_the_unseen_set_refuses_a_config_that_trains_on_it(tmp_path):
    with pytest.raises(ConfigError, match="unseen-voice set"):
        plan(load_config(None, [f"synth.accent_voices=[{UNSEEN_ACCENTS[0]}]"]), VARIANTS, tmp_path,
             variants_per_voice=1, seed=0)
    with pytest.raises(ConfigError, match="unknown_words"):
        plan(load_config(None, [f"synth.unknown_words=[{UNSEEN_UNKNOWN_WORDS[0]}]"]), VARIANTS, tmp_path,
             variants_per_voice=1, seed=0)


def test_unseen_settings_are_outside_the_training_ranges(tmp_path):
    cfg = load_config(None, [])
    jobs = plan(cfg, VARIANTS, tmp_path, variants_per_voice=2, seed=0)
    s = cfg.synth
    settings = [j for j in jobs if j["group"] == "settings"]
    assert settings and all(not s.rate_min <= j["rate"] <= s.rate_max for j in settings)
    assert all(not s.pitch_min <= j["pitch"] <= s.pitch_max for j in settings)
    accents = {j["voice"].split("+")[0] for j in jobs if j["group"] == "accents"}
    assert accents == set(UNSEEN_ACCENTS) and not accents & set(s.voices + s.accent_voices)


def test_build_writes_word_folders_and_one_csv_per_group(tmp_path):
    cfg = load_config(None, ["synth.voices=[en]", "features.workers=2"])
    counts = build(cfg, tmp_path / "unseen", variants_per_voice=1, seed=0)
    assert counts["failed"] == 0 and counts["settings"] == 12 and counts["accents"] == 12 * len(UNSEEN_ACCENTS)
    rows = []
    for group in ("accents", "settings"):
        with open(tmp_path / "unseen" / f"{group}.csv") as fh:
            rows += list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == set(COMMAND_WORDS) | {UNKNOWN_LABEL}
    for r in rows:
        assert (tmp_path / "unseen" / r["path"]).is_file()
        word = r["path"].split("/")[0]
        assert r["label"] == (word if word in COMMAND_WORDS else UNKNOWN_LABEL)
    assert not (tmp_path / "unseen.partial").exists()


def test_accent_speakers_only_train(tmp_path):
    """Their words are in neither split list and they say no running speech (which splits by its own hash)."""
    cfg = load_config(None, ["synth.voices=[en]", "synth.accent_voices=[de]", "synth.accent_variants=8",
                             "synth.speech_per_speaker=1", "task.validation_percentage=40", "task.testing_percentage=40"])
    jobs, speakers = synth.plan_jobs(cfg, VARIANTS, tmp_path)
    accent = {s["speaker"] for s in speakers if s["voice"] == "de"}
    assert len(accent) == 8 and not any(j["word"] == "_speech_" and j["voice"].startswith("de+") for j in jobs)
    for j in jobs:
        (tmp_path / j["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / j["path"]).touch()
    synth._write_split_lists(tmp_path, cfg, training_only=accent)
    listed = (tmp_path / "validation_list.txt").read_text().split() + (tmp_path / "testing_list.txt").read_text().split()
    assert listed and not {name.split("/")[1].split("_nohash_")[0] for name in listed} & accent


def test_training_only_unknown_words_never_reach_the_held_out_splits(tmp_path):
    """synth.training_unknown_words: each training speaker says a few more other words, which only train; the
    held-out splits keep synth.unknown_words, held-out speakers say none of them (no held-out voice trains),
    and every other clip of the plan stays the same."""
    keys = ["synth.voices=[en]", "task.validation_percentage=40", "task.testing_percentage=40"]
    cfg = load_config(None, keys + ["synth.training_unknown_per_speaker=2"])
    jobs, speakers = synth.plan_jobs(cfg, VARIANTS, tmp_path)
    extra = [j for j in jobs if j["word"] in cfg.synth.training_unknown_words]
    training = [s["speaker"] for s in speakers if s["voice"] in cfg.synth.accent_voices  # accent speakers only train
                or which_set(s["speaker"], validation_percentage=40, testing_percentage=40) == "training"]
    assert 0 < len(training) < len(speakers)
    assert len(extra) == 2 * len(training) and len({j["word"] for j in extra}) > 2  # drawn per speaker
    assert {j["path"].split("/")[1].split("_nohash_")[0] for j in extra} == set(training)
    plain, _ = synth.plan_jobs(load_config(None, keys + ["synth.training_unknown_per_speaker=0"]), VARIANTS, tmp_path)
    assert [j for j in jobs if j not in extra] == plain  # their own random stream
    for j in jobs:
        (tmp_path / j["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / j["path"]).touch()
    synth._write_split_lists(tmp_path, cfg, training_only_words=set(cfg.synth.training_unknown_words))
    listed = (tmp_path / "validation_list.txt").read_text().split() + (tmp_path / "testing_list.txt").read_text().split()
    held_out_words = {name.split("/")[0] for name in listed}
    assert held_out_words and not held_out_words & set(cfg.synth.training_unknown_words)
    assert held_out_words & set(cfg.synth.unknown_words)


def test_training_phrase_takes_go_to_training_speakers_only_and_leave_every_other_clip(tmp_path):
    """synth.training_phrase_take_probability: training speakers also say commands cut out of a carrier phrase;
    held-out speakers say none, and the plan's other clips are those of the plan without them."""
    keys = ["synth.voices=[en]", "synth.accent_voices=[de]", "synth.accent_variants=2",
            "task.validation_percentage=40", "task.testing_percentage=40"]
    jobs, speakers = synth.plan_jobs(load_config(None, keys + ["synth.training_phrase_take_probability=1"]),
                                     VARIANTS, tmp_path)
    takes = [j for j in jobs if "keyword" in j]
    training = {s["speaker"] for s in speakers if s["voice"] == "de"
                or which_set(s["speaker"], validation_percentage=40, testing_percentage=40) == "training"}
    assert 0 < len(training) < len(speakers)
    assert len(takes) == len(COMMAND_WORDS) * len(training)  # every command of every training speaker, at 1
    assert {j["path"].split("/")[1].split("_nohash_")[0] for j in takes} == training
    assert all(j["keyword"] == j["word"] and j["word"] in j["text"] for j in takes)  # the word, in a phrase
    plain, _ = synth.plan_jobs(load_config(None, keys), VARIANTS, tmp_path)
    assert [j for j in jobs if j not in takes] == plain  # their own random stream


def test_training_only_words_may_not_be_commands_or_held_out_words():
    with pytest.raises(ConfigError, match="training_unknown_words"):
        load_config(None, ["synth.training_unknown_per_speaker=1", "synth.training_unknown_words=[yes, mess]"])
    with pytest.raises(ConfigError, match="training_unknown_words"):
        load_config(None, ["synth.training_unknown_per_speaker=1", "synth.training_unknown_words=[bed, mess]"])
    with pytest.raises(ConfigError, match="training_unknown_words"):
        plan(load_config(None, ["synth.training_unknown_per_speaker=1",
                                f"synth.training_unknown_words=[{UNSEEN_UNKNOWN_WORDS[0]}]"]), VARIANTS, Path("/nonexistent"),
             variants_per_voice=1, seed=0)


def test_wider_training_speech_changes_only_the_training_speakers_sentences(tmp_path):
    """synth.speech_training_words: the training speakers' running speech draws from more words; held-out
    speakers' speech (and every other clip of the plan) stays as it was."""
    from pipeline.sentences import TRAINING_WORDS, WORDS

    keys = ["synth.voices=[en, en-us]", "synth.speech_per_speaker=2", "task.validation_percentage=30",
            "task.testing_percentage=30"]
    plain, _ = synth.plan_jobs(load_config(None, keys), VARIANTS, tmp_path)
    wide, _ = synth.plan_jobs(load_config(None, keys + ["synth.speech_training_words=true"]), VARIANTS, tmp_path)
    assert len(plain) == len(wide)
    extra = {w for kind in TRAINING_WORDS for w in TRAINING_WORDS[kind] if w not in WORDS[kind]}
    changed = 0
    for a, b in zip(plain, wide):
        split = which_set(a["path"], validation_percentage=30, testing_percentage=30)
        if a["word"] != "_speech_" or split != "training":
            assert a == b
            continue
        assert {k: v for k, v in a.items() if k != "text"} == {k: v for k, v in b.items() if k != "text"}
        changed += set(b["text"].replace(",", "").replace(".", "").split()) & extra != set()
    assert changed >= 4


def test_accent_speakers_running_speech_only_trains(tmp_path):
    """synth.accent_speech_per_speaker: accent speakers say running speech too, in _speech_training_/; prepare and
    training_speech take it as training speech whatever its speaker's hash, and no other clip changes."""
    from pipeline.audio import write_wav
    from pipeline.dataset import TRAINING_SPEECH_DIR, read_rows, speaker_of, training_speech
    from pipeline.stages import prepare

    keys = ["synth.voices=[en]", "synth.accent_voices=[de]", "synth.accent_variants=8", "synth.speech_per_speaker=1",
            "task.validation_percentage=40", "task.testing_percentage=40", f"paths.data={tmp_path}",
            "task.speech_percentage=20"]
    cfg = load_config(None, keys + ["synth.accent_speech_per_speaker=2"])
    jobs, speakers = synth.plan_jobs(cfg, VARIANTS, cfg.dataset_dir)
    plain, _ = synth.plan_jobs(load_config(None, keys), VARIANTS, cfg.dataset_dir)
    accent_speech = [j for j in jobs if j["path"].startswith(TRAINING_SPEECH_DIR + "/")]
    assert len(accent_speech) == 2 * 8 and all(j["voice"].startswith("de+") for j in accent_speech)
    assert [j for j in jobs if j not in accent_speech] == plain  # their own random stream
    rng = np.random.default_rng(0)
    for j in jobs:  # the plan as a dataset of noise, so that prepare can read it
        (cfg.dataset_dir / j["path"]).parent.mkdir(parents=True, exist_ok=True)
        write_wav(cfg.dataset_dir / j["path"], 0.1 * rng.standard_normal(32000 if "text" in j else 16000), 16000)
    (cfg.dataset_dir / "_background_noise_").mkdir()
    write_wav(cfg.dataset_dir / "_background_noise_" / "white_noise.wav", 0.1 * rng.standard_normal(48000), 16000)
    synth._write_split_lists(cfg.dataset_dir, cfg, training_only={s["speaker"] for s in speakers if s["voice"] == "de"},
                             training_only_words=cfg.synth.training_only_words)  # as synth.run writes them
    assert {str(cfg.dataset_dir / j["path"]) for j in accent_speech} <= set(training_speech(cfg))
    prepare.run(cfg)
    held_out = [r["path"] for split in ("validation", "test") for r in read_rows(cfg.prepared_dir, split)]
    assert held_out and not any(TRAINING_SPEECH_DIR in p for p in held_out)
    assert any(TRAINING_SPEECH_DIR in r["path"] for r in read_rows(cfg.prepared_dir, "train"))
    assert cfg.synth.training_unknown_per_speaker > 0  # and no held-out voice trains through them either
    voices = {split: {speaker_of(r["path"]) for r in read_rows(cfg.prepared_dir, split) if r["label"] != "_silence_"}
              for split in ("train", "validation", "test")}
    assert voices["validation"] and voices["test"] and not (voices["validation"] | voices["test"]) & voices["train"]
