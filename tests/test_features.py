"""The one feature definition (librosa log-mel), audio loading, and bad audio."""
import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import AudioError, audio_blocks, fit_length, load_audio, resample_hq
from pipeline.feature_spec import FeatureSpec, librosa_logmel, logmel
from pipeline.frontend import power_error

SPEC = FeatureSpec()


def speechlike(seed=0, n=16000, sr=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1) for k, f in enumerate(rng.uniform(100, 3000, 6)))
    envelope = np.exp(-((t - rng.uniform(0.3, 0.7)) ** 2) / 0.02)
    return (0.3 * tone * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_librosa_logmel_is_a_direct_librosa_call():
    import librosa

    audio = speechlike()
    mel = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, hop_length=160, win_length=400,
                                         center=True, pad_mode="constant", n_mels=40, fmin=20, fmax=7600)
    expected = 10 * np.log10(np.maximum(mel, 1e-10)).T
    got = librosa_logmel(audio, SPEC)
    assert got.shape == (101, 40) == SPEC.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("spec", [SPEC, FeatureSpec(n_fft=400, win_length=400), FeatureSpec(n_fft=1024, win_length=480,
                                                                                            hop_length=240, n_mels=64)])
def test_the_float32_logmel_equals_librosa_to_float_rounding(spec):
    """The fast path (training, predict) against librosa: mel-power error ~1e-6 of the frame peak, as
    float32 against float64 FFTs give; a one-sample framing or window slip would be ~0.1."""
    rng = np.random.default_rng(1)
    audio = np.stack([speechlike(s) for s in range(4)] + [0.2 * rng.standard_normal(16000).astype(np.float32),
                                                          np.zeros(16000, np.float32)])
    got, ref = logmel(audio, spec), librosa_logmel(audio, spec)
    assert got.shape == ref.shape == (6, *spec.shape) and got.dtype == np.float32
    assert power_error(got, ref).max() < 1e-5
    assert np.abs(got[-1] - ref[-1]).max() == 0.0  # silence hits the floor in both


def test_logmel_batched_equals_one_clip_at_a_time():
    batch = np.stack([speechlike(s) for s in range(3)])
    np.testing.assert_allclose(logmel(batch, SPEC), np.stack([logmel(c, SPEC) for c in batch]), atol=1e-4)


def test_logmel_has_no_per_clip_normalization():
    """Streaming-compatible: a quieter clip gives features lower by exactly 20*log10(gain) dB."""
    audio = speechlike()
    diff = logmel(audio, SPEC) - logmel(audio * 0.1, SPEC)
    loud = logmel(audio * 0.1, SPEC) > -90
    np.testing.assert_allclose(diff[loud], 20.0, atol=1e-3)


def test_logmel_rejects_wrong_length():
    with pytest.raises(ValueError, match="clip_samples"):
        logmel(np.zeros(8000, np.float32), SPEC)


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 1), (16000, 2)])
def test_load_audio_resamples_and_mixes_down(tmp_path, rate, channels):
    audio = speechlike(n=rate, sr=rate)
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    path = tmp_path / "x.wav"
    sf.write(path, data, rate)
    out = load_audio(path, sample_rate=16000)
    assert out.dtype == np.float32 and out.ndim == 1 and abs(len(out) - 16000) <= 1


@pytest.mark.parametrize("orig_sr, target_sr, n", [(22050, 16000, 11025), (44100, 16000, 4410), (8000, 16000, 801),
                                                    (16000, 16000, 100)])
def test_resample_hq_is_librosa_soxr_hq_without_librosa(orig_sr, target_sr, n):
    import librosa

    audio = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.3
    expected = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    out = resample_hq(audio, orig_sr=orig_sr, target_sr=target_sr)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("content, kwargs, message", [
    (None, {}, "empty audio"),
    (b"this is not audio", {}, "not a readable audio file"),
    ("rate", {"resample": False}, "sample rate 8000 Hz, expected 16000"),
    ("stereo", {"mixdown": False}, "2 channels, expected mono"),
])
def test_bad_audio_is_one_line_naming_the_file(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.wav"
    if content is None:
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif content == "rate":
        sf.write(path, np.zeros(800, np.float32), 8000)
    elif content == "stereo":
        sf.write(path, np.zeros((800, 2), np.float32), 16000)
    else:
        path.write_bytes(content)
    with pytest.raises(AudioError) as e:
        load_audio(path, sample_rate=16000, **kwargs)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_fit_length_pads_and_crops():
    assert fit_length(np.ones(10, np.float32), 16).tolist() == [1] * 10 + [0] * 6
    assert fit_length(np.arange(20, dtype=np.float32), 16).tolist() == list(range(16))


def test_word_fragment_keeps_only_the_head_or_the_tail_of_the_word():
    from pipeline.dataset import word_fragment

    audio = np.zeros(16000, np.float32)
    audio[4000:12000] = 0.5  # an 0.5-s "word"
    seen = set()
    for seed in range(20):
        frag = word_fragment(audio, seed=seed)
        kept = np.flatnonzero(frag)
        assert 0.25 * 8000 - 1 <= kept.size <= 0.5 * 8000 + 1
        assert kept[0] == 4000 or kept[-1] == 11999
        seen.add("head" if kept[0] == 4000 else "tail")
        np.testing.assert_array_equal(frag, word_fragment(audio, seed=seed))  # deterministic
    assert seen == {"head", "tail"}


def test_load_audio_reads_a_piece_without_the_rest(tmp_path):
    x = (0.5 * np.sin(np.arange(48000) / 10)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", x, 8000, subtype="FLOAT")
    full = load_audio(tmp_path / "a.wav", sample_rate=16000)
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", sample_rate=16000, start=1000, frames=500), full[1000:1500])
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav", sample_rate=16000, start=47990, frames=500), full[47990:])
    assert load_audio(tmp_path / "a.wav", sample_rate=16000, start=60000, frames=500).size == 0  # past the end
    resampled = load_audio(tmp_path / "b.wav", sample_rate=16000)  # other rates: cut after resampling
    np.testing.assert_array_equal(load_audio(tmp_path / "b.wav", sample_rate=16000, start=1000, frames=500),
                                  resampled[1000:1500])
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav", sample_rate=16000, start=100, frames=10)


def test_a_file_damaged_partway_is_one_line_after_the_blocks_before_it(tmp_path):
    """A cut-off FLAC (a download that stopped) opens fine and fails in its middle: the blocks before the
    damage come out, then one line naming the file and where."""
    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    sf.write(tmp_path / "whole.flac", x, 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[:len(data) // 2])
    blocks = []
    with pytest.raises(AudioError) as e:
        for block in audio_blocks(cut, sample_rate=16000, block_seconds=5.0):
            blocks.append(block)
    assert str(cut) in str(e.value) and "unreadable after" in str(e.value) and "\n" not in str(e.value)
    assert 1 <= len(blocks) < 6
    np.testing.assert_allclose(np.concatenate(blocks), x[:sum(map(len, blocks))], atol=1e-4)  # FLAC is 16-bit
