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
