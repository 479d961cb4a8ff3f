"""Waveform augmentation for voice and room invariance: speed, time stretch, pitch shift, VTLP, spectral
tilt, reverb, noise at an SNR, gain.

Every function takes float32 mono audio [S] at ``sample_rate`` and returns float32 [S] (same length),
draws its randomness from the numpy Generator it is given (seeded per clip by the features stage), and
is off at probability 0. ``augment`` applies them in this order, each with its own probability:

    speed -> time stretch -> pitch shift -> VTLP -> spectral tilt -> reverb -> noise at an SNR -> gain
    -> clip to [-1, 1]

(the voice first, then the room and the microphone, then what is added in the room, then the level).
The per-clip costs in the docstrings are medians for 1-s clips at 16 kHz on one core of a shared 2-core
machine, from ``.venv/bin/python scripts/augment_cost.py`` (all six together: ~4 ms; librosa log-mel
is ~1 ms); see docs/augmentation.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

from pipeline.audio import fit_length
from pipeline.config import AugmentConfig

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentParams:
    """Probability (0 = off) and [low, high] range of each augmentation; values drawn uniformly.
    Built from the config's ``augment`` section with ``from_config`` (same key names)."""

    speed_probability: float = 0.0
    speed_factor: Range = (0.9, 1.1)
    stretch_probability: float = 0.0
    stretch_rate: Range = (0.85, 1.15)
    pitch_probability: float = 0.0
    pitch_semitones: Range = (-3.0, 3.0)
    vtlp_probability: float = 0.0
    vtlp_alpha: Range = (0.9, 1.1)
    tilt_probability: float = 0.0
    tilt_db_per_octave: Range = (-3.0, 3.0)
    reverb_probability: float = 0.0
    reverb_rt60_s: Range = (0.2, 0.8)
    reverb_drr_db: Range = (0.0, 12.0)
    noise_probability: float = 0.0
    noise_snr_db: Range = (5.0, 20.0)
    gain_probability: float = 0.0
    gain_db: Range = (-6.0, 6.0)

    @classmethod
    def from_config(cls, a: AugmentConfig) -> "AugmentParams":
        """SNR noise is on only when ``augment.noise_snr_db`` is set; then it takes ``noise_probability``
        (otherwise the features stage mixes noise by ``noise_volume``, and this noise stays off)."""
        snr = a.noise_snr_db is not None
        return cls(speed_probability=a.speed_probability, speed_factor=tuple(a.speed_factor),
                   stretch_probability=a.stretch_probability, stretch_rate=tuple(a.stretch_rate),
                   pitch_probability=a.pitch_probability, pitch_semitones=tuple(a.pitch_semitones),
                   vtlp_probability=a.vtlp_probability, vtlp_alpha=tuple(a.vtlp_alpha),
                   tilt_probability=a.tilt_probability, tilt_db_per_octave=tuple(a.tilt_db_per_octave),
                   reverb_probability=a.reverb_probability, reverb_rt60_s=tuple(a.reverb_rt60_s),
                   reverb_drr_db=tuple(a.reverb_drr_db),
                   noise_probability=a.noise_probability if snr else 0.0,
                   noise_snr_db=tuple(a.noise_snr_db) if snr else cls.noise_snr_db,
                   gain_probability=a.gain_probability, gain_db=tuple(a.gain_db))


