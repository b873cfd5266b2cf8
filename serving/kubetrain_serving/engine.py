"""The inference engine: one loaded Keras model behind one compiled, thread-safe call.

`keras.Model.predict()` builds a data pipeline and callbacks on every call, which costs
tens of milliseconds for a 28x28 digit; a `tf.function` with a fixed input signature
(any batch size, the model's image shape) is traced once and then costs well under a
millisecond per small batch. All requests of a worker share that one function, and a
lock serialises calls so TensorFlow's intra-op threads (sized from the CPU limit, set
before TensorFlow starts) are the only parallelism: more concurrent calls on 2 cores
only add contention.

The engine accepts what `kubetrain_serving.preprocess` produces, (N, 28, 28) float32 in
[0, 1], and adapts it to the model's input layout (channel axis or flat 784) once,
here, so the service never needs to know how the trainer shaped its input layer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kubetrain_serving.preprocess import IMAGE_SIZE

MODEL_FILE = "model.keras"
"""Name of the Keras file inside the BentoML model directory (set by the trainer)."""

_tf_configured = False


def configure_tensorflow(threads: int) -> None:
    """Size TensorFlow's thread pools once per process, before the first op runs."""
    global _tf_configured
    if _tf_configured:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow was already initialised (e.g. in a test process); keep its pools.
        pass
    _tf_configured = True


@dataclass(frozen=True)
class ModelInfo:
    """Who the served model is: the trainer's metadata plus its class labels."""

    model_name: str
    model_version: str
    mlflow_run_id: str
    dataset_digest: str
    bento_model_tag: str
    """`<name>:<version>` of the model in the BentoML store."""
    classes: tuple[str, ...]
    """Label of each output index; digits "0".."9" unless the trainer recorded others."""

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tag: str, num_outputs: int) -> ModelInfo:
        """Build from the BentoML model's metadata; missing keys become "unknown"."""
        classes = _classes(metadata.get("classes"), num_outputs)
        return cls(
            model_name=str(metadata.get("model_name") or "unknown"),
            model_version=str(metadata.get("model_version") or "unknown"),
            mlflow_run_id=str(metadata.get("mlflow_run_id") or "unknown"),
            dataset_digest=str(metadata.get("dataset_digest") or "unknown"),
            bento_model_tag=tag,
            classes=classes,
        )

    def class_id(self, index: int) -> int:
        """The integer a client sees as "prediction": the digit when labels are digits."""
        label = self.classes[index]
        return int(label) if label.isdigit() else index


def _classes(raw: Any, num_outputs: int) -> tuple[str, ...]:
    """Output index -> label. The trainer may record `classes` as a list or JSON string."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == num_outputs:
        return tuple(str(c) for c in raw)
    return tuple(str(i) for i in range(num_outputs))


class Engine:
    """A Keras classifier loaded from a model directory, callable from any thread."""

    def __init__(self, model_dir: Path, *, threads: int) -> None:
        path = model_dir / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"model file {path} not found (the model must contain {MODEL_FILE})"
            )
        configure_tensorflow(threads)
        import keras
        import tensorflow as tf

        self._model = keras.models.load_model(path, compile=False)
        in_shape = tuple(self._model.input_shape[1:])
        if in_shape == (IMAGE_SIZE, IMAGE_SIZE, 1):
            self._layout = "nhwc"
        elif in_shape == (IMAGE_SIZE, IMAGE_SIZE):
            self._layout = "nhw"
        elif in_shape == (IMAGE_SIZE * IMAGE_SIZE,):
            self._layout = "flat"
        else:
            raise ValueError(f"model input shape {in_shape} is not a 28x28 image")
        self.num_outputs = int(self._model.output_shape[-1])
        spec = tf.TensorSpec(shape=(None, *in_shape), dtype=tf.float32)
        model = self._model
        # Traced once for every batch size; training=False freezes dropout/batch norm.
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._lock = threading.Lock()
        # Trace and warm up now, so the first request does not pay for it.
        self.infer(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32))

    def infer(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, 28, 28) pixels in [0, 1] -> (N, classes) probabilities."""
        if batch.ndim != 3 or batch.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected (N, 28, 28), got {batch.shape}")
        if self._layout == "nhwc":
            x = batch[..., np.newaxis]
        elif self._layout == "flat":
            x = batch.reshape(len(batch), IMAGE_SIZE * IMAGE_SIZE)
        else:
            x = batch
        with self._lock:
            out = self._fn(np.ascontiguousarray(x, dtype=np.float32)).numpy()
        return np.asarray(out, dtype=np.float32)
