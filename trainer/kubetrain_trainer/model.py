"""The classifier: a small Keras CNN (TensorFlow backend), its training and evaluation.

Design for 2 CPU cores: two 3x3 conv layers (32 and 64 filters), each followed by
2x2 max-pooling, then dropout, a 128-unit dense layer, dropout and a softmax layer —
about 225k parameters (most of them in the cheap dense layer) and about 2.5 M
multiply-adds per image. Batch norm was tried twice and dropped: with ~60 steps per
epoch on small datasets its moving statistics lag (3 epochs from scratch gave 12%
accuracy with Keras's default momentum), and a deeper BN variant measured no better
than this model under the recipe below. The model takes (N, 28, 28, 1) float32 in
[0, 1] (what kubetrain_serving.preprocess produces plus a channel axis) and outputs
class probabilities; class index i is `classes[i]` (sorted label names), recorded with
the model.

The recipe is what lifts a few thousand digits from about 97% to about 98.4% on unseen
digits (docs/trainer.md has the measurements and `tools/harness/bench/bench_recipe.py`
reproduces them): augmentation (random shift, rotation, zoom) in the tf.data input
pipeline, not in the model, so the saved model is exactly the inference graph; label
smoothing; and Adam with a cosine learning-rate decay over the planned steps, which
replaces the old halve-on-plateau rule and lets the last epochs settle instead of
stopping on a noisy plateau. So a run from scratch goes the whole schedule. A warm start
clones the champion's architecture and weights, fine-tunes at a third of the learning
rate, and stops early on validation loss (an improvement must exceed `min_delta`, so a
converged warm start stops after `patience` epochs instead of chasing 0.001s; best
weights restored).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Epoch callback: (epoch index from 0, metrics dict) -> None.
EpochHook = Callable[[int, dict[str, float]], None]


def build_model(num_classes: int, seed: int = 1234) -> Any:
    """The from-scratch CNN (uncompiled)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.25, name="dropout2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="kubetrain_cnn")


def clone_for_warm_start(champion: Any, num_classes: int) -> Any:
    """A trainable copy of the champion with its weights; ValueError if incompatible."""
    import keras

    in_shape = tuple(champion.input_shape[1:])
    out_classes = int(champion.output_shape[-1])
    if in_shape != (28, 28, 1):
        raise ValueError(f"champion takes input {in_shape}, not (28, 28, 1)")
    if out_classes != num_classes:
        raise ValueError(f"champion predicts {out_classes} classes, this dataset has {num_classes}")
    model = keras.models.clone_model(champion)
    model.set_weights(champion.get_weights())
    return model


#: Augmentation strength: translation (fraction of the side), rotation (fraction of a
#: full turn: 0.05 is +-18 degrees), zoom (fraction). Stronger than this starts to turn
#: 1s into 7s and 6s into 0s at 28x28.
AUGMENT_SHIFT, AUGMENT_ROTATION, AUGMENT_ZOOM = 0.1, 0.05, 0.1

#: The cosine decay ends at this fraction of the initial learning rate, not at 0: the
#: last epochs still move, and a warm start resumed from them is not frozen.
COSINE_FLOOR = 0.02


