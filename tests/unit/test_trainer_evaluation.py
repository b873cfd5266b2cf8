"""Evaluation maths, class alignment, label order, confusion PNG, structured logs."""

from __future__ import annotations

import io
import json
import logging
import sys

import numpy as np
import pytest
from kubetrain_trainer.logs import JsonFormatter, register_secret
from kubetrain_trainer.model import evaluate_probs
from kubetrain_trainer.report import _with_pillow, confusion_png
from kubetrain_trainer.steps import align_probs, sort_labels
from PIL import Image


def test_confusion_precision_recall() -> None:
    classes = ["0", "1", "2"]
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.eye(3, dtype=np.float32)[pred] * 0.9 + 0.1 / 3
    ev = evaluate_probs(probs, y, classes)
    assert ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert ev.precision() == pytest.approx({"0": 0.5, "1": 2 / 3, "2": 1.0})
    assert ev.recall() == pytest.approx({"0": 0.5, "1": 1.0, "2": 0.5})
    assert ev.loss > 0


def test_align_probs_by_class_name() -> None:
    probs = np.array([[0.7, 0.3]], dtype=np.float32)  # champion knew "1", "0" in that order
    out = align_probs(probs, ["1", "0"], ["0", "1", "2"])
    assert out[0].tolist() == pytest.approx([0.3, 0.7, 0.0])
    same = np.array([[0.1, 0.9]], dtype=np.float32)
    assert align_probs(same, None, ["0", "1"]) is same


def test_numeric_labels_sort_numerically() -> None:
    assert sort_labels({"10", "2", "cat", "0"}) == ["0", "2", "10", "cat"]


@pytest.mark.parametrize("render", [confusion_png, _with_pillow])
def test_confusion_png_is_a_png(render: object) -> None:
    cm = np.array([[5, 1], [0, 7]])
    data = render(cm, ["0", "1"], "title")  # type: ignore[operator]
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size[0] > 50


def test_json_log_lines_scrub_secrets() -> None:
    register_secret("hunter2-topsecret")
    rec = logging.LogRecord("kubetrain.trainer", logging.INFO, __file__, 1, "x", None, None)
    rec.fields = {"url": "http://u:hunter2-topsecret@h", "n": 3}
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["event"] == "x" and doc["n"] == 3 and doc["level"] == "info"
    assert "hunter2-topsecret" not in json.dumps(doc)
    assert "ts" in doc and sys.modules  # formatter output is one JSON object
