"""Configuration: YAML loaded once into frozen dataclasses.

Unknown keys, wrong types and out-of-range values fail at load with one line that names the key.
Every key can be overridden from the command line with ``--set dotted.key=value`` (value parsed as YAML).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from pipeline.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"

COMMAND_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
# The 35 words of Speech Commands v0.02 (v0.01 has the first 30).
ALL_WORDS_V2 = COMMAND_WORDS + [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
]
ALL_WORDS_V1 = ALL_WORDS_V2[:30]
# Words that sound near a command (yet/yes, now/no, cup/up, town/down, lift/left, ride/right, in/on,
# cough/off, step/stop, goat/go; homophones such as know and write left out), for synth.unknown_words.
# docs/voice_ablation.md measures them: they cost the demo's own test accuracy more than they gained.
NEAR_COMMAND_WORDS = ["yet", "yell", "less", "note", "now", "snow", "cup", "pup", "town", "dawn", "gown", "lift",
                      "loft", "light", "bright", "ride", "in", "an", "awe", "cough", "top", "shop", "step", "stock",
                      "goat", "grow", "girl", "code"]
# Training-only words for _unknown_ (synth.training_unknown_words): everyday words, and words that share a
# vowel or an ending with a command (mess/yes, bow/no, hop/up, crown/down, felt/left, kite/right, long/on,
# soft/off, drop/stop, show/go), none of them homophones of a command or words of the unseen-voice set.
# A model that has heard only a dozen other words calls many a new word a command; these never reach the
# held-out splits, so own-test accuracy keeps measuring the same vocabulary.
TRAINING_UNKNOWN_WORDS = [
    "mess", "dress", "chess", "bless", "press", "test", "west", "nest", "yeah", "bow", "toe", "slow", "row", "nope",
    "pop", "hop", "hope", "jump", "bump", "us", "brown", "crown", "round", "sound", "count", "felt", "belt", "lend",
    "theft", "let", "night", "white", "kite", "bite", "fight", "wide", "ripe", "long", "song", "gone", "john",
    "upon", "soft", "often", "half", "staff", "drop", "spot", "stuck", "stamp", "stomp", "low", "show", "coat",
    "boat", "road", "water", "window", "garden", "morning", "people", "little", "number", "money", "family",
    "school", "table", "letter", "mother", "river", "orange", "purple", "yellow", "green", "blue", "hundred",
    "monday", "sunday", "coffee", "pizza", "computer", "telephone", "camera", "banana", "tiger", "rabbit",
    "turtle", "elephant", "picture", "teacher", "doctor", "kitchen", "bottle", "button", "pocket", "basket",
    "candle", "engine", "island", "village", "city", "forest", "mountain", "ocean", "summer", "winter",
    "thunder", "weather", "question", "hello", "thanks", "please", "sorry", "maybe", "never", "always",
    "again", "together", "tomorrow", "today", "wait", "cancel", "pause", "play", "open", "close", "start",
    "help", "call", "turn", "light", "volume"]
DEMO_UNKNOWN_WORDS = ["bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "zero", "four"]


# Keys that change how fast a result is computed, not the result: changing them re-runs nothing.
NO_RESULT_KEYS = ("features.workers", "features.batch_size", "features.shard")
# SpecAugment's masks and the log-mel voice warp and EQ are drawn in the training input pipeline, not in the
# feature cache: they re-run train, not features
SPEC_AUGMENT_KEYS = ("augment.freq_masks", "augment.freq_mask_width", "augment.time_masks", "augment.time_mask_width",
                     "augment.mel_warp_probability", "augment.mel_warp_alpha", "augment.mel_blur_probability",
                     "augment.mel_blur_bands", "augment.mel_eq_probability", "augment.mel_eq_db",
                     "augment.mel_eq_terms", "augment.mixup_alpha")
TRAIN_KEYS = ("model", "train", "run.seed") + SPEC_AUGMENT_KEYS  # what the train stage's result depends on
LONG_AUDIO_VERSION = 4  # bump when pipeline/long_audio.py makes different recordings from the same config
SYNTH_VERSION = 2  # bump when the synth stage makes a different dataset from the same config (v2: accent voices)
# What the synthesized dataset depends on (its folder name is a hash of these).
SYNTH_KEYS = ("synth", "run.seed", "features.sample_rate", "features.clip_samples", "task.validation_percentage",
              "task.testing_percentage")


class ConfigError(PipelineError, ValueError):
    """A config problem, reported as one line that names the key."""


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"
    seed: int = 1234  # one seed for data synthesis, splits, augmentation and weight init


@dataclass(frozen=True)
class PathsConfig:
    data: str = "data"  # datasets and feature caches (relative to the repo root unless absolute)
    exports: str = "exports"  # one folder per run.name


@dataclass(frozen=True)
class DatasetConfig:
    source: Literal["synth", "download"] = "synth"
    version: int = 2  # Speech Commands v0.01 (1) or v0.02 (2); the synthesized demo mimics v2
    url: Optional[str] = None  # http(s)://, file:// or a local path to the .tar.gz
    sha256: Optional[str] = None  # null = don't check
    test_url: Optional[str] = None  # official test archive; null = test split from testing_list.txt
    test_sha256: Optional[str] = None


@dataclass(frozen=True)
class SynthConfig:
    """The demo dataset, spoken by espeak-ng. One speaker = one accent voice x one voice variant."""

    voices: list[str] = field(default_factory=lambda: ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029",
                                                        "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"])
    variants: list[str] = field(default_factory=list)  # empty = every variant espeak-ng ships (~100)
    rate_min: int = 110  # words per minute, drawn per take
    rate_max: int = 220
    pitch_min: int = 15  # espeak pitch 0..100, drawn per take
    pitch_max: int = 85
    unknown_words: list[str] = field(default_factory=lambda: list(DEMO_UNKNOWN_WORDS))
    unknown_per_speaker: int = 3  # _unknown_ is 10% of a split, so few are needed
    # and this many words per training speaker from training_unknown_words, which only train (never in the
    # held-out lists): more ways for a word not to be a command, with the held-out splits' vocabulary unchanged.
    # Held-out speakers say none: their voices never train
    training_unknown_words: list[str] = field(default_factory=lambda: list(TRAINING_UNKNOWN_WORDS))
    training_unknown_per_speaker: int = 0
    # espeak voices of other languages reading the English words: accented English, voices beyond the
    # English ones. Each gets accent_variants voice variants drawn at random (all ~100 would swamp the set)
    accent_voices: list[str] = field(default_factory=list)
    accent_variants: int = 12
    # chance that a take is read through espeak's SSML with a random <emphasis> level and <prosody> volume:
    # stressed and unstressed words, which rate and pitch alone don't give. 0 = plain text
    emphasis_probability: float = 0.0
    takes_per_word: int = 1  # clips per speaker and word (<speaker>_nohash_<n>.wav)
    noise_seconds: int = 30  # length of each synthesized background-noise file
    # utterances of 2-3 sentences (no command word) per speaker in _speech_/: _unknown_ windows of running
    # speech and context around words (task.speech_percentage, augment.context_probability). 0 = none
    speech_per_speaker: int = 0
    # the training speakers' running speech also draws from sentences.TRAINING_EXTRA_WORDS (212 more words, many
    # near a command), so the hard negatives are not one fixed vocabulary; held-out speakers and the always-on
    # recordings keep sentences.WORDS (docs/always_on.md, "More words in the training speech")
    speech_training_words: bool = False
    # running-speech utterances per accent speaker (synth.accent_voices), in _speech_training_/: they only train,
    # as the accent speakers' words do, and give the hard negatives other ways of saying ordinary words. 0 = none
    accent_speech_per_speaker: int = 0
    # chance that a speaker also says a command word inside a carrier phrase ("say {} please"), cut out
    # at espeak's word timings: the word as it sounds in a sentence (coarticulation). One extra take; 0 = none
    phrase_take_probability: float = 0.0
    # the same for training speakers only (accent speakers included), from a random stream of its own: the words
    # as they sound in a sentence for training, while the held-out splits and every other clip stay as they were
    training_phrase_take_probability: float = 0.0
    # whole carrier phrases per speaker (main voices), each with one command word and where espeak says it,
    # in _phrases_/ (spans.csv): training material for the continuous design's commands inside speech,
    # from carriers the always-on benchmark never uses (sentences.TRAINING_CARRIERS). 0 = none
    phrases_per_speaker: int = 0

    @property
    def training_only_words(self) -> set[str]:
        """The words that only train (said when training_unknown_per_speaker > 0; else none)."""
        return set(self.training_unknown_words) if self.training_unknown_per_speaker else set()


@dataclass(frozen=True)
class TaskConfig:
    labels: Union[int, list[str]] = 12  # 12 (10 words + _silence_ + _unknown_), 35 (all words), or a list
    silence_percentage: float = 10.0  # share of every split, as in TF examples/speech_commands
    unknown_percentage: float = 10.0
    # head or tail fragments of keywords, labelled _unknown_, in train/validation (% of the keyword count):
    # a streaming window often holds part of a word; 0 = plain TF examples/speech_commands semantics
    fragment_percentage: float = 0.0
    # 1-s windows of running speech (the dataset's _speech_ folder) labelled _unknown_, in train/validation,
    # as % of the keyword count: what an always-on model hears most. 0 = none (TF semantics)
    speech_percentage: float = 0.0
    # clips of the training-only words (synth.training_unknown_words) labelled _unknown_, in train only, as %
    # of the keyword count, on top of unknown_percentage (which keeps drawing from the held-out vocabulary:
    # drawn from one pool, the new words halved the training examples of those 12 and own-test rejection of
    # them fell 98.8% -> 92.7%)
    training_unknown_percentage: float = 10.0
    validation_percentage: float = 10.0  # used by the SHA1 which_set rule when the list files are missing
    testing_percentage: float = 10.0


@dataclass(frozen=True)
class FeaturesConfig:
    """The one log-mel definition (see pipeline/feature_spec.py)."""

    sample_rate: int = 16000
    clip_samples: int = 16000  # 1 s
    n_fft: int = 512  # power of two: TFLite's RFFT2D needs it for the in-graph frontend
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms -> 101 frames with center=True
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    batch_size: int = 256  # clips per librosa call; batching is ~2x faster than one clip at a time
    workers: int = 0  # processes; 0 = one per core
    shard: Optional[str] = None  # "i/n": compute only slice i of n (merge when all are present)


@dataclass(frozen=True)
class AugmentConfig:
    time_shift_ms: float = 100.0  # random shift of +-100 ms, as in TF examples/speech_commands
    noise_probability: float = 0.8  # chance of mixing in background noise
    noise_volume: float = 0.1  # max noise gain
    copies: int = 1  # augmented copies of each training clip, computed offline before librosa
    freq_masks: int = 2  # SpecAugment frequency masks per example
    freq_mask_width: int = 5  # max mel bins per mask
    time_masks: int = 2
    time_mask_width: int = 10  # max frames per mask
    # Voice warp and EQ on the log-mel, drawn per example in every epoch like the masks (pipeline/mel_augment.py):
    # more voices per clip than the cached copies hold. Off at probability 0, the default
    mel_warp_probability: float = 0.0  # the mel axis read at f / alpha: formants moved, as VTLP does
    mel_warp_alpha: list[float] = field(default_factory=lambda: [0.85, 1.15])
    mel_blur_probability: float = 0.0  # the bands smoothed across frequency: harmonics blurred, formants kept
    mel_blur_bands: float = 1.5  # the Gaussian's largest sigma, in mel bands
    mel_eq_probability: float = 0.0  # a smooth random curve across the bands (a sum of cosines)
    mel_eq_db: float = 6.0  # its largest reach, +-dB
    mel_eq_terms: int = 4  # cosines of 1..terms half-periods across the bands: more = finer bumps and dips
    # mixup: each training example blended with another of its batch, log-mels and labels alike, at a share
    # drawn from Beta(alpha, alpha) (the example keeps the larger share). 0 = off
    mixup_alpha: float = 0.0
    # Voice and room augmentation (pipeline/augment.py, docs/augmentation.md), applied to the cached copies
    # after the time shift and noise mix. Each is off at probability 0, the default, so a config without
    # these keys computes the features it did before. Ranges are [low, high], drawn uniformly per clip.
    speed_probability: float = 0.0  # resample: tempo and pitch together (Kaldi speed perturbation)
    speed_factor: list[float] = field(default_factory=lambda: [0.9, 1.1])  # Kaldi's 0.9/1.1; 1.1 = 10% faster
    stretch_probability: float = 0.0  # time stretch (phase vocoder): tempo alone, the pitch kept
    stretch_rate: list[float] = field(default_factory=lambda: [0.85, 1.15])  # 1.15 = 15% faster
    pitch_probability: float = 0.0  # pitch shift (phase vocoder, then resampling): pitch and formants, the tempo kept
    pitch_semitones: list[float] = field(default_factory=lambda: [-3.0, 3.0])
    vtlp_probability: float = 0.0  # vocal-tract-length perturbation (frequency warp), another voice
    vtlp_alpha: list[float] = field(default_factory=lambda: [0.9, 1.1])  # warp factor, Jaitly & Hinton's 0.9-1.1
    tilt_probability: float = 0.0  # spectral tilt about 1 kHz: microphone, phone and room colouring
    tilt_db_per_octave: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # +-3 dB/oct = +-10 dB at 8 kHz
    reverb_probability: float = 0.0  # synthetic room impulse response
    reverb_rt60_s: list[float] = field(default_factory=lambda: [0.2, 0.8])  # seconds to -60 dB: furnished room to hall
    reverb_drr_db: list[float] = field(default_factory=lambda: [0.0, 12.0])  # direct/reverberant energy: far to near talker
    # null = noise mixed by noise_volume (as in TF examples/speech_commands); [low, high] = word clips get
    # noise at an SNR in this range (dB, against the speech's active power) instead, with noise_probability.
    # Silence clips always keep the noise_volume mix (no speech to measure an SNR against). E.g. [5, 20].
    noise_snr_db: Optional[list[float]] = None
    gain_probability: float = 0.0  # level: log-mel has no per-clip normalisation, so level is visible
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])  # +-6 dB: nearer or farther, louder or softer
    # chance that a word clip's copy gets running speech around it (the dataset's _speech_ folder, training
    # speakers): commands said inside sentences, for always-on listening. 0 = off
    context_probability: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    gru_units: list[int] = field(default_factory=lambda: [64, 64])  # >= 2 stacked GRU layers
    dense_units: int = 64
    dropout: float = 0.1  # between layers; recurrent_dropout must stay 0 for cuDNN
    # towers > 1: that many models of these sizes, trained one after another from their own seeds, then folded
    # into one network of towers x the sizes (block-diagonal weights: the exports and runtimes see one model,
    # whose scores are the softmax of the towers' mean logits; pipeline/model.py, fold_towers)
    towers: int = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3  # peak of a cosine decay with warmup
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    patience: int = 8  # early stopping on validation accuracy
    # > 0: validate, checkpoint and export an exponential moving average of the weights (Polyak averaging)
    # with this momentum per step, in the 1-s training and its hard-negative epochs. 0 = the raw weights
    ema_momentum: float = 0.0
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"  # multi_worker reads TF_CONFIG
    cpu_devices: int = 0  # > 0: split the CPU into this many logical devices (data-parallel tests without GPUs)
    mixed_precision: bool = False
    require_cudnn: bool = False
    # XLA for the training step on CPU-only machines: 15-20% faster epochs of the demo's GRU on 2 cores (the
    # continuous design's 2.5-s sequences stay off it: 2.5x slower there). Ignored with a GPU (XLA can't
    # compile the cuDNN GRU kernel) and under distribute
    jit_compile: bool = False
    # Hard-negative mining for always-on use: after training, 1-s windows of the training speakers' running
    # speech (synth _speech_/) every hard_negative_hop_ms where a keyword scores >= hard_negative_threshold
    # join the training set as _unknown_, and training goes on for this many epochs. 0 = off
    hard_negative_epochs: int = 0
    hard_negative_threshold: float = 0.3
    hard_negative_hop_ms: float = 100.0
    # The continuous always-on design (pipeline/continuous.py): after the 1-s model, the same network
    # trains this many sequences of continuous_seconds (words ending anywhere, running speech and noise
    # around them) with per-frame targets, so one GRU state can listen without resets. It is exported as
    # model_continuous.tflite and becomes the run's detector. 0 = off: the five staggered, reset states.
    continuous_sequences: int = 0
    continuous_epochs: int = 3
    continuous_seconds: float = 2.5
    continuous_learning_rate: float = 1e-3
    # the loss weight of the frames where a keyword is due (for LABEL_S, from continuous_confirm_s after the word),
    # against 1 for every other frame. They are ~13% of the frames, so at 1 the frame prior leans on _unknown_
    continuous_keyword_weight: float = 1.0
    # a keyword's frames are due only once this many seconds after it are clear of speech; a keyword that speech
    # follows sooner is _unknown_ there: a command said alone, not a word inside a sentence (docs/always_on.md,
    # "Wait for the pause"). Detections come this much later. 0 = due from the word's end
    continuous_confirm_s: float = 0.0
    # 128: half the steps of 64 on CPU, ~30% less time. More steps (batch 64, more sequences) moved the always-on
    # curve on one trained base and not on another (docs/always_on.md, "More optimizer steps ...")
    continuous_batch_size: int = 128
    # label smoothing in the continuous design's frame loss (targets (1 - s) one-hot + s / classes), as the 1-s
    # training has in train.label_smoothing. 0 = plain cross-entropy
    continuous_label_smoothing: float = 0.0
    # the training sequences' speech (the word, the running speech around it, mined speech) gets the waveform
    # augmentations the 1-s clips get (augment.speed_*, vtlp_*, tilt_*, reverb_*, gain_*; each piece its own draw;
    # the sequences keep their own noise). The validation sequences stay clean. false = none
    continuous_augment: bool = False
    # the 1-s training's log-mel augmentations (augment.mel_*: warp, blur, EQ) on the continuous sequences too, drawn
    # anew for each chain in each epoch, one draw over its whole length (one microphone, one voice colouring). The
    # validation sequences stay clean. false = none
    continuous_mel_augment: bool = False
    # Hard negatives for the continuous design: after its epochs, the training speakers' running speech goes
    # through its never-reset state; each place where a keyword's frame score reaches the threshold gives this
    # many _unknown_ sequences around it, and training goes on over all sequences for this many epochs. 0 = off
    continuous_hard_negative_epochs: int = 0
    continuous_hard_negative_threshold: float = 0.1
    continuous_hard_negative_copies: int = 6
    # mine and train again this many times: each round mines where the model the last round left still fires.
    # 2 (two seeds): 30-50% fewer false alarms at thresholds 0.3-0.5 at equal recall, but no gain at the <= 1 an
    # hour point validation picks, for one more pass and 2 more epochs (docs/always_on.md, "Mine twice")
    continuous_hard_negative_rounds: int = 1
    # the continuous design trained this many times from the 1-s weights, each candidate on its own draw (chaining,
    # speech mined, batch order); the train stage keeps the one that verify's threshold pick rates best on the
    # validation recordings (export.long_audio_*): most commands found at <= 1 false alarm an hour. Retrainings
    # from one set of 1-s weights spread far (docs/always_on.md, "Best of two continuous trainings"). 1 = no choice
    continuous_candidates: int = 1
    # this many training sequences one after another make one (4: 10 s through one state), and in
    # continuous_floor_probability of those a steady noise floor (FLOOR_DB under the speech) runs under the
    # whole chain: the state meets a floor for longer than one sequence lasts, as it does always-on. The batch
    # shrinks by the same factor, so an epoch keeps its steps and its cost. 1 and 0 = off
    continuous_chain: int = 1
    continuous_floor_probability: float = 0.0


@dataclass(frozen=True)
class ExportConfig:
    int8_calibration_examples: int = 200  # representative examples from the train split
    # minutes of each always-on recording (validation picks the threshold, test reports; 0 = skip). An hour
    # of running speech gives false alarms per hour with a resolution of 1 (pipeline/long_audio.py)
    long_audio_minutes: float = 60.0
    # how many validation recordings of that length pick the threshold together. At <= 1 false alarm per
    # hour, one hour's threshold rests on its one or two most confident false alarms and swings from run to
    # run; N hours rest on N or so. They are scored side by side with the test recording
    long_audio_validation_recordings: int = 1
    # how many *quiet* validation recordings join them (0 = none): laid out like a room where someone talks
    # and now and then says a command alone, over one low noise floor (pipeline/long_audio.py, plan_quiet).
    # With any, a quiet test recording is reported too. The threshold is then picked for that room as well
    # as for the noisy mixed recordings
    long_audio_quiet_recordings: int = 0
    # what the recordings' sentences say. "held-out": words that no training sentence says, as in a user's room,
    # the validation recordings' (sentences.VALIDATION_WORDS: they pick the threshold) apart from the test
    # recordings' (sentences.HELD_OUT_WORDS: they report). "base": the pipeline's own words, which the training
    # speakers' sentences share: false alarms of a room the model has heard (the figures before this key)
    long_audio_words: str = "held-out"


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    # ---- derived values -------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return _resolve(self.paths.data)

    @property
    def dataset_dir(self) -> Path:
        """Where the Speech-Commands-layout dataset lives (synthesized or extracted)."""
        if self.dataset.source == "synth":
            key = self.section_hash(*SYNTH_KEYS)
            return self.data_dir / f"synth_v{SYNTH_VERSION}_{key[:10]}"
        return self.data_dir / f"speech_commands_v{self.dataset.version}_{self.section_hash('dataset')[:10]}"

    @property
    def test_dataset_dir(self) -> Path:
        """Where the official test archive (dataset.test_url) is extracted."""
        return self.dataset_dir.with_name(self.dataset_dir.name + "_test")

    @property
    def archives_dir(self) -> Path:
        return self.data_dir / "archives"

    @property
    def run_dir(self) -> Path:
        return _resolve(self.paths.exports) / self.run.name

    @property
    def labels(self) -> list[str]:
        labels = self.task.labels
        if isinstance(labels, list):
            return list(labels)
        words = ALL_WORDS_V2 if self.dataset.version == 2 else ALL_WORDS_V1
        if labels == 12:
            return [SILENCE_LABEL, UNKNOWN_LABEL] + COMMAND_WORDS
        return words  # a synthesized dataset has them when synth.unknown_words lists the dataset's 25 other words

    @property
    def prepared_dir(self) -> Path:
        """Split index (prepare stage): depends on the dataset, the task and the seed."""
        return self.dataset_dir.with_name(f"{self.dataset_dir.name}_prepared_{self.section_hash('task', 'run.seed')[:8]}")

    @property
    def features_dir(self) -> Path:
        """Feature cache: depends on the split index, the feature spec and the augmentation."""
        key = self.section_hash("features", "augment", ignore=SPEC_AUGMENT_KEYS)
        return self.prepared_dir.with_name(f"{self.prepared_dir.name}_features_{key[:8]}")

    @property
    def long_audio_dir(self) -> Path:
        """The always-on benchmark's recordings (pipeline/long_audio.py): depend on the split index, the
        espeak voices, the length and the vocabulary."""
        key = self.section_hash("export.long_audio_minutes", "export.long_audio_validation_recordings",
                                "export.long_audio_quiet_recordings", "export.long_audio_words", "synth.voices",
                                "synth.variants", "run.seed")
        return self.prepared_dir.with_name(f"{self.prepared_dir.name}_long_audio_v{LONG_AUDIO_VERSION}_{key[:8]}")

    def value(self, key: str):
        """A section (as a dict) or a dotted key's value: ``cfg.value("train")``, ``cfg.value("run.seed")``."""
        node = self
        for part in key.split("."):
            node = getattr(node, part)
        return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node

    def section_hash(self, *keys: str, ignore: tuple[str, ...] = ()) -> str:
        """Stable hash of config sections or dotted keys ("run.seed"): what a stage's outputs depend on."""
        blob = json.dumps(result_values(self, keys, ignore), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def result_values(cfg: Config, keys, ignore: tuple[str, ...] = ()) -> dict:
    """{key: value} of config sections or dotted keys, without the NO_RESULT_KEYS (and ``ignore``) inside them."""
    values = {key: cfg.value(key) for key in keys}
    for dotted in NO_RESULT_KEYS + tuple(ignore):
        section, _, name = dotted.partition(".")
        if isinstance(values.get(section), dict):
            values[section].pop(name, None)
        values.pop(dotted, None)
    return values


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


# ---- loading and validation -----------------------------------------------------------------

def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config, apply ``key=value`` overrides, validate, and freeze."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=5")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    cfg = _build(Config, raw, "")
    _check_ranges(cfg)
    return cfg