def make_augmenter(seed: int) -> Any:
    """Geometric jitter: digits stay digits (no flips)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomTranslation(AUGMENT_SHIFT, AUGMENT_SHIFT, fill_mode="constant", seed=seed),
            layers.RandomRotation(AUGMENT_ROTATION, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom(AUGMENT_ZOOM, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def make_dataset(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool,
    seed: int,
    num_classes: int,
) -> Any:
    """A tf.data pipeline over in-memory arrays: shuffle, batch, augment, prefetch.

    Labels are one-hot (label smoothing needs them so)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (x[..., np.newaxis], tf.one_hot(y, num_classes, dtype=tf.float32))
    )
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        aug = make_augmenter(seed)
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclass
class FitReport:
    epochs_run: int
    best_epoch: int
    seconds: float
    train_images: int
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Training-step throughput (forward+backward, augmented input) over the whole fit."""
        return self.train_images * self.epochs_run / self.seconds if self.seconds > 0 else 0.0


def fit(
    model: Any,
    x_train: NDArray[np.float32],
    y_train: NDArray[np.int64],
    x_val: NDArray[np.float32],
    y_val: NDArray[np.int64],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    augment: bool,
    seed: int,
    min_delta: float = 0.002,
    label_smoothing: float = 0.1,
    early_stopping: bool = True,
    on_epoch: EpochHook | None = None,
) -> FitReport:
    """Compile and train: cosine-decayed Adam, label smoothing and, if `early_stopping`,
    early stopping on validation loss.

    A run from scratch should go the whole schedule (`early_stopping=False`): mid-way the
    learning rate is still high and the smoothed validation loss is noisy, so stopping
    there (measured: after 10 of 25 epochs) costs more than a point of accuracy. A warm
    start begins converged and should stop as soon as it stops improving."""
    import keras

    num_classes = int(model.output_shape[-1])
    steps = max(1, -(-len(x_train) // batch_size)) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=steps, alpha=COSINE_FLOOR
            )
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    train_ds = make_dataset(
        x_train,
        y_train,
        batch_size,
        shuffle=True,
        augment=augment,
        seed=seed,
        num_classes=num_classes,
    )
    has_val = len(x_val) > 0
    val_ds = (
        make_dataset(
            x_val, y_val, 256, shuffle=False, augment=False, seed=seed, num_classes=num_classes
        )
        if has_val
        else None
    )
    monitor = "val_loss" if has_val else "loss"

    class _Hook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if on_epoch is not None:
                on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})

    early = keras.callbacks.EarlyStopping(
        monitor=monitor,
        patience=patience,
        min_delta=min_delta,
        restore_best_weights=True,
        verbose=0,
    )
    callbacks = [early, _Hook()] if early_stopping else [_Hook()]
    start = time.perf_counter()
    hist = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0
    )
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))
    series = history.get(monitor, [])
    best = int(np.argmin(series)) if series else epochs_run - 1
    return FitReport(
        epochs_run=epochs_run,
        best_epoch=best,
        seconds=seconds,
        train_images=len(x_train),
        history=history,
    )


@dataclass
class Evaluation:
    """A model's results on one labelled set."""

    accuracy: float
    loss: float
    confusion: NDArray[np.int64]
    """confusion[true, predicted]"""
    classes: list[str]

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    def precision(self) -> dict[str, float]:
        col = self.confusion.sum(axis=0)
        diag = np.diag(self.confusion)
        return {c: float(diag[i] / col[i]) if col[i] else 0.0 for i, c in enumerate(self.classes)}

    def recall(self) -> dict[str, float]:
        row = self.confusion.sum(axis=1)
        diag = np.diag(self.confusion)
        return {c: float(diag[i] / row[i]) if row[i] else 0.0 for i, c in enumerate(self.classes)}


def evaluate_probs(
    probs: NDArray[np.floating[Any]], y: NDArray[np.int64], classes: list[str]
) -> Evaluation:
    """Accuracy, cross-entropy and the confusion matrix from predicted probabilities.

    Rows of `probs` may have fewer columns than `classes` (a champion that predates a
    new label): it can then never predict those labels, which counts as wrong.
    """
    k = len(classes)
    n = len(y)
    if n == 0:
        return Evaluation(0.0, float("nan"), np.zeros((k, k), dtype=np.int64), classes)
    if probs.shape[1] < k:
        probs = np.pad(probs, ((0, 0), (0, k - probs.shape[1])))
    pred = np.argmax(probs, axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    picked = np.clip(probs[np.arange(n), y], 1e-7, 1.0)
    return Evaluation(
        accuracy=float(np.mean(pred == y)),
        loss=float(-np.mean(np.log(picked))),
        confusion=confusion,
        classes=classes,
    )


def predict(model: Any, x: NDArray[np.float32], batch_size: int = 256) -> NDArray[np.float32]:
    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    out = model.predict(x[..., np.newaxis], batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32)
