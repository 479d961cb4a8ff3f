"""pipeline/augment.py: each augmentation does what it says (measured on tiny generated audio), is the
identity when off, and is deterministic for a seed; the config keys and their range checks."""
import dataclasses

import numpy as np
import pytest
import soundfile as sf

from pipeline import augment as A
from pipeline.augment import AugmentParams
from pipeline.config import AugmentConfig, ConfigError, load_config
from pipeline.feature_spec import FeatureSpec
from pipeline.stages.features import augment_clip

SR = 16000


def burst(*, freq=1000.0, start=0.3, stop=0.7, harmonics=1, amplitude=0.3, n=SR):
    """A tone (or harmonic complex) from ``start`` to ``stop`` seconds with 10-ms ramps, silence around it."""
    t = np.arange(n) / SR
    tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    envelope = np.clip(np.minimum(t - start, stop - t) / 0.01, 0, 1)
    return (amplitude * tone * envelope).astype(np.float32)


def peak_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * SR / len(audio)


def active_span(audio, threshold=0.5):
    """(first, last) time in seconds where the 5-ms peak envelope exceeds threshold * its maximum."""
    env = np.abs(audio[:len(audio) // 80 * 80]).reshape(-1, 80).max(axis=1)
    on = np.flatnonzero(env > threshold * env.max())
    return on[0] * 80 / SR, (on[-1] + 1) * 80 / SR


def band_db(audio, lo, hi):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    return 10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].mean())


def white(seed, n=SR, scale=0.05):
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


NOISE = [white(100, n=3 * SR, scale=0.1)]
ONLY = {  # each augmentation alone, always on
    "speed": AugmentParams(speed_probability=1.0),
    "stretch": AugmentParams(stretch_probability=1.0),
    "pitch": AugmentParams(pitch_probability=1.0),
    "vtlp": AugmentParams(vtlp_probability=1.0),
    "tilt": AugmentParams(tilt_probability=1.0),
    "reverb": AugmentParams(reverb_probability=1.0),
    "noise": AugmentParams(noise_probability=1.0),
    "gain": AugmentParams(gain_probability=1.0),
}


def test_all_off_is_the_identity_and_draws_nothing():
    audio = burst(harmonics=5)
    rng = np.random.default_rng(0)
    out = A.augment(audio, rng=rng, params=AugmentParams(), noise=NOISE, sample_rate=SR)
    assert np.array_equal(out, audio)
    assert rng.random() == np.random.default_rng(0).random()  # the rng was not advanced


@pytest.mark.parametrize("name", sorted(ONLY))
def test_each_augmentation_changes_audio_and_is_deterministic(name):
    audio = burst(harmonics=5)
    params = ONLY[name]
    out = A.augment(audio, rng=np.random.default_rng(1), params=params, noise=NOISE, sample_rate=SR)
    again = A.augment(audio, rng=np.random.default_rng(1), params=params, noise=NOISE, sample_rate=SR)
    other = A.augment(audio, rng=np.random.default_rng(2), params=params, noise=NOISE, sample_rate=SR)
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.all(np.abs(out) <= 1.0)
    assert np.array_equal(out, again)
    change = np.sqrt(np.mean((out - audio) ** 2)) / np.sqrt(np.mean(audio**2))
    assert change > 0.02, f"{name} barely changed the audio ({change:.4f})"
    assert not np.array_equal(out, other)
    # off (probability 0, the rest of its settings as they were) is the identity
    off = dataclasses.replace(params, **{f"{name}_probability": 0.0})
    assert np.array_equal(A.augment(audio, rng=np.random.default_rng(1), params=off, noise=NOISE, sample_rate=SR), audio)