def _set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls, raw, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {prefix.rstrip('.')}: must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown config key {prefix}{key} (allowed in this section: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        typ, value, dotted = hints[name], raw[name], prefix + name
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, dotted + ".")
        else:
            kwargs[name] = _check_type(dotted, typ, value)
    return cls(**kwargs)


def _check_type(key: str, typ, value):
    """Return value (ints widened to float where a float is expected) or raise ConfigError."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _check_type(key, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key}: {value!r} is not {_type_name(typ)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, args))}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: {value!r} is not a list")
        return [_check_type(f"{key}[{i}]", args[0], v) for i, v in enumerate(value)]
    if typ is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key}: expected null, got {value!r}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool):
        raise ConfigError(f"config key {key}: {value!r} is not an integer")
    if isinstance(value, typ):
        return value
    raise ConfigError(f"config key {key}: {value!r} is not {_type_name(typ)}")


def _type_name(typ) -> str:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if typ is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(typ, str(typ))


def _check_ranges(cfg: Config) -> None:
    f = cfg.features

    def require(ok: bool, key: str, value, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key}: {value!r} out of range ({allowed})")

    require(f.n_fft > 0 and f.n_fft & (f.n_fft - 1) == 0, "features.n_fft", f.n_fft, "a power of two, for TFLite RFFT2D")
    require(0 < f.win_length <= f.n_fft, "features.win_length", f.win_length, f"1..n_fft={f.n_fft}")
    require(0 < f.hop_length <= f.win_length, "features.hop_length", f.hop_length, "1..win_length")
    require(0 <= f.fmin < f.fmax <= f.sample_rate / 2, "features.fmax", f.fmax, f"fmin < fmax <= sample_rate/2 = {f.sample_rate / 2}")
    require(f.n_mels > 0, "features.n_mels", f.n_mels, "> 0")
    require(f.batch_size >= 1, "features.batch_size", f.batch_size, ">= 1")
    require(f.workers >= 0, "features.workers", f.workers, ">= 0 (0 = one per core)")
    if f.shard is not None:
        i, _, n = f.shard.partition("/")
        ok = i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)
        require(ok, "features.shard", f.shard, "i/n with 0 <= i < n, e.g. 0/4")
    require(len(cfg.model.gru_units) >= 2, "model.gru_units", cfg.model.gru_units, "at least 2 stacked GRU layers")
    require(all(u > 0 for u in cfg.model.gru_units), "model.gru_units", cfg.model.gru_units, "positive sizes")
    require(0 <= cfg.model.dropout < 1, "model.dropout", cfg.model.dropout, "0 <= dropout < 1")
    require(cfg.model.towers >= 1, "model.towers", cfg.model.towers, ">= 1")
    require(cfg.model.towers == 1 or cfg.train.distribute == "none", "model.towers", cfg.model.towers,
            "1 under train.distribute (towers train with train.distribute=none only)")
    require(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, ">= 1")
    require(cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size, ">= 1")
    require(0 <= cfg.train.ema_momentum < 1, "train.ema_momentum", cfg.train.ema_momentum, "0 (off) <= momentum < 1")
    clash = cfg.synth.training_only_words & (set(cfg.synth.unknown_words) | set(COMMAND_WORDS))
    require(not clash, "synth.training_unknown_words", sorted(clash),
            "no command word or synth.unknown_words word (they would leave the held-out splits)")
    require(cfg.synth.training_unknown_per_speaker >= 0, "synth.training_unknown_per_speaker",
            cfg.synth.training_unknown_per_speaker, ">= 0")
    require(cfg.train.continuous_sequences >= 0, "train.continuous_sequences", cfg.train.continuous_sequences, ">= 0")
    require(cfg.train.continuous_epochs >= 1, "train.continuous_epochs", cfg.train.continuous_epochs, ">= 1")
    require(0 <= cfg.train.continuous_confirm_s <= 1.0, "train.continuous_confirm_s", cfg.train.continuous_confirm_s,
            "between 0 and 1 s")
    require(cfg.train.continuous_keyword_weight > 0, "train.continuous_keyword_weight",
            cfg.train.continuous_keyword_weight, "> 0")
    require(cfg.train.continuous_hard_negative_epochs >= 0, "train.continuous_hard_negative_epochs",
            cfg.train.continuous_hard_negative_epochs, ">= 0 (0 = off)")
    require(0 < cfg.train.continuous_hard_negative_threshold < 1, "train.continuous_hard_negative_threshold",
            cfg.train.continuous_hard_negative_threshold, "0 < threshold < 1")
    require(cfg.train.continuous_hard_negative_rounds >= 1, "train.continuous_hard_negative_rounds",
            cfg.train.continuous_hard_negative_rounds, ">= 1")
    require(cfg.train.continuous_candidates >= 1, "train.continuous_candidates", cfg.train.continuous_candidates, ">= 1")
    if cfg.train.continuous_candidates > 1:  # the validation recordings choose
        require(cfg.export.long_audio_minutes > 0, "export.long_audio_minutes", cfg.export.long_audio_minutes,
                "> 0 with train.continuous_candidates > 1 (its validation recordings choose)")
    require(cfg.train.continuous_hard_negative_copies >= 1, "train.continuous_hard_negative_copies",
            cfg.train.continuous_hard_negative_copies, ">= 1")
    require(1 <= cfg.train.continuous_chain <= 16, "train.continuous_chain", cfg.train.continuous_chain, "1..16 (1 = off)")
    require(0 <= cfg.train.continuous_floor_probability <= 1, "train.continuous_floor_probability",
            cfg.train.continuous_floor_probability, "0..1")
    require(0 <= cfg.train.continuous_label_smoothing < 1, "train.continuous_label_smoothing",
            cfg.train.continuous_label_smoothing, "0 <= s < 1 (0 = off)")
    require(cfg.train.continuous_batch_size >= 1, "train.continuous_batch_size", cfg.train.continuous_batch_size, ">= 1")
    require(1.5 <= cfg.train.continuous_seconds <= 10, "train.continuous_seconds", cfg.train.continuous_seconds,
            "1.5..10 (a word and the time after it)")
    require(cfg.dataset.version in (1, 2), "dataset.version", cfg.dataset.version, "1 or 2")
    labels = cfg.task.labels
    require(isinstance(labels, list) or labels in (12, 35), "task.labels", labels, "12, 35 or a list of labels")
    for key in ("silence_percentage", "unknown_percentage", "training_unknown_percentage", "fragment_percentage",
                "speech_percentage", "validation_percentage", "testing_percentage"):
        value = getattr(cfg.task, key)
        require(0 <= value < 100, f"task.{key}", value, "0..100")
    require(0 <= cfg.augment.noise_probability <= 1, "augment.noise_probability", cfg.augment.noise_probability, "0..1")
    require(cfg.augment.copies >= 0, "augment.copies", cfg.augment.copies, ">= 0")
    require(0 <= cfg.augment.context_probability <= 1, "augment.context_probability", cfg.augment.context_probability, "0..1")
    sy = cfg.synth
    require(0 < sy.rate_min <= sy.rate_max, "synth.rate_max", sy.rate_max, f"rate_min={sy.rate_min} <= rate_max, both > 0")
    require(0 <= sy.pitch_min <= sy.pitch_max <= 100, "synth.pitch_max", sy.pitch_max,
            f"pitch_min={sy.pitch_min} <= pitch_max <= 100, pitch_min >= 0")
    require(cfg.synth.speech_per_speaker >= 0, "synth.speech_per_speaker", cfg.synth.speech_per_speaker, ">= 0")
    require(cfg.synth.accent_speech_per_speaker >= 0, "synth.accent_speech_per_speaker",
            cfg.synth.accent_speech_per_speaker, ">= 0")
    require(cfg.export.long_audio_validation_recordings >= 1, "export.long_audio_validation_recordings",
            cfg.export.long_audio_validation_recordings, ">= 1")
    require(cfg.export.long_audio_quiet_recordings >= 0, "export.long_audio_quiet_recordings",
            cfg.export.long_audio_quiet_recordings, ">= 0")
    require(cfg.export.long_audio_words in ("held-out", "base"), "export.long_audio_words", cfg.export.long_audio_words,
            "held-out or base")
    require(cfg.synth.phrases_per_speaker >= 0, "synth.phrases_per_speaker", cfg.synth.phrases_per_speaker, ">= 0")
    require(0 <= cfg.synth.phrase_take_probability <= 1, "synth.phrase_take_probability",
            cfg.synth.phrase_take_probability, "0..1")
    require(0 <= cfg.synth.training_phrase_take_probability <= 1, "synth.training_phrase_take_probability",
            cfg.synth.training_phrase_take_probability, "0..1")
    a = cfg.augment
    for name in ("speed", "stretch", "pitch", "vtlp", "tilt", "reverb", "gain", "mel_warp", "mel_blur", "mel_eq"):
        key = f"{name}_probability"
        require(0 <= getattr(a, key) <= 1, f"augment.{key}", getattr(a, key), "0..1")
    for key, low, high in (("speed_factor", 0.5, 2.0), ("stretch_rate", 0.5, 2.0), ("pitch_semitones", -12.0, 12.0),
                           ("vtlp_alpha", 0.7, 1.4), ("mel_warp_alpha", 0.7, 1.4), ("tilt_db_per_octave", -12.0, 12.0),
                           ("reverb_rt60_s", 0.05, 3.0), ("reverb_drr_db", -20.0, 40.0), ("noise_snr_db", -20.0, 60.0),
                           ("gain_db", -40.0, 40.0)):
        value = getattr(a, key)
        if value is not None:
            ok = len(value) == 2 and low <= value[0] <= value[1] <= high
            require(ok, f"augment.{key}", value, f"[low, high] with {low} <= low <= high <= {high}")
    require(0 <= a.mel_eq_db <= 40, "augment.mel_eq_db", a.mel_eq_db, "0..40")
    require(1 <= a.mel_eq_terms <= 16, "augment.mel_eq_terms", a.mel_eq_terms, "1..16")
    require(0 < a.mel_blur_bands <= 8, "augment.mel_blur_bands", a.mel_blur_bands, "0 < bands <= 8")
    require(0 <= a.mixup_alpha <= 4, "augment.mixup_alpha", a.mixup_alpha, "0..4 (0 = off)")
    if cfg.dataset.source == "download":
        require(cfg.dataset.url is not None, "dataset.url", None, "a http(s)://, file:// URL or a path when dataset.source is download")
