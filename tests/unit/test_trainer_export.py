"""ONNX and TFLite exports against Keras, on real digits: parity, layer coverage, refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from kubetrain_loadgen.payloads import mnist_sample_path
from kubetrain_trainer import export as ex
from kubetrain_trainer import model as mdl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(mnist_sample_path(), header=None).to_numpy()
    table = table[np.random.default_rng(11).permutation(len(table))]  # the file is sorted
    x = table[:, :784].reshape(-1, 28, 28).astype(np.float32) / 255.0
    return x, table[:, 784].astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits: tuple[np.ndarray, np.ndarray]) -> Any:
    """The trainer's own CNN, briefly trained, so its probabilities are not uniform."""
    x, y = digits
    net = mdl.build_model(10, seed=3)
    mdl.fit(net, x[:1500], y[:1500], x[1500:1700], y[1500:1700], epochs=2, batch_size=64,
            learning_rate=1e-3, patience=3, augment=False, seed=3)  # fmt: skip
    return net


def test_both_exports_agree_with_keras_on_2000_unseen_digits(
    trained: Any, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    check = x[2000:4000]
    reference = mdl.predict(trained, check)
    # A real model (about 83% after 2 epochs here), not noise (10%).
    assert float(np.mean(reference.argmax(axis=1) == y[2000:4000])) > 0.5
    results = {e.fmt: e for e in ex.export_all(trained, check, reference)}
    assert set(results) == {"onnx", "tflite"}
    for e in results.values():
        assert e.kept, e.error
        assert e.parity is not None and e.parity.images == 2000
        assert e.parity.argmax_agreement >= 0.999 and e.parity.max_abs_diff <= 1e-4
        assert e.content and len(e.content) > 100_000  # the weights are in the file
    # The files are self-contained: a fresh runtime reproduces the numbers from the bytes.
    again = ex.onnx_probs(results["onnx"].content or b"", check[:16])
    np.testing.assert_allclose(again, reference[:16], atol=1e-4)


def test_onnx_writer_covers_same_padding_linear_and_biasless_layers() -> None:
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((28, 28, 1))
    h = layers.Conv2D(4, 5, strides=2, padding="same", use_bias=False)(inputs)
    h = layers.MaxPooling2D(3, strides=2, padding="same")(h)
    h = layers.Conv2D(6, 3, activation="relu")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(16, use_bias=False)(h)
    net = keras.Model(inputs, layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    got = ex.onnx_probs(ex.to_onnx(net), x)
    check = ex.parity(mdl.predict(net, x), got)
    assert check.ok, check


def test_an_unsupported_layer_is_named_and_reported_not_raised() -> None:
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 1))
    h = layers.BatchNormalization(name="bn")(inputs)
    net = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(h)))
    with pytest.raises(ex.ExportError, match="layer 'bn' of type BatchNormalization"):
        ex.to_onnx(net)
    x = np.zeros((4, 28, 28), dtype=np.float32)
    results = {e.fmt: e for e in ex.export_all(net, x, mdl.predict(net, x))}
    assert not results["onnx"].kept and "BatchNormalization" in results["onnx"].error
    assert results["tflite"].kept  # TensorFlow's converter handles it


def test_parity_thresholds_and_shapes() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert ex.parity(ref, ref + 5e-5).ok
    assert not ex.parity(ref, ref + 2e-4).ok  # probabilities too far apart
    assert not ex.parity(ref, ref[:, ::-1]).ok  # every argmax differs
    assert not ex.parity(ref[:0], ref[:0]).ok  # nothing checked is not a pass
    with pytest.raises(ex.ExportError, match="output shape"):
        ex.parity(ref, ref[:1])