def test_everything_on_keeps_length_dtype_and_range():
    params = AugmentParams(**{f"{n}_probability": 1.0 for n in ONLY}, gain_db=(20.0, 20.0))  # +20 dB: must clip
    for seed in range(5):
        out = A.augment(burst(harmonics=5, amplitude=0.5), rng=np.random.default_rng(seed), params=params, noise=NOISE,
                        sample_rate=SR)
        assert out.shape == (SR,) and out.dtype == np.float32 and np.abs(out).max() == 1.0


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_scales_pitch_and_duration_by_the_factor(factor):
    audio = burst(freq=1000, start=0.3, stop=0.7)  # 0.4 s, centred
    out = A.speed_perturb(audio, factor=factor, sample_rate=SR)
    assert out.shape == audio.shape
    assert abs(peak_hz(out) - 1000 * factor) <= 3
    first, last = active_span(out)
    assert abs((last - first) - 0.4 / factor) <= 0.012
    assert abs((first + last) / 2 - 0.5) <= 0.01  # scaled about the clip's centre


@pytest.mark.parametrize("rate", [0.85, 1.15])
def test_time_stretch_scales_duration_and_keeps_pitch(rate):
    audio = burst(freq=1000, start=0.3, stop=0.7)
    out = A.time_stretch(audio, rate=rate)
    assert out.shape == audio.shape
    assert abs(peak_hz(out) - 1000) <= 3
    first, last = active_span(out)
    assert abs((last - first) - 0.4 / rate) <= 0.015
    assert abs((first + last) / 2 - 0.5) <= 0.01  # about the clip's centre


@pytest.mark.parametrize("semitones", [-3.0, 4.0])
def test_pitch_shift_moves_frequencies_by_the_semitones_and_keeps_duration(semitones):
    audio = burst(freq=1000, start=0.3, stop=0.7)
    out = A.pitch_shift(audio, semitones=semitones, sample_rate=SR)
    assert out.shape == audio.shape
    assert abs(peak_hz(out) - 1000 * 2 ** (semitones / 12)) <= 4
    first, last = active_span(out)
    assert abs((last - first) - 0.4) <= 0.015 and abs((first + last) / 2 - 0.5) <= 0.01


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_moves_frequencies_by_alpha_but_keeps_timing_and_level(alpha):
    audio = burst(freq=1000, start=0.3, stop=0.7)
    out = A.vtlp(audio, alpha=alpha, sample_rate=SR)
    assert abs(peak_hz(out) - 1000 * alpha) <= 3
    first, last = active_span(out)
    assert abs(first - 0.3) <= 0.012 and abs(last - 0.7) <= 0.012
    assert abs(20 * np.log10(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(audio**2)))) < 0.1
    # above the boundary (0.6 * Nyquist * min(alpha, 1) / alpha) the warp runs linearly to a fixed Nyquist
    high = A.vtlp(burst(freq=7000), alpha=alpha, sample_rate=SR)
    boundary = 4800 * min(alpha, 1) / alpha
    expected = 8000 - (8000 - alpha * boundary) / (8000 - boundary) * (8000 - 7000)
    assert abs(peak_hz(high) - expected) <= 5


@pytest.mark.parametrize("tilt", [-3.0, 4.0])
def test_tilt_changes_the_spectral_slope_by_the_requested_db_per_octave(tilt):
    audio = white(3)
    out = A.spectral_tilt(audio, db_per_octave=tilt, sample_rate=SR)
    # two octave bands two octaves apart: their level difference changes by 2 * tilt
    slope = ((band_db(out, 2000, 4000) - band_db(out, 500, 1000)) - (band_db(audio, 2000, 4000) - band_db(audio, 500, 1000))) / 2
    assert abs(slope - tilt) < 0.3
    assert abs(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean(audio**2)) - 1) < 1e-3  # colour, not level