def augment(audio: np.ndarray, *, rng: np.random.Generator, params: AugmentParams, noise: list[np.ndarray],
            sample_rate: int) -> np.ndarray:
    """Apply each augmentation with its probability, in the module's order; [S] -> float32 [S] in [-1, 1].

    ``noise``: background-noise recordings [N_i] at ``sample_rate`` (empty = no noise). With every
    probability 0 this is the identity (apart from clipping to [-1, 1]) and draws nothing from ``rng``.
    """
    def on(probability: float) -> bool:
        return probability > 0 and rng.random() < probability

    def draw(bounds: Range) -> float:
        return float(rng.uniform(*bounds))

    p = params
    audio = np.asarray(audio, np.float32)
    if on(p.speed_probability):
        audio = speed_perturb(audio, factor=draw(p.speed_factor), sample_rate=sample_rate)
    if on(p.stretch_probability):
        audio = time_stretch(audio, rate=draw(p.stretch_rate))
    if on(p.pitch_probability):
        audio = pitch_shift(audio, semitones=draw(p.pitch_semitones), sample_rate=sample_rate)
    if on(p.vtlp_probability):
        audio = vtlp(audio, alpha=draw(p.vtlp_alpha), sample_rate=sample_rate)
    if on(p.tilt_probability):
        audio = spectral_tilt(audio, db_per_octave=draw(p.tilt_db_per_octave), sample_rate=sample_rate)
    if on(p.reverb_probability):
        ir = synthetic_rir(rng=rng, rt60_s=draw(p.reverb_rt60_s), drr_db=draw(p.reverb_drr_db), sample_rate=sample_rate)
        audio = reverberate(audio, ir=ir)
    if noise and on(p.noise_probability):
        audio = add_noise(audio, rng=rng, noise=noise, snr_db=draw(p.noise_snr_db), sample_rate=sample_rate)
    if on(p.gain_probability):
        audio = audio * np.float32(10 ** (draw(p.gain_db) / 20))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


# ---- voice --------------------------------------------------------------------------------------

