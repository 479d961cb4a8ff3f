"""Train stage: the stacked GRU on the cached log-mel features.

tf.data reads the memmapped cache (one of the cached augmented versions per clip per epoch, see
features.py), applies SpecAugment, and feeds ``model.fit``. Best-validation checkpointing, early
stopping, cosine LR with warmup, CSV history, TensorBoard logs, and BackupAndRestore so an interrupted
run resumes from its last finished epoch. Meanwhile a side process makes the continuous design's sequences
and verify's benchmark recordings in the cycles the training leaves idle (pipeline/side_work.py).

Outputs in ``cfg.run_dir``: model.keras (best validation accuracy), history.csv, logs/ (TensorBoard),
train_summary.json (devices, cuDNN eligibility, parameter count, timing), and with
``train.continuous_sequences`` > 0 model_continuous.keras (the always-on design, pipeline/continuous.py).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np

from pipeline import side_work
from pipeline.config import TRAIN_KEYS, Config, ConfigError, result_values
from pipeline.dataset import load_split, load_stats
from pipeline.errors import StageError
from pipeline.io import write_text_atomic
from pipeline.model import build_from_config


def make_dataset(features: np.ndarray, labels: np.ndarray, rows: np.ndarray, *, num_classes: int, batch_size: int,
                 training: bool, seed: int, augment: dict | None = None, mean: np.ndarray | None = None,
                 extra: tuple[np.ndarray, np.ndarray] | None = None, endless: bool = False):
    """tf.data over cached features [versions, N, T, M] (rows[i] holds labels[i]) -> (float32 [B, T, M], one-hot [B, C]).

    When training: reshuffled each epoch, one random cached version per clip, then ``augment`` (``training_augment``):
    the log-mel voice augmentations under "mel" on each batch, mixup (``mixup_alpha``), and SpecAugment's masks per
    example.
    ``extra``: (features [E, T, M], labels [E]) of examples with one version (mined hard negatives),
    drawn alongside the cache's.
    ``endless`` (training only): the epochs follow one another in one iterator, so ``fit`` needs
    ``steps_per_epoch``. A one-pass dataset makes ``fit`` build a new iterator each epoch, and on 2 CPU cores
    about every other one then waited 8-10 s with the cores idle before its first batch.
    """
    import tensorflow as tf

    versions, _, frames, mels = features.shape
    extra_x, extra_y = extra if extra is not None else (np.zeros((0, frames, mels), np.float16), np.zeros(0, np.int32))
    cached = len(labels)
    labels = np.concatenate([labels, extra_y]).astype(np.int32)
    n = len(labels)
    rng = np.random.default_rng(seed)

    def gather(idx: np.ndarray):
        idx = np.sort(idx)  # sorted reads are kinder to a memmap
        main, more = idx[idx < cached], idx[idx >= cached] - cached
        version = rng.integers(versions, size=len(main)) if training else np.zeros(len(main), int)
        x = np.concatenate([features[version, rows[main]], extra_x[more]]).astype(np.float32)
        return x, labels[idx]

    ds = tf.data.Dataset.range(n)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if endless:
            ds = ds.repeat()  # reshuffled on each pass, as before
    ds = ds.batch(batch_size)
    ds = ds.map(lambda idx: tf.numpy_function(gather, [idx], [tf.float32, tf.int32]), num_parallel_calls=1)
    ds = ds.map(lambda x, y: (tf.ensure_shape(x, [None, frames, mels]), tf.one_hot(tf.ensure_shape(y, [None]), num_classes)))
    augment = dict(augment or {})
    voice = augment.pop("mel", None)
    mixup_alpha = augment.pop("mixup_alpha", 0.0)
    if training and voice is not None:
        ds = ds.map(lambda x, y: (voice(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup_alpha > 0:
        from pipeline.mel_augment import mixup

        ds = ds.map(lambda x, y: mixup(x, y, mixup_alpha), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        from pipeline.specaugment import spec_augment

        fill = tf.constant(np.asarray(mean, np.float32))
        ds = ds.unbatch().map(lambda x, y: (spec_augment(x, fill=fill, **augment), y),
                              num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def training_augment(cfg: Config) -> dict:
    """What ``make_dataset`` draws per example and epoch: SpecAugment's masks, under "mel" the voice
    warp and EQ on the log-mel (pipeline/mel_augment.py; None when off), and mixup's alpha (0 = off)."""
    from pipeline.mel_augment import MelAugment

    a = cfg.augment
    return {"freq_masks": a.freq_masks, "freq_mask_width": a.freq_mask_width,
            "time_masks": a.time_masks, "time_mask_width": a.time_mask_width, "mel": MelAugment.from_config(cfg),
            "mixup_alpha": a.mixup_alpha}