def schroeder_rt60(ir, *, top_db=-5.0, bottom_db=-25.0):
    """RT60 from Schroeder backward integration: the -5..-25 dB slope of the energy decay curve (T20) x 3."""
    edc = np.cumsum(ir[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= top_db) & (edc_db >= bottom_db)
    slope = np.polyfit(np.flatnonzero(fit) / SR, edc_db[fit], 1)[0]  # dB per second
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_synthetic_rir_has_the_requested_rt60_and_drr(rt60):
    for seed in range(3):
        ir = A.synthetic_rir(rng=np.random.default_rng(seed), rt60_s=rt60, drr_db=0.0, sample_rate=SR)
        assert abs(schroeder_rt60(ir) - rt60) < 0.1 * rt60
        assert abs(np.sum(ir.astype(np.float64) ** 2) - 1) < 1e-4  # normalised
    ir = A.synthetic_rir(rng=np.random.default_rng(0), rt60_s=rt60, drr_db=9.0, sample_rate=SR)
    assert abs(10 * np.log10(ir[0] ** 2 / np.sum(ir[1:].astype(np.float64) ** 2)) - 9.0) < 0.01
    assert np.argmax(np.abs(ir)) == 0  # the direct path comes first and is the largest


def test_reverb_keeps_the_onset_and_adds_a_tail():
    audio = burst(start=0.2, stop=0.4, harmonics=5)
    ir = A.synthetic_rir(rng=np.random.default_rng(0), rt60_s=0.6, drr_db=3.0, sample_rate=SR)
    out = A.reverberate(audio, ir=ir)
    assert out.shape == audio.shape
    assert active_span(out)[0] == pytest.approx(0.2, abs=0.01)
    after = slice(int(0.45 * SR), int(0.55 * SR))  # 50-150 ms after the burst: silence before, decay after
    assert np.all(audio[after] == 0) and 10 * np.log10(np.mean(out[after] ** 2) / np.mean(audio**2)) > -40


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_noise_hits_the_snr_against_the_speech_active_power(snr):
    # half the clip is near-silence (a floor 60 dB down), which must not count as speech
    audio = burst(start=0.25, stop=0.75, harmonics=5, amplitude=0.2) + white(8, scale=1e-4)
    for noise in (NOISE, [white(7, n=SR // 3, scale=0.2)]):  # a long recording, and a short one (tiled)
        out = A.add_noise(audio, rng=np.random.default_rng(4), noise=noise, snr_db=snr, sample_rate=SR)
        added = out.astype(np.float64) - audio
        speech = np.mean(audio[int(0.26 * SR):int(0.74 * SR)].astype(np.float64) ** 2)
        assert abs(10 * np.log10(speech / np.mean(added**2)) - snr) < 0.5
    silent = np.zeros(SR, np.float32)
    assert np.array_equal(A.add_noise(silent, rng=np.random.default_rng(0), noise=NOISE, snr_db=10, sample_rate=SR), silent)


def test_gain_is_within_its_db_range():
    audio = burst(harmonics=3)
    params = AugmentParams(gain_probability=1.0, gain_db=(-6.0, -3.0))
    for seed in range(10):
        out = A.augment(audio, rng=np.random.default_rng(seed), params=params, noise=[], sample_rate=SR)
        ratio_db = 20 * np.log10(np.abs(out).max() / np.abs(audio).max())
        assert -6.0 - 1e-3 <= ratio_db <= -3.0 + 1e-3


def test_probability_is_a_share_of_clips():
    audio = burst()
    params = AugmentParams(gain_probability=0.3)
    changed = [not np.array_equal(A.augment(audio, rng=np.random.default_rng(s), params=params, noise=[], sample_rate=SR),
                                  audio) for s in range(400)]
    assert 0.22 < np.mean(changed) < 0.38


def test_params_from_config_defaults_are_off_and_snr_noise_needs_its_key():
    assert AugmentParams.from_config(AugmentConfig()) == AugmentParams()
    cfg = load_config(None, ["augment.noise_snr_db=[5, 15]", "augment.reverb_probability=0.5",
                             "augment.reverb_rt60_s=[0.3, 0.5]"])
    params = AugmentParams.from_config(cfg.augment)
    assert params.noise_probability == cfg.augment.noise_probability == 0.8
    assert params.noise_snr_db == (5.0, 15.0) and params.reverb_probability == 0.5 and params.reverb_rt60_s == (0.3, 0.5)


@pytest.mark.parametrize("setting, key", [
    ("augment.speed_factor=[1.2, 0.9]", "augment.speed_factor"),
    ("augment.vtlp_alpha=[0.9]", "augment.vtlp_alpha"),
    ("augment.stretch_rate=[0.3, 1.1]", "augment.stretch_rate"),
    ("augment.pitch_semitones=[2, -2]", "augment.pitch_semitones"),
    ("augment.pitch_probability=2", "augment.pitch_probability"),
    ("augment.reverb_probability=1.5", "augment.reverb_probability"),
    ("augment.reverb_rt60_s=[0, 0.5]", "augment.reverb_rt60_s"),
    ("augment.noise_snr_db=[10, 100]", "augment.noise_snr_db"),
    ("augment.gain_probability=-0.1", "augment.gain_probability"),
])
def test_out_of_range_augment_keys_are_one_line_naming_the_key(setting, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [setting])
    assert key in str(e.value) and "\n" not in str(e.value)


def test_features_stage_uses_snr_noise_for_words_and_keeps_the_volume_mix_for_silence(tmp_path):
    noise_file = tmp_path / "noise.wav"
    sf.write(noise_file, NOISE[0], SR)
    cfg = load_config(None, ["augment.noise_snr_db=[10, 10]", "augment.noise_probability=1.0",
                             *[f"augment.{n}_probability=0" for n in ("speed", "vtlp", "tilt")]])  # the noise alone
    kwargs = dict(spec=FeatureSpec(), noise_files=[str(noise_file)], time_shift_ms=0.0, noise_probability=1.0,
                  noise_volume=0.1, params=AugmentParams.from_config(cfg.augment))
    word = burst(start=0.25, stop=0.75, harmonics=5, amplitude=0.2)
    out = augment_clip(word, rng=np.random.default_rng(0), is_silence=False, **kwargs)
    speech = np.mean(word[int(0.26 * SR):int(0.74 * SR)].astype(np.float64) ** 2)
    assert abs(10 * np.log10(speech / np.mean((out.astype(np.float64) - word) ** 2)) - 10) < 0.5
    silence = augment_clip(np.zeros(SR, np.float32), rng=np.random.default_rng(0), is_silence=True, **kwargs)
    assert np.abs(silence).max() > 0  # volume mix: no speech to set an SNR against, noise all the same


def test_a_worker_job_with_every_augmentation_on_pickles_and_changes_the_features(tmp_path):
    """The features stage's path: the job dict travels to a spawned worker (pickle), then extract_batch."""
    import pickle

    from pipeline.stages.features import extract_batch

    clip, noise_file = tmp_path / "yes.wav", tmp_path / "noise.wav"
    sf.write(clip, burst(harmonics=5), SR)
    sf.write(noise_file, NOISE[0], SR)
    everything = ("speed", "stretch", "pitch", "vtlp", "tilt", "reverb", "gain")
    cfg = load_config(None, [f"augment.{n}_probability=1.0" for n in everything]
                      + ["augment.noise_snr_db=[10, 20]"])
    a = cfg.augment
    row = {"path": str(clip), "label": "yes", "offset": 0, "gain": 1.0, "fragment": 0}
    job = {"split": "train", "start": 0, "offset": 0, "spec": FeatureSpec().to_dict(), "rows": [row, row], "seed": 1,
           "augment": {"time_shift_ms": a.time_shift_ms, "noise_probability": a.noise_probability,
                       "noise_volume": a.noise_volume, "noise_files": [str(noise_file)],
                       "params": AugmentParams.from_config(a)}}
    clean = extract_batch(pickle.loads(pickle.dumps({**job, "version": 0})))["features"].astype(np.float32)
    first = extract_batch(pickle.loads(pickle.dumps({**job, "version": 1})))["features"].astype(np.float32)
    again = extract_batch(pickle.loads(pickle.dumps({**job, "version": 1})))["features"].astype(np.float32)
    assert first.shape == clean.shape == (2, 101, 40) and np.all(np.isfinite(first))
    assert np.array_equal(first, again)  # seeded per (seed, split, version, clip)
    assert np.abs(first - clean).mean() > 1.0  # dB: every clip changed
    assert np.abs(first[0] - first[1]).mean() > 1.0  # the same clip twice gets different draws