def speed_perturb(audio: np.ndarray, *, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together, like Kaldi's speed perturbation): the clip
    is resampled as if it had been recorded at ``factor * sample_rate``, then centre-cropped or padded
    back to [S], so content scales about the clip's centre. soxr (MQ): ~0.3 ms."""
    import soxr  # librosa's resampler

    out = soxr.resample(audio, sample_rate * factor, sample_rate, quality="MQ").astype(np.float32)
    return centre_fit(out, len(audio))


def time_stretch(audio: np.ndarray, *, rate: float) -> np.ndarray:
    """Play ``rate`` times faster with the pitch kept, centre-cropped or padded back to [S]: other voices talk
    faster or slower without a higher or lower voice, and pitch and tempo tools leave a phase vocoder's sound on
    a recording. ~3.5 ms (measured with other work on the machine)."""
    return centre_fit(_stretched(audio, rate), len(audio))


def pitch_shift(audio: np.ndarray, *, semitones: float, sample_rate: int) -> np.ndarray:
    """Raise the pitch, and the formants with it, by ``semitones`` with the tempo kept: stretched to
    ``ratio`` times the length, then resampled back to it (played ``ratio`` times faster). ~7 ms (as above)."""
    import soxr

    ratio = 2.0 ** (semitones / 12)
    out = soxr.resample(_stretched(audio, 1 / ratio), sample_rate * ratio, sample_rate, quality="MQ")
    return centre_fit(out.astype(np.float32), len(audio))


def _stretched(audio: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """``audio`` ``rate`` times faster, pitch kept: librosa's phase vocoder on this module's 32-ms STFT
    (librosa's own time_stretch uses 128 ms). [S] -> [round(S / rate)]."""
    import librosa

    stretched = librosa.phase_vocoder(librosa.stft(audio, n_fft=n_fft, hop_length=hop), rate=rate, hop_length=hop)
    return librosa.istft(stretched, hop_length=hop, length=int(round(len(audio) / rate))).astype(np.float32)


def vtlp(audio: np.ndarray, *, alpha: float, sample_rate: int, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) on the waveform: the STFT frequency axis is
    warped by f -> alpha*f up to a boundary, then linearly so Nyquist stays put; magnitudes are
    interpolated and phases advanced at the warped frequencies (a phase vocoder), then inverse STFT; the
    RMS is restored. Formants and pitch move together by ``alpha``; timing is unchanged. n_fft must be a
    multiple of hop. ~1.9 ms per 1-s clip."""
    nyquist = sample_rate / 2
    boundary = 0.6 * nyquist * min(alpha, 1.0) / alpha  # 4800 Hz * min(alpha, 1) / alpha at 16 kHz, as in the paper
    knots_in, knots_out = [0.0, boundary, nyquist], [0.0, alpha * boundary, nyquist]
    spec = _stft(audio, n_fft, hop)  # [T, F]
    magnitude, angle = np.abs(spec), np.angle(spec)
    bins = np.arange(spec.shape[1])
    bin_hz = sample_rate / n_fft
    source = np.interp(bins * bin_hz, knots_out, knots_in) / bin_hz  # fractional source bin of each target bin
    lo = np.minimum(source.astype(int), len(bins) - 2)
    frac = source - lo
    magnitude = magnitude[:, lo] * (1 - frac) + magnitude[:, lo + 1] * frac
    # phase vocoder: the true frequency of each source bin from its phase advance, warped, re-accumulated
    nearest = np.rint(source).astype(int)
    angle = angle[:, nearest]
    expected = 2 * np.pi * hop * nearest / n_fft
    advance = expected + _wrap(np.diff(angle, axis=0) - expected)  # radians per hop
    warped = 2 * np.pi * hop / sample_rate * np.interp(advance * sample_rate / (2 * np.pi * hop), knots_in, knots_out)
    phase = _wrap(angle[0] + np.concatenate([np.zeros((1, len(bins))), np.cumsum(warped, axis=0)]))
    phase = phase.astype(np.float32)  # float32 sin/cos are SIMD in numpy, ~15x faster than float64 here
    out = _istft(magnitude * np.cos(phase) + 1j * (magnitude * np.sin(phase)), n_fft, hop, len(audio))
    return _match_rms(out, audio)  # the warp squeezes or spreads spectral energy: keep the level


# ---- room and microphone ------------------------------------------------------------------------

def spectral_tilt(audio: np.ndarray, *, db_per_octave: float, sample_rate: int, ref_hz: float = 1000.0,
                  floor_hz: float = 100.0) -> np.ndarray:
    """Tilt the spectrum by ``db_per_octave`` about ``ref_hz`` (gain = tilt * log2(f / ref_hz) dB, flat
    below ``floor_hz``): microphones, phones and rooms colour speech. Zero-phase, applied with one FFT
    (zero-padded, so no wrap-around); the RMS is restored so this changes colour, not level. ~0.4 ms."""
    n = scipy.fft.next_fast_len(len(audio) + 2048)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    gain_db = db_per_octave * np.log2(np.maximum(freqs, floor_hz) / ref_hz)
    out = scipy.fft.irfft(scipy.fft.rfft(audio, n) * 10 ** (gain_db / 20), n)[:len(audio)]
    return _match_rms(out, audio)


def synthetic_rir(*, rng: np.random.Generator, rt60_s: float, drr_db: float, sample_rate: int,
                  early_reflections: int = 6) -> np.ndarray:
    """A synthetic room impulse response [L], L = rt60_s * sample_rate (the tail is 60 dB down there).

    Direct path: a unit impulse at sample 0. Early reflections: ``early_reflections`` impulses of random
    sign and size at 1-20 ms, carrying a third of the reverberant energy. Late reverberation: Gaussian
    noise from 2 ms under an amplitude envelope exp(-6.91 t / rt60_s), so its energy falls 60 dB in
    rt60_s (the diffuse-field model). Reflections + tail are scaled so that direct / reverberant energy
    is ``drr_db``; the response is then normalised to unit energy, so a broadband clip keeps its level.
    """
    n = max(int(rt60_s * sample_rate), int(0.025 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-3 * np.log(10) * t / rt60_s)
    tail[:int(0.002 * sample_rate)] = 0.0
    reverberant = tail / np.sqrt(np.sum(tail**2))
    if early_reflections:
        early = np.zeros(n)
        delays = rng.integers(int(0.001 * sample_rate), int(0.020 * sample_rate), size=early_reflections)
        np.add.at(early, delays, rng.choice([-1.0, 1.0], early_reflections) * rng.uniform(0.3, 1.0, early_reflections))
        reverberant = np.sqrt(2 / 3) * reverberant + np.sqrt(1 / 3) * early / np.sqrt(np.sum(early**2))
    ir = reverberant * np.sqrt(10 ** (-drr_db / 10) / np.sum(reverberant**2))  # the direct path's energy is 1
    ir[0] = 1.0
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def reverberate(audio: np.ndarray, *, ir: np.ndarray) -> np.ndarray:
    """Convolve with an impulse response whose direct path is at sample 0, keeping the first [S] samples
    (the word stays where it was; the tail past the clip is dropped). With ``synthetic_rir``, RT60
    0.2-0.8 s: ~0.8 ms."""
    return scipy.signal.fftconvolve(audio, ir)[:len(audio)].astype(np.float32)


# ---- added sound and level ----------------------------------------------------------------------

def active_power(audio: np.ndarray, *, sample_rate: int, frame_ms: float = 20.0, range_db: float = 40.0) -> float:
    """Mean power of the active frames: 20-ms frames within ``range_db`` of the loudest one (so the
    silence around a word does not lower the speech level an SNR is measured against). 0 for silence."""
    frame = max(1, int(sample_rate * frame_ms / 1000))
    count = max(1, len(audio) // frame)
    power = np.mean(fit_length(audio.astype(np.float64), count * frame).reshape(count, frame) ** 2, axis=1)
    if power.max() <= 0:
        return 0.0
    return float(power[power >= power.max() * 10 ** (-range_db / 10)].mean())


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample piece of a noise recording (tiled when the recording is shorter)."""
    if len(noise) <= length:
        return fit_length(np.tile(noise, length // max(1, len(noise)) + 1), length)
    start = int(rng.integers(0, len(noise) - length))
    return noise[start:start + length]


def add_noise(audio: np.ndarray, *, rng: np.random.Generator, noise: list[np.ndarray], snr_db: float,
              sample_rate: int) -> np.ndarray:
    """Add a random piece of a random noise recording at ``snr_db``: speech active power (see
    ``active_power``) over the noise piece's mean power. Silent audio or silent noise: unchanged. ~0.1 ms."""
    piece = noise_segment(noise[int(rng.integers(len(noise)))], len(audio), rng).astype(np.float64)
    speech, noise_power = active_power(audio, sample_rate=sample_rate), float(np.mean(piece**2))
    if speech <= 0 or noise_power <= 0:
        return audio
    scale = np.sqrt(speech / (noise_power * 10 ** (snr_db / 10)))
    return (audio + scale * piece).astype(np.float32)


# ---- helpers ------------------------------------------------------------------------------------

def centre_fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad equally on both sides to ``length`` samples."""
    if len(audio) >= length:
        start = (len(audio) - length) // 2
        return audio[start:start + length]
    before = (length - len(audio)) // 2
    return np.pad(audio, (before, length - len(audio) - before))


def _match_rms(audio: np.ndarray, reference: np.ndarray) -> np.ndarray:
    rms, target = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(reference.astype(np.float64) ** 2))
    return (audio * (target / rms if rms > 0 else 1.0)).astype(np.float32)


def _wrap(phase: np.ndarray) -> np.ndarray:
    """Phase wrapped to [-pi, pi] (rint is much faster than float %)."""
    return phase - 2 * np.pi * np.rint(phase / (2 * np.pi))


_WINDOWS: dict[int, np.ndarray] = {}


def _window(n_fft: int) -> np.ndarray:
    if n_fft not in _WINDOWS:
        _WINDOWS[n_fft] = scipy.signal.get_window("hann", n_fft)
    return _WINDOWS[n_fft]


def _stft(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed STFT of the zero-padded clip (n_fft/2 each side, end padded to whole hops): [T, n_fft/2+1]."""
    extra = (-(len(audio))) % hop
    padded = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2 + extra))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return scipy.fft.rfft(frames * _window(n_fft), axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of ``_stft``: [T, F] -> float32 [length]. Needs n_fft % hop == 0: frames
    are added as n_fft/hop shifted blocks of hop samples (vectorised, no loop over frames)."""
    window, parts = _window(n_fft), n_fft // hop
    frames = (scipy.fft.irfft(spec, n_fft, axis=1) * window).reshape(len(spec), parts, hop)
    out = np.zeros((len(spec) + parts - 1, hop))
    weight = np.zeros_like(out)
    for j in range(parts):
        out[j:j + len(spec)] += frames[:, j]
        weight[j:j + len(spec)] += window[j * hop:(j + 1) * hop] ** 2
    out = out.reshape(-1) / np.maximum(weight.reshape(-1), 1e-8)
    return out[n_fft // 2:n_fft // 2 + length].astype(np.float32)
