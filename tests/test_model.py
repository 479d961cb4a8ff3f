"""The model module: cuDNN eligibility report, require_cudnn, mixed precision output dtype."""
import keras
import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.model import build_model, cudnn_blockers, fold_towers
from pipeline.stages.train import cudnn_report

ARGS = dict(num_frames=101, n_mels=40, num_classes=12, gru_units=[16, 16], dense_units=8, dropout=0.1)


def test_default_model_is_cudnn_eligible_and_reports_it():
    model = build_model(**ARGS)
    blockers = cudnn_blockers(model)
    assert list(blockers) == ["gru_0", "gru_1"] and not any(blockers.values())
    assert all("cuDNN-eligible" in line for line in cudnn_report(blockers, gpu=True, require=True))


def test_require_cudnn_names_the_offending_setting():
    with pytest.raises(ConfigError, match=r"gru_1 can't use the cuDNN kernel: reset_after=False"):
        cudnn_report({"gru_0": [], "gru_1": ["reset_after=False (cuDNN needs True)"]}, gpu=True, require=True)
    with pytest.raises(ConfigError, match="no GPU visible"):
        cudnn_report({"gru_0": []}, gpu=False, require=True)
    assert "NOT cuDNN-eligible" in cudnn_report({"gru_0": ["unroll=True"]}, gpu=True, require=False)[0]


def test_use_cudnn_false_is_reported_as_a_blocker():
    assert cudnn_blockers(build_model(**ARGS, use_cudnn=False))["gru_0"] == ["use_cudnn=False"]


def _geometric_mean(probs: list[np.ndarray]) -> np.ndarray:
    mean = np.exp(np.mean(np.log(probs), axis=0))
    return mean / mean.sum(axis=-1, keepdims=True)


def test_folded_towers_score_the_geometric_mean_of_the_towers_on_clips_and_sequences():
    """model.towers: three trained-looking towers (random weights, non-zero biases) loaded into one network
    of 3x the sizes give exactly the towers' geometric-mean ensemble, for the 1-s model and its continuous
    sequence form, and no unit of the folded network reads another tower's."""
    from pipeline.continuous import sequence_model

    kw = dict(num_frames=21, n_mels=8, num_classes=5, dropout=0.1, mean=np.arange(8.0), variance=np.arange(1.0, 9.0))
    towers = []
    for k in range(3):
        keras.utils.set_random_seed(k)
        tower = build_model(gru_units=[6, 5], dense_units=4, **kw)
        rng = np.random.default_rng(k)
        tower.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in tower.get_weights()])
        towers.append(tower)
    folded = fold_towers(towers, build_model(gru_units=[18, 15], dense_units=12, **kw))
    x = np.random.default_rng(9).normal(size=(7, 21, 8)).astype(np.float32)
    ensemble = _geometric_mean([t.predict(x, verbose=0) for t in towers])
    np.testing.assert_allclose(folded.predict(x, verbose=0), ensemble, atol=1e-6)
    assert not np.allclose(towers[0].predict(x, verbose=0), ensemble, atol=1e-3)  # the towers do differ
    recurrent = folded.get_layer("gru_1").get_weights()[1]  # [15, 3 * 15]: tower k's rows feed only its columns
    for gate in np.split(recurrent, 3, axis=1):
        assert not gate[:5, 5:].any() and not gate[5:10, :5].any() and gate[:5, :5].any()

    sequences = [sequence_model(t) for t in towers]
    folded_sequence = fold_towers(sequences, sequence_model(folded))
    long = np.random.default_rng(3).normal(size=(2, 40, 8)).astype(np.float32)
    np.testing.assert_allclose(folded_sequence.predict(long, verbose=0),
                               _geometric_mean([s.predict(long, verbose=0) for s in sequences]), atol=1e-6)


def test_towers_must_share_their_normalization():
    base = dict(num_frames=5, n_mels=4, num_classes=3, gru_units=[3, 3], dense_units=2, dropout=0.0)
    towers = [build_model(**base), build_model(**base)]
    with pytest.raises(ValueError, match="normalize"):
        fold_towers(towers, build_model(**{**base, "gru_units": [6, 6], "dense_units": 4}, mean=np.ones(4)))