def mine_hard_negatives(model, cfg: Config, labels: list[str], *, chunk: int = 2048) -> tuple[np.ndarray, int]:
    """1-s windows of the training speakers' running speech, every ``train.hard_negative_hop_ms``, on which
    ``model`` gives some keyword >= ``train.hard_negative_threshold``: what it would fire on in ordinary
    talk. Returns (their features float16 [n, T, M], windows scored)."""
    from tqdm import tqdm

    from pipeline.audio import AudioError, fit_length, load_audio
    from pipeline.dataset import training_speech
    from pipeline.feature_spec import FeatureSpec, logmel

    spec = FeatureSpec.from_config(cfg)
    t = cfg.train
    keyword_ids = [i for i, label in enumerate(labels) if not label.startswith("_")]
    hop = max(1, int(spec.sample_rate * t.hard_negative_hop_ms / 1000))
    mined, pending, scored = [], [], 0

    def score(feats: list[np.ndarray]) -> None:
        x = np.concatenate(feats)
        best = model.predict(x, batch_size=512, verbose=0)[:, keyword_ids].max(axis=1)
        mined.append(x[best >= t.hard_negative_threshold].astype(np.float16))

    for path in tqdm(training_speech(cfg), desc="hard negatives", unit="file"):
        try:
            audio = load_audio(path, sample_rate=spec.sample_rate)
        except AudioError as e:
            print(f"train: skipped {e}")
            continue
        audio = fit_length(audio, max(len(audio), spec.clip_samples))
        windows = np.lib.stride_tricks.sliding_window_view(audio, spec.clip_samples)[::hop]
        pending.append(logmel(windows, spec))
        scored += len(windows)
        if sum(len(f) for f in pending) >= chunk:
            score(pending)
            pending = []
    if pending:
        score(pending)
    return (np.concatenate(mined) if mined else np.zeros((0, *spec.shape), np.float16)), scored


def strategy_for(name: str):
    """tf.distribute strategy for train.distribute (none | mirrored | multi_worker)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("config key train.distribute: multi_worker needs TF_CONFIG set (see README, 'Scale-out')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def cudnn_report(blockers: dict[str, list[str]], *, gpu: bool, require: bool) -> list[str]:
    """One line per GRU layer on whether it can take the cuDNN kernel; with ``require`` (train.require_cudnn)
    a layer that can't, or a missing GPU, is a ConfigError naming the offending setting."""
    offending = {layer: bad for layer, bad in blockers.items() if bad}
    if require and offending:
        layer, bad = next(iter(offending.items()))
        raise ConfigError(f"train.require_cudnn: layer {layer} can't use the cuDNN kernel: {bad[0]}")
    if require and not gpu:
        raise ConfigError("train.require_cudnn: no GPU visible to TensorFlow (install the [gpu] extra: pip install -e .[gpu])")
    return [f"{layer}: " + ("cuDNN-eligible" if not bad else "NOT cuDNN-eligible: " + "; ".join(bad))
            + ("" if gpu else " (no GPU: generic kernel)") for layer, bad in blockers.items()]


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def fit_multi_worker(model, strategy, train_ds, val_ds, *, epochs: int, steps_per_epoch: int, global_batch: int,
                     label_smoothing: float, work: Path) -> dict:
    """Synchronous data-parallel training across workers: per-replica loss averaged over the global batch,
    gradients all-reduced by the strategy. Every worker evaluates the same weights on the validation split;
    the chief keeps the best epoch in work/best.keras and the CSV history."""
    import keras
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(train_ds.with_options(options)))  # train_ds is endless
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)
    optimizer = model.optimizer

    @tf.function
    def train_step(batch):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)), global_batch_size=global_batch)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=batch), axis=None)

    history = {"epoch": [], "loss": [], "val_accuracy": []}
    best = -1.0
    for epoch in range(epochs):
        losses = [float(train_step(next(iterator))) for _ in range(steps_per_epoch)]
        correct = total = 0
        for x, y in val_ds:
            correct += int(np.sum(model(x, training=False).numpy().argmax(1) == y.numpy().argmax(1)))
            total += len(y)
        val_accuracy = correct / max(1, total)
        history["epoch"].append(epoch)
        history["loss"].append(float(np.mean(losses)))
        history["val_accuracy"].append(val_accuracy)
        print(f"epoch {epoch + 1}/{epochs} - loss {np.mean(losses):.4f} - val_accuracy {val_accuracy:.4f}")
        if is_chief(strategy) and val_accuracy > best:
            best = val_accuracy
            model.save(work / "best.keras")
    if is_chief(strategy):
        with open(work / "history.csv", "w") as fh:
            fh.write("epoch,loss,val_accuracy\n")
            fh.writelines(f"{e},{l},{v}\n" for e, l, v in zip(history["epoch"], history["loss"], history["val_accuracy"]))
        (work / "logs").mkdir(exist_ok=True)
    return history


