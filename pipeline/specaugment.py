"""SpecAugment (frequency and time masks) through tensorflow-io.

The only module that imports tensorflow_io: 0.37.1 is its last release and loads only with TF 2.16
(docs/stack.md), so if it has to go, this file is the one to replace.
"""
from __future__ import annotations

import tensorflow as tf


def spec_augment(features: tf.Tensor, *, fill: tf.Tensor, freq_masks: int, freq_mask_width: int,
                 time_masks: int, time_mask_width: int) -> tf.Tensor:
    """Mask random mel bands and frame spans of one example.

    features: float32 [frames, n_mels] raw log-mel. Masked cells get ``fill`` [n_mels] (the train-set
    mean), which the model's normalization maps to 0, where plain tfio masking would write 0 dB, a loud value.
    """
    import tensorflow_io as tfio  # imported on use: it registers kernels and is slow to load

    centred = features - fill
    for _ in range(freq_masks):
        if freq_mask_width > 0:
            centred = tfio.audio.freq_mask(centred, param=freq_mask_width)
    for _ in range(time_masks):
        if time_mask_width > 0:
            centred = tfio.audio.time_mask(centred, param=time_mask_width)
    return centred + fill
