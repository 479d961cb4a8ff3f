"""Streaming equals non-streaming, fast: a tiny GRU on a few frames, the export's streaming step driven by
the edge runtime's hop loop (no TFLite conversion here; the end-to-end tests run the converted models)."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline.edge.runtime import SplitStreamingStep, StreamGeometry, stream_clip
from pipeline.feature_spec import FeatureSpec
from pipeline.frontend import clip_logmel
from pipeline.model import build_model
from pipeline.stages.export import StreamingStep
from test_features import speechlike

SPEC = FeatureSpec(clip_samples=960)  # 7 frames


def eager(fn):
    """A TF function of named tensors as an edge-runtime step: dict of arrays in, dict of arrays out."""
    return lambda inputs: {name: value.numpy() for name, value in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


@pytest.fixture(scope="module")
def tiny():
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(num_frames=SPEC.num_frames, n_mels=SPEC.n_mels, num_classes=3, gru_units=[5, 4], dense_units=4,
                        dropout=0.0, mean=np.full(SPEC.n_mels, -40.0), variance=np.full(SPEC.n_mels, 400.0),
                        use_cudnn=False)
    clips = np.stack([speechlike(seed, n=SPEC.clip_samples) for seed in range(3)])
    expected = model(clip_logmel(tf.constant(clips), SPEC)).numpy()
    return model, clips, expected


def test_geometry_is_derived_from_the_spec():
    geometry = StreamGeometry.from_spec(FeatureSpec(), [64, 64])
    assert (geometry.hop, geometry.delay, geometry.buffer_len) == (160, 2, 360)
    assert list(geometry.zero_state()) == ["buffer", "warmup", "gru_0_state", "gru_1_state"]


def test_streaming_step_equals_the_clip_model(tiny):
    model, clips, expected = tiny
    step = StreamingStep(model, SPEC)
    got = np.stack([stream_clip(eager(step), step.geometry, clip) for clip in clips])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(expected - expected.mean(0)).max() > 1e-3  # the clips give different scores: not a trivial match


def test_split_frontend_and_network_equal_the_clip_model(tiny):
    model, clips, expected = tiny
    step = StreamingStep(model, SPEC)
    split = SplitStreamingStep(eager(step.frontend), eager(step.network), state_names=step.geometry.gru_state_names,
                               keep_frames=True)
    got = np.stack([stream_clip(split, step.geometry, clip) for clip in clips])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(split.frames) == len(clips) * SPEC.num_frames  # one frame per ready hop, none during warm-up


def test_verify_batched_windows_equal_the_staggered_streams(tiny):
    """verify scores hours of audio in batches with the Keras model; the edge runtime's staggered
    streaming states see exactly the same windows and give the same scores."""
    from pipeline.edge.detection import WindowScorer, window_time_s
    from pipeline.stages.verify import window_scores

    model, _, _ = tiny
    step = StreamingStep(model, SPEC)
    hops_per_window, streams = SPEC.clip_samples // SPEC.hop_length, 3
    stride = hops_per_window // streams * SPEC.hop_length
    audio = np.concatenate([speechlike(seed, n=SPEC.clip_samples) for seed in range(4)] + [np.zeros(500, np.float32)])
    ends, scores = window_scores(model, SPEC, audio, window_samples=SPEC.clip_samples, stride_samples=stride,
                                 hop=SPEC.hop_length)
    scorer = WindowScorer(eager(step), step.geometry, window_samples=SPEC.clip_samples, streams=streams,
                          sample_rate=SPEC.sample_rate)
    streamed = [w for start in range(0, len(audio) // SPEC.hop_length * SPEC.hop_length, SPEC.hop_length)
                for w in scorer.push(audio[start:start + SPEC.hop_length])]
    assert [t for t, _ in streamed] == [window_time_s(end, SPEC.clip_samples, SPEC.sample_rate) for end in ends]
    assert len(ends) > 10
    np.testing.assert_allclose(np.stack([s for _, s in streamed]), scores, atol=1e-5)


def test_verify_continuous_scores_equal_the_one_state_stream(tiny):
    """The continuous design: verify runs the Keras sequence model (every GRU returning sequences, one
    state carried over from chunk to chunk) on the log-mel of the whole recording; the edge runtime feeds
    the export's streaming step, built from the same weights, one hop at a time and never resets it. The
    frames the detector reads, and their scores, are the same."""
    from pipeline.continuous import continuous_scores, decisions, sequence_model
    from pipeline.edge.detection import ContinuousScorer

    model, _, _ = tiny
    sequence = sequence_model(model, stateful_batch=1)
    step = StreamingStep(sequence, SPEC)  # the export's step takes the sequence model's weights by layer name
    audio = np.concatenate([speechlike(seed, n=SPEC.clip_samples) for seed in range(4)] + [np.zeros(500, np.float32)])
    whole_hops, stride = len(audio) // SPEC.hop_length, 3
    frames, expected = decisions(continuous_scores(sequence, [audio], SPEC)[0], stride_hops=stride,
                                 delay=step.geometry.delay, whole_hops=whole_hops)
    scorer = ContinuousScorer(eager(step), step.geometry, stride_hops=stride, sample_rate=SPEC.sample_rate)
    streamed = [d for k in range(whole_hops) for d in scorer.push(audio[k * SPEC.hop_length:(k + 1) * SPEC.hop_length])]
    assert [t for t, _ in streamed] == list(frames * SPEC.hop_length / SPEC.sample_rate) and len(frames) >= 8
    np.testing.assert_allclose(np.stack([s for _, s in streamed]), expected, atol=1e-5)
    assert np.abs(expected - expected.mean(0)).max() > 1e-3  # the scores move: not a trivial match
    # verify scores its two recordings side by side, one batch row each: the same as one at a time
    shorter = audio[:2300]
    together = continuous_scores(sequence_model(model, stateful_batch=2), [audio, shorter], SPEC)
    for got, alone in zip(together, (audio, shorter)):
        np.testing.assert_allclose(got, continuous_scores(sequence, [alone], SPEC)[0], atol=1e-6)


def sounds_and_pauses(seed: int, count: int, sr: int = 16000) -> np.ndarray:
    """Bursts of tones (0.25 s) and pauses (0.3-0.5 s) over a constant noise floor 40 dB down."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(count):
        t = np.arange(int(0.25 * sr)) / sr
        tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 3000, 3)) * np.hanning(len(t))
        parts += [0.1 * tone, np.zeros(int(rng.uniform(0.3, 0.5) * sr))]
    audio = np.concatenate(parts)
    return (audio + 0.001 * rng.standard_normal(len(audio))).astype(np.float32)