def test_mixed_float16_keeps_float32_scores():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(**ARGS)
        out = model(np.zeros((2, 101, 40), np.float32))
        assert model.get_layer("gru_0").compute_dtype == "float16"
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, atol=1e-5)
        assert not any(cudnn_blockers(model).values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_normalization_uses_train_statistics():
    mean, var = np.linspace(-50, 0, 40), np.linspace(1, 100, 40)
    model = build_model(**ARGS, mean=mean, variance=var)
    x = np.broadcast_to(mean, (1, 101, 40)).astype(np.float32)
    normalized = model.get_layer("normalize")(x)
    np.testing.assert_allclose(np.asarray(normalized), 0.0, atol=1e-5)


class _Fixed:
    """A stand-in classifier whose scores depend on the window's loudness: loud windows score 'yes'."""

    def __init__(self, labels):
        self.labels = labels

    def predict(self, x, batch_size=None, verbose=0):
        out = np.zeros((len(x), len(self.labels)), np.float32)
        loud = x.max(axis=(1, 2)) > -20
        out[loud, self.labels.index("yes")] = 0.9
        out[~loud, self.labels.index("_unknown_")] = 0.9
        return out


def test_hard_negative_mining_keeps_the_windows_a_keyword_fires_on(tmp_path):
    """Windows of training speakers' running speech where a keyword scores >= the threshold are mined;
    held-out speakers' speech is never read."""
    import soundfile as sf

    from pipeline.config import load_config
    from pipeline.dataset import SPEECH_DIR, training_speech, which_set
    from pipeline.feature_spec import FeatureSpec
    from pipeline.stages.train import mine_hard_negatives

    cfg = load_config(None, [f"paths.data={tmp_path}", "train.hard_negative_hop_ms=250", "train.hard_negative_threshold=0.5"])
    folder = cfg.dataset_dir / SPEECH_DIR
    folder.mkdir(parents=True)
    t = np.arange(48000) / 16000
    speech = np.where((t > 1.0) & (t < 1.5), 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)  # 3 s, one loud part
    for n in range(12):
        sf.write(folder / f"{n:08x}_nohash_0.wav", speech, 16000)
    train_files = training_speech(cfg)
    assert 0 < len(train_files) < 12 and all(which_set(p.split("/")[-1], validation_percentage=10,
                                                        testing_percentage=10) == "training" for p in train_files)
    mined, scored = mine_hard_negatives(_Fixed(cfg.labels), cfg, cfg.labels)
    per_file = len(range(0, 48000 - 16000 + 1, 4000))  # 1-s windows every 250 ms
    assert scored == per_file * len(train_files)
    # windows starting 0.25-1.25 s hold some of the loud part (1.0-1.5 s): 5 of 9 per file
    spec = FeatureSpec.from_config(cfg)
    assert mined.shape == (5 * len(train_files), spec.num_frames, spec.n_mels) and mined.dtype == np.float16
    none, _ = mine_hard_negatives(_Fixed(cfg.labels), load_config(None, [f"paths.data={tmp_path}",
                                  "train.hard_negative_threshold=0.95"]), cfg.labels)
    assert len(none) == 0


def test_the_training_dataset_draws_extra_examples_alongside_the_cache():
    """Mined hard negatives (one version each) join every epoch with their own label."""
    from pipeline.stages.train import make_dataset

    cache = np.zeros((2, 6, 5, 3), np.float16)  # [versions, N, T, M]
    cache[1] += 1  # version 1 differs
    labels, rows = np.array([0, 1, 0], np.int32), np.array([0, 2, 4])
    extra = (np.full((2, 5, 3), 7, np.float16), np.array([2, 2], np.int32))
    ds = make_dataset(cache, labels, rows, num_classes=3, batch_size=4, training=True, seed=0, extra=extra)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys).argmax(1)
    assert len(x) == 5 and sorted(y.tolist()) == [0, 0, 1, 2, 2]
    assert np.all(x[y == 2] == 7) and set(np.unique(x[y != 2])) <= {0.0, 1.0}