def ema_options(t) -> dict:
    """Optimizer arguments for ``train.ema_momentum`` (none when it is 0, or under multi_worker: its custom
    loop has no EMA swap)."""
    on = t.ema_momentum > 0 and t.distribute != "multi_worker"
    return {"use_ema": True, "ema_momentum": t.ema_momentum} if on else {}


def ema_callbacks(t) -> list:
    """With ``train.ema_momentum``: swap the averaged weights in for validation and for the callbacks after
    this one at each epoch's end (checkpoint, early stopping), and the raw ones back for the next epoch."""
    import keras

    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if t.ema_momentum > 0 else []


def fine_tune_on_hard_negatives(cfg: Config, work: Path, labels: list[str], x_train, y_train, rows_train, val_ds,
                                augment: dict, stats: dict, *, jit: bool, seed: int) -> dict:
    """Mine hard negatives with the best model so far, then train on the cache plus them as ``_unknown_``
    for ``train.hard_negative_epochs`` (cosine from a tenth of the peak rate); the best validation epoch
    of this phase replaces best.keras. Returns counts and this phase's history."""
    import keras

    t = cfg.train
    model = keras.models.load_model(work / "best.keras", compile=False)
    mined_x, scored = mine_hard_negatives(model, cfg, labels)
    print(f"train: {len(mined_x)} hard negatives in {scored} windows of training speakers' speech "
          f"(a keyword >= {t.hard_negative_threshold})")
    report = {"windows_scored": scored, "mined": int(len(mined_x)), "threshold": t.hard_negative_threshold,
              "history": {}}
    if len(mined_x) == 0:
        return report
    extra = (mined_x, np.full(len(mined_x), labels.index("_unknown_"), np.int32))
    train_ds = make_dataset(x_train, y_train, rows_train, num_classes=len(labels), batch_size=t.batch_size,
                            training=True, seed=seed + 1, augment=augment, mean=np.array(stats["mean"]),
                            extra=extra, endless=True)
    steps = int(np.ceil((len(y_train) + len(mined_x)) / t.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate=t.learning_rate / 10,
                                                      decay_steps=steps * t.hard_negative_epochs, alpha=0.01)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, **ema_options(t)),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing), metrics=["accuracy"],
                  jit_compile=jit)
    callbacks = [*ema_callbacks(t),
                 keras.callbacks.ModelCheckpoint(str(work / "best.keras"), monitor="val_accuracy", save_best_only=True),
                 keras.callbacks.CSVLogger(str(work / "history.csv"), append=True)]
    report["history"] = model.fit(train_ds, validation_data=val_ds, epochs=t.hard_negative_epochs, steps_per_epoch=steps,
                                  callbacks=callbacks, verbose=1 if os.isatty(1) else 2).history
    return report