def test_pause_switch_streaming_equals_verify_chains():
    """With the pause switch, the edge runtime runs a second state from each pause and lets it take over at
    the next sound; verify scores each such state as a chain of frames from the zero state. Same frames
    read, same scores; and the switch changes them (a fresh state is not the carried one)."""
    from pipeline.continuous import continuous_scores, decisions, sequence_model, stream_logmel, switched_scores
    from pipeline.edge.detection import ContinuousScorer, DetectionParams, switch_events

    import keras

    keras.utils.set_random_seed(4)
    model = build_model(num_frames=SPEC.num_frames, n_mels=SPEC.n_mels, num_classes=3, gru_units=[5, 4], dense_units=4,
                        dropout=0.0, mean=np.full(SPEC.n_mels, -40.0), variance=np.full(SPEC.n_mels, 400.0),
                        use_cudnn=False)
    for layer in model.layers:  # update gates near 1: states that remember past a pause, as trained ones do
        if isinstance(layer, keras.layers.GRU):
            kernel, recurrent, bias = layer.get_weights()
            bias[..., :layer.units] += 2.0
            layer.set_weights([kernel, recurrent, bias])
    params = DetectionParams(design="continuous", pause_frames=8, pause_floor_frames=101)
    step = StreamingStep(sequence_model(model, stateful_batch=1), SPEC)
    audio = sounds_and_pauses(0, 6)
    whole_hops, stride = len(audio) // SPEC.hop_length, 3
    events = switch_events(np.concatenate(list(stream_logmel(audio, SPEC))), params)
    starts = [f for f, e in events if e == "start"]
    takeovers = [f for f, e in events if e == "take over"]
    # a fresh state starts in each of the pauses and takes over at the next burst (the last pause has none)
    assert len(starts) == 6 and len(takeovers) == 5
    assert all(s < t for s, t in zip(starts, takeovers)) and all(t < s for t, s in zip(takeovers, starts[1:]))
    loud = np.flatnonzero(np.abs(audio) > 0.02) / 16000  # where the bursts are
    for f in takeovers:  # each takeover lies at the start of a burst: within 50 ms of its first loud sample
        t = f * SPEC.hop_length / 16000
        assert abs(t - loud[loud > t - 0.3].min()) <= 0.05
    frames, expected = decisions(switched_scores(sequence_model(model), audio, SPEC, params, delay=step.geometry.delay),
                                 stride_hops=stride, delay=step.geometry.delay, whole_hops=whole_hops)
    scorer = ContinuousScorer(eager(step), step.geometry, stride_hops=stride, sample_rate=SPEC.sample_rate, params=params)
    streamed = [d for k in range(whole_hops) for d in scorer.push(audio[k * SPEC.hop_length:(k + 1) * SPEC.hop_length])]
    assert [t for t, _ in streamed] == list(frames * SPEC.hop_length / SPEC.sample_rate)
    np.testing.assert_allclose(np.stack([s for _, s in streamed]), expected, atol=1e-5)
    _, carried = decisions(continuous_scores(sequence_model(model, stateful_batch=1), [audio], SPEC)[0],
                           stride_hops=stride, delay=step.geometry.delay, whole_hops=whole_hops)
    assert np.abs(carried - expected).max() > max(1e-3, 0.2 * np.ptp(expected, axis=0).max())  # 600x the tolerance
