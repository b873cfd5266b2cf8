"""Exports of a promoted model: ONNX and TFLite, each checked against Keras before it is kept.

- **ONNX** is written here with `onnx.helper`, layer by layer. tf2onnx (1.16.1, the newest)
  needs protobuf 3 and numpy < 2, and this stack pins protobuf 7, numpy 2.4, TensorFlow 2.21
  and Keras 3.15; Keras's own ONNX export calls tf2onnx. The trainer's CNN uses six layer
  types (input, Conv2D, MaxPooling2D, Flatten, Dropout, Dense), so the writer covers those
  (plus ReLU/softmax/linear activations and `valid`/`same` padding) and refuses anything else
  with an `ExportError` naming the layer. Keras is NHWC, ONNX's Conv is NCHW: the graph
  transposes once after the input and back before Flatten, so Flatten sees Keras's order and
  the Dense weights are used as they are.
- **TFLite** is TensorFlow's own converter (float32, no quantisation).
- **Parity**: every export runs on the run's test images (ONNX Runtime, the TFLite
  interpreter) and is kept only if its argmax equals Keras's on >= 99.9% of them and its
  probabilities are within 1e-4. A failed export is reported (metric, tag, warning) and left
  out of the Bento; it never fails the run, because Keras serving is unaffected.

Heavy imports (onnx, onnxruntime, TensorFlow) happen inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MIN_ARGMAX_AGREEMENT = 0.999
MAX_ABS_DIFF = 1e-4
ONNX_OPSET = 17
#: The IR version ONNX Runtime 1.x reads for opset 17 (onnx 1.23 would write a newer one).
ONNX_IR_VERSION = 9


class ExportError(Exception):
    """The model cannot be exported in this format; the message says which layer or why."""


@dataclass(frozen=True)
class Parity:
    """How an export's answers compare with Keras's on the same images."""

    images: int
    argmax_agreement: float
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return (
            self.images > 0
            and self.argmax_agreement >= MIN_ARGMAX_AGREEMENT
            and self.max_abs_diff <= MAX_ABS_DIFF
        )


@dataclass(frozen=True)
class Export:
    """One format's result: the file (only when it passed its parity check) and the check,
    or why it failed."""

    fmt: str
    filename: str
    content: bytes | None
    parity: Parity | None
    error: str = ""

    @property
    def kept(self) -> bool:
        return self.content is not None


def parity(reference: NDArray[np.floating[Any]], candidate: NDArray[np.floating[Any]]) -> Parity:
    if reference.shape != candidate.shape:
        raise ExportError(f"output shape {candidate.shape} differs from Keras's {reference.shape}")
    n = int(reference.shape[0])
    if n == 0:
        return Parity(0, 0.0, float("inf"))
    agree = float(np.mean(np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)))
    return Parity(n, agree, float(np.max(np.abs(reference - candidate))))


# --- ONNX ------------------------------------------------------------------------------


def _activation(name: str | None, value: str, layer: str, nodes: list[Any]) -> str:
    from onnx import helper

    if name in ("linear", None):
        return value
    op = {"relu": "Relu", "softmax": "Softmax"}.get(name)
    if op is None:
        raise ExportError(f"layer {layer!r}: activation {name!r} is not supported")
    out = f"{layer}/{name}"
    if op == "Softmax":
        nodes.append(helper.make_node(op, [value], [out], name=out, axis=-1))
    else:
        nodes.append(helper.make_node(op, [value], [out], name=out))
    return out


def _pads(padding: str, layer: str) -> dict[str, Any]:
    if padding == "valid":
        return {}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    raise ExportError(f"layer {layer!r}: padding {padding!r} is not supported")


def to_onnx(model: Any) -> bytes:
    """The Keras model as an ONNX graph: input `image` (N, 28, 28, 1), output `probs`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    value, layout = "image", "nhwc"
    in_shape = [d if d is not None else "N" for d in model.input_shape]
    for layer in model.layers:
        kind, name, cfg = type(layer).__name__, layer.name, layer.get_config()
        if kind in ("InputLayer", "Dropout"):
            continue  # Dropout is the identity at inference
        if kind in ("Conv2D", "MaxPooling2D") and layout == "nhwc":
            out = f"{name}/to_nchw"
            nodes.append(helper.make_node("Transpose", [value], [out], perm=[0, 3, 1, 2]))
            value, layout = out, "nchw"
        if kind == "Conv2D":
            if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
                raise ExportError(f"layer {name!r}: dilated or grouped convolution")
            weights = layer.get_weights()
            kernel = np.transpose(weights[0], (3, 2, 0, 1)).astype(np.float32)  # HWIO -> OIHW
            inputs = [value, f"{name}/W"]
            inits.append(numpy_helper.from_array(kernel, f"{name}/W"))
            if cfg.get("use_bias", True):
                inits.append(numpy_helper.from_array(weights[1].astype(np.float32), f"{name}/b"))
                inputs.append(f"{name}/b")
            out = f"{name}/conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [out],
                    name=out,
                    kernel_shape=list(kernel.shape[2:]),
                    strides=list(cfg["strides"]),
                    **_pads(cfg["padding"], name),
                )
            )
            value = _activation(cfg.get("activation", "linear"), out, name, nodes)
        elif kind == "MaxPooling2D":
            out = f"{name}/pool"
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [value],
                    [out],
                    name=out,
                    kernel_shape=list(cfg["pool_size"]),
                    strides=list(cfg["strides"] or cfg["pool_size"]),
                    **_pads(cfg["padding"], name),
                )
            )
            value = out
        elif kind == "Flatten":
            if layout == "nchw":  # back to Keras's order, so Dense weights apply as they are
                out = f"{name}/to_nhwc"
                nodes.append(helper.make_node("Transpose", [value], [out], perm=[0, 2, 3, 1]))
                value = out
            out = f"{name}/flat"
            nodes.append(helper.make_node("Flatten", [value], [out], name=out, axis=1))
            value, layout = out, "flat"
        elif kind == "Dense":
            if layout != "flat":
                raise ExportError(f"layer {name!r}: Dense on a non-flat input")
            weights = layer.get_weights()
            inits.append(numpy_helper.from_array(weights[0].astype(np.float32), f"{name}/W"))
            inputs = [value, f"{name}/W"]
            if cfg.get("use_bias", True):
                inits.append(numpy_helper.from_array(weights[1].astype(np.float32), f"{name}/b"))
                inputs.append(f"{name}/b")
            out = f"{name}/gemm"
            nodes.append(helper.make_node("Gemm", inputs, [out], name=out))
            value = _activation(cfg.get("activation", "linear"), out, name, nodes)
        else:
            raise ExportError(f"layer {name!r} of type {kind} is not supported by the ONNX writer")
    if layout != "flat":
        raise ExportError("the model does not end in a flat (Dense) output")
    nodes.append(helper.make_node("Identity", [value], ["probs"], name="probs"))
    graph = helper.make_graph(
        nodes,
        "kubetrain_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", model.output_shape[-1]])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="kubetrain",
    )
    proto.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def onnx_probs(content: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probs"], {"image": x[..., np.newaxis]})[0])


# --- TFLite ----------------------------------------------------------------------------


def to_tflite(model: Any) -> bytes:
    import contextlib
    import io

    import tensorflow as tf

    # The converter prints the traced signature to stdout; the trainer's stdout is its
    # JSON log, one object per line.
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def tflite_probs(content: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still TF's own
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content, num_threads=1)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(x), 28, 28, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x[..., np.newaxis].astype(np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(out["index"]))


FORMATS = {
    "onnx": ("model.onnx", to_onnx, onnx_probs),
    "tflite": ("model.tflite", to_tflite, tflite_probs),
}


def export_all(
    model: Any, x_check: NDArray[np.float32], reference: NDArray[np.float32]
) -> list[Export]:
    """Every format, each converted and checked on `x_check` against Keras's `reference`.

    Never raises for a format's failure: the failure is in the returned `Export`.
    """
    results: list[Export] = []
    for fmt, (filename, convert, run) in FORMATS.items():
        try:
            content = convert(model)
            check = parity(reference, run(content, x_check))
        except Exception as exc:  # a converter's or runtime's many error types
            results.append(Export(fmt, filename, None, None, f"{type(exc).__name__}: {exc}"))
            continue
        error = (
            ""
            if check.ok
            else (
                f"parity failed on {check.images} images: argmax agreement "
                f"{check.argmax_agreement:.4%} (need {MIN_ARGMAX_AGREEMENT:.1%}), max |dp| "
                f"{check.max_abs_diff:.2e} (need <= {MAX_ABS_DIFF:.0e})"
            )
        )
        results.append(Export(fmt, filename, content if check.ok else None, check, error))
    return results