def train_one_second(cfg: Config, stats: dict, labels: list[str], train_split: tuple, val_ds, augment: dict, strategy, *,
                     seed: int, work: Path, jit: bool, gpus: list, report_cudnn: bool) -> tuple[dict, dict, dict]:
    """One 1-s model (one tower) from ``seed``: its epochs, then the hard-negative epochs; best.keras in ``work``.
    Returns (history, the hard-negative report, cuDNN blockers)."""
    import keras

    from pipeline.model import cudnn_blockers

    t = cfg.train
    global_batch = t.batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = int(np.ceil(len(train_split[1]) / global_batch))
    keras.utils.set_random_seed(seed)
    train_ds = make_dataset(*train_split, num_classes=len(labels), batch_size=global_batch,
                            training=True, seed=seed, augment=augment, mean=np.array(stats["mean"]), endless=True)
    with strategy.scope():
        model = build_from_config(cfg, stats, one_tower=True)
        blockers = cudnn_blockers(model)
        if report_cudnn:
            for line in cudnn_report(blockers, gpu=bool(gpus), require=t.require_cudnn):
                print(f"train: {line}")
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(1, steps_per_epoch * t.epochs),
            warmup_target=t.learning_rate, warmup_steps=int(steps_per_epoch * t.warmup_epochs), alpha=0.01)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, **ema_options(t))
        if t.mixed_precision:
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
                      metrics=["accuracy"], jit_compile=jit)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup")),  # before the EMA swap: it backs up the raw weights
        *ema_callbacks(t),  # before the checkpoint and early stopping, so that they see the averaged weights
        keras.callbacks.ModelCheckpoint(str(work / "best.keras"), monitor="val_accuracy", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=t.patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(work / "logs"), write_graph=False),
    ]
    if t.distribute == "multi_worker":
        # model.fit under MultiWorkerMirroredStrategy fails on Keras 3.15 / TF 2.16 (keras-team/keras#20585):
        # a custom loop does the same job (no BackupAndRestore there)
        history = fit_multi_worker(model, strategy, train_ds, val_ds, epochs=t.epochs,
                                   steps_per_epoch=steps_per_epoch, global_batch=global_batch,
                                   label_smoothing=t.label_smoothing, work=work)
    else:
        history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, steps_per_epoch=steps_per_epoch,
                            callbacks=callbacks, verbose=1 if os.isatty(1) else 2).history
    mined = {}
    if t.hard_negative_epochs > 0 and t.distribute == "none":
        mined = fine_tune_on_hard_negatives(cfg, work, labels, *train_split, val_ds, augment, stats,
                                            jit=jit, seed=seed)
        more = mined.pop("history")
        history = {k: list(history.get(k, [])) + list(more.get(k, [])) for k in set(history) | set(more)}
    elif t.hard_negative_epochs > 0:
        print(f"train: hard-negative mining runs with train.distribute=none only; skipped under {t.distribute}")
    return history, mined, blockers


def work_folder_for(cfg: Config, work: Path) -> None:
    """The train stage's work folder. An interrupted training resumes from it (BackupAndRestore) only under the
    same training keys and feature cache: another config's weights and epoch count must not carry on."""
    key = json.dumps({"keys": result_values(cfg, TRAIN_KEYS),
                      "features": cfg.features_dir.name}, sort_keys=True, default=str)
    stamp = work / "config.json"
    if work.is_dir() and (not stamp.is_file() or stamp.read_text() != key):
        print(f"train: {work} holds an interrupted training under another config: starting over")
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    write_text_atomic(stamp, key)


def judge_candidate(cfg: Config, spec, labels: list[str], model) -> tuple[tuple, dict]:
    """A continuous candidate's (score, report) for ``continuous.train``: the point verify's threshold pick
    gives it on the validation recordings. Higher is better: under the false-alarm target first, then more
    commands found, then fewer false alarms."""
    from pipeline.stages.verify import TARGET_FALSE_ALARMS_PER_HOUR, validation_pick

    point = validation_pick(cfg, model, spec, labels)
    report = {key: point[key] for key in ("threshold", "hits", "keywords", "false_alarms", "hours")}
    report["recall"] = round(point["recall"], 4)
    report["summary"] = (f"validation recordings pick {point['threshold']:.2f}: {point['hits']}/{point['keywords']} "
                         f"commands found, {point['false_alarms']} false alarms in {point['hours']:g} h")
    meets = point["false_alarms_per_hour"] <= TARGET_FALSE_ALARMS_PER_HOUR
    return (meets, point["hits"], -point["false_alarms"]), report