def test_the_endless_training_dataset_gives_every_example_once_per_pass_reshuffled():
    """endless=True (what fit gets, with steps_per_epoch): one iterator for all epochs, each pass every example
    once in a fresh order, and batches that run across the pass boundary (no short last batch)."""
    from pipeline.stages.train import make_dataset

    def labels_drawn(n: int, batch: int, batches: int) -> list[np.ndarray]:
        cache = np.arange(n, dtype=np.float16).reshape(1, n, 1, 1).repeat(2, axis=2)  # [versions, N, T=2, M=1]
        ds = make_dataset(cache, np.arange(n, dtype=np.int32), np.arange(n), num_classes=n, batch_size=batch,
                          training=True, seed=0, endless=True)
        drawn = []
        for x, y in ds.take(batches):
            drawn.append(y.numpy().argmax(1))
            assert np.all(x.numpy()[:, 0, 0] == drawn[-1])  # each example keeps its label
        return drawn

    drawn = labels_drawn(10, 4, 5)  # 2 passes of 10 in batches of 4: the third batch holds both passes
    assert [len(b) for b in drawn] == [4] * 5 and np.all(np.bincount(np.concatenate(drawn), minlength=10) == 2)
    drawn = labels_drawn(8, 4, 4)  # 2 passes of 8, 2 batches each
    assert sorted(np.concatenate(drawn[:2])) == sorted(np.concatenate(drawn[2:])) == list(range(8))
    assert [set(b) for b in drawn[:2]] != [set(b) for b in drawn[2:]]  # pass 2 is drawn in another order


def test_ema_checkpoint_holds_the_averaged_weights_and_training_goes_on_from_the_raw_ones():
    """train.ema_momentum: the best-epoch checkpoint must hold the moving average (what validation scored),
    while the next epoch trains on from the raw weights."""
    from types import SimpleNamespace

    from pipeline.stages.train import ema_callbacks, ema_options

    t = SimpleNamespace(ema_momentum=0.9, distribute="none")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5, 3)).astype("float32"), keras.utils.to_categorical(rng.integers(0, 3, 64), 3)
    model = build_model(num_frames=5, n_mels=3, num_classes=3, gru_units=[4, 4], dense_units=4, dropout=0.0)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=0.05, **ema_options(t)), loss="categorical_crossentropy")
    saved, resumed = [], []

    class Snapshot(keras.callbacks.Callback):  # stands where ModelCheckpoint stands: after the swap
        def on_epoch_end(self, epoch, logs=None):
            saved.append([w.copy() for w in self.model.get_weights()])

        def on_epoch_begin(self, epoch, logs=None):
            resumed.append([w.copy() for w in self.model.get_weights()])

    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[*ema_callbacks(t), Snapshot()])
    averages = [np.asarray(v) for v in model.optimizer._model_variables_moving_average]
    trainable = {id(v) for v in model.trainable_variables}
    at_end = [w for w, v in zip(saved[-1], model.weights) if id(v) in trainable]
    for got, want in zip(at_end, averages):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # epoch 2 starts from epoch 1's raw weights, not from the average that was checkpointed
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(saved[0], resumed[1]))
    assert ema_options(SimpleNamespace(ema_momentum=0.0, distribute="none")) == {}
    assert ema_callbacks(SimpleNamespace(ema_momentum=0.0)) == []


def test_an_interrupted_training_resumes_only_under_the_same_config(tmp_path):
    """train.partial/ keeps BackupAndRestore's epochs: the same config resumes from them, another starts over."""
    from pipeline.config import load_config
    from pipeline.stages.train import work_folder_for

    work = tmp_path / "train.partial"
    cfg = load_config(None)
    work_folder_for(cfg, work)
    (work / "backup").mkdir()
    (work / "backup" / "epoch.txt").write_text("7")
    work_folder_for(cfg, work)  # the same config: the backup stays
    assert (work / "backup" / "epoch.txt").read_text() == "7"
    work_folder_for(load_config(None, ["train.learning_rate=0.01"]), work)
    assert work.is_dir() and not (work / "backup").exists()
    (work / "backup").mkdir()
    work_folder_for(load_config(None, ["augment.time_mask_width=3"]), work)  # a training-time key
    assert not (work / "backup").exists()