def fold(cfg: Config, stats: dict, towers: list[tuple]) -> tuple:
    """The trained towers [(1-s model, continuous model or None), ...] folded into one 1-s network and one
    continuous network (pipeline/model.py, fold_towers): what evaluate, export and verify take."""
    from pipeline.model import fold_towers

    whole = fold_towers([one_second for one_second, _ in towers], build_from_config(cfg, stats))
    sequences = [continuous for _, continuous in towers]
    if sequences[0] is None:
        return whole, None
    from pipeline.continuous import sequence_model

    return whole, fold_towers(sequences, sequence_model(whole))  # the folded shape; fold_towers sets every weight


def run(cfg: Config) -> Path:
    import keras
    import tensorflow as tf

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    stats = load_stats(cfg.features_dir)
    labels = stats["labels"]
    if labels != cfg.labels:
        raise StageError(f"feature cache {cfg.features_dir} has labels {labels}, config wants {cfg.labels}")
    keras.utils.set_random_seed(cfg.run.seed)
    t = cfg.train
    if t.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    if t.cpu_devices > 0:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * t.cpu_devices)
    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    gpus = tf.config.list_physical_devices("GPU")
    print(f"train: devices {', '.join(devices)}" + ("" if gpus else " (no GPU: CPU kernels)"))
    jit = t.jit_compile and not gpus and t.distribute == "none"
    if t.jit_compile and not jit:  # XLA can't compile the cuDNN GRU kernel; distributed XLA is untested here
        print(f"train: train.jit_compile ignored {'with a GPU' if gpus else f'under train.distribute={t.distribute}'}")

    x_train, y_train, rows_train = load_split(cfg.features_dir, "train")
    x_val, y_val, rows_val = load_split(cfg.features_dir, "validation")
    augment = training_augment(cfg)
    strategy = strategy_for(t.distribute)
    val_ds = make_dataset(x_val, y_val, rows_val, num_classes=len(labels), batch_size=256, training=False, seed=cfg.run.seed)
    resolver = getattr(strategy, "cluster_resolver", None)
    work = run_dir / ("train.partial" if is_chief(strategy) else f"train.partial.{resolver.task_type}{resolver.task_id}")
    work_folder_for(cfg, work)
    if t.ema_momentum > 0 and t.distribute == "multi_worker":
        print("train: train.ema_momentum ignored under train.distribute=multi_worker (its custom loop has no EMA swap)")
    # the continuous sequences and the benchmark recordings need no model: a side process makes them in the
    # cycles the 1-s training leaves idle (pipeline/side_work.py)
    side = side_work.start(cfg, stats["feature_spec"], labels, work) \
        if side_work.jobs(cfg) and t.distribute == "none" else None
    built = built_s = None
    towers, tower_reports, seconds = [], [], 0.0
    try:
        for tower in range(cfg.model.towers):
            # each tower its own seed (initial weights, data order, augmentation): the ensemble's gain is
            # where they disagree. Tower 0 keeps the run's seed, so towers=1 trains as before
            seed = cfg.run.seed + 1000 * tower
            tower_work = work / f"tower_{tower}" if cfg.model.towers > 1 else work
            tower_work.mkdir(exist_ok=True)
            if cfg.model.towers > 1:
                print(f"train: tower {tower + 1} of {cfg.model.towers} (seed {seed})")
            started = time.time()
            history, mined, blockers = train_one_second(cfg, stats, labels, (x_train, y_train, rows_train), val_ds,
                                                        augment, strategy, seed=seed, work=tower_work, jit=jit,
                                                        gpus=gpus, report_cudnn=tower == 0)
            seconds += time.time() - started  # the 1-s trainings (the continuous design reports its own times)
            if side is not None:
                built, built_s = side_work.finish(side, cfg, work)
                side = None
            if not is_chief(strategy):
                continue
            best = keras.models.load_model(tower_work / "best.keras", compile=False)
            continuous, sequence_model = {}, None
            if t.continuous_sequences > 0 and t.distribute == "none":
                from pipeline import continuous as continuous_design
                from pipeline.feature_spec import FeatureSpec

                print(f"train: the continuous design: {t.continuous_sequences} sequences of {t.continuous_seconds} s, "
                      f"{t.continuous_epochs} epochs from the 1-s weights")
                spec = FeatureSpec.from_dict(stats["feature_spec"])
                sequence_model, continuous = continuous_design.train(cfg, best, spec, labels, built=built, tower=tower,
                                                                     judge=partial(judge_candidate, cfg, spec, labels))
                if built_s is not None:
                    continuous["build_s"] = round(built_s, 1)  # beside the 1-s training, in the side process
                    continuous["built_beside_training"] = True
                last = continuous.get("hard_negatives", continuous)  # its hard-negative epochs come last where they run
                print(f"train: continuous design, validation frame accuracy {last['val_frame_accuracy'][-1]:.4f}")
            elif t.continuous_sequences > 0:
                print(f"train: the continuous design trains with train.distribute=none only; skipped under {t.distribute}")
            towers.append((best, sequence_model))
            tower_reports.append({"seed": seed, "history": history, "hard_negatives": mined, "continuous": continuous,
                                  "best_val_accuracy": float(max(history.get("val_accuracy", [float("nan")])))})
    except BaseException:
        if side is not None:
            side_work.stop(side)
        raise
    if not is_chief(strategy):
        shutil.rmtree(work)
        print("train: worker done (the chief writes the outputs)")
        return run_dir
    if cfg.model.towers > 1:
        best, sequence_model = fold(cfg, stats, towers)
        best.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        best_val = float(best.evaluate(val_ds, verbose=0)[1])
        print(f"train: {cfg.model.towers} towers folded into one network: val accuracy {best_val:.4f} (towers: "
              + ", ".join(f"{r['best_val_accuracy']:.4f}" for r in tower_reports) + ")")
    else:
        best, sequence_model = towers[0]
        best_val = tower_reports[0]["best_val_accuracy"]
    if sequence_model is not None:
        sequence_model.save(work / "model_continuous.keras")
    first = tower_reports[0]
    history, mined, continuous = first["history"], first["hard_negatives"], first["continuous"]
    summary = {
        "devices": devices, "gpu": bool(gpus), "cudnn_blockers": blockers, "distribute": t.distribute,
        "replicas": strategy.num_replicas_in_sync, "mixed_precision": t.mixed_precision, "jit_compile": jit,
        # trained weights (a folded network also holds the zeros between its towers)
        "parameters": int(sum(one_second.count_params() for one_second, _ in towers)),
        "epochs_run": len(history.get("loss", [])),
        "best_val_accuracy": float(best_val), "train_examples": int(len(y_train)),
        "seconds": round(seconds, 1), "samples_per_second": round(len(y_train) * len(history.get("loss", [])) / seconds, 1),
        # the network the exports hold (towers folded): its sizes are what the runtimes' states take
        "model_args": {"gru_units": [u * cfg.model.towers for u in cfg.model.gru_units],
                       "dense_units": cfg.model.dense_units * cfg.model.towers, "dropout": cfg.model.dropout,
                       "towers": cfg.model.towers, "tower_gru_units": cfg.model.gru_units},
        "towers": [{k: v for k, v in r.items() if k != "history"} for r in tower_reports] if cfg.model.towers > 1 else [],
        "labels": labels, "feature_spec": stats["feature_spec"], "hard_negatives": mined, "continuous": continuous,
    }
    # publish: history and logs first, the model last, each by rename
    history_dir = work / "tower_0" if cfg.model.towers > 1 else work  # the first tower's curves
    for name in ("history.csv", "logs"):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        (history_dir / name).replace(target)
    write_text_atomic(run_dir / "train_summary.json", json.dumps(summary, indent=1))
    if (work / "model_continuous.keras").is_file():
        (work / "model_continuous.keras").replace(run_dir / "model_continuous.keras")
    else:  # an earlier run's continuous model must not reach this run's export
        (run_dir / "model_continuous.keras").unlink(missing_ok=True)
    if cfg.model.towers > 1:
        best.save(work / "best.keras")  # the folded network
    (work / "best.keras").replace(run_dir / "model.keras")
    shutil.rmtree(work)
    print(f"train: best val accuracy {best_val:.4f} after {summary['epochs_run']} epochs, "
          f"{summary['parameters']} parameters, {seconds:.0f} s")
    return run_dir / "model.keras"
