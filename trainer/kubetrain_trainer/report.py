"""Human-facing artefacts of an evaluation: the confusion-matrix PNG and per-class tables.

matplotlib draws the figure when it is installed (the dev environment); the trainer
image does not need it: Pillow, which the trainer needs anyway, draws a plain
labelled grid instead. Both produce a PNG of the same matrix, rows = true label,
columns = predicted label, darker = more images.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray


def confusion_png(confusion: NDArray[np.int64], classes: list[str], title: str) -> bytes:
    """Render the confusion matrix as PNG bytes."""
    try:
        return _with_matplotlib(confusion, classes, title)
    except ImportError:
        return _with_pillow(confusion, classes, title)


def _with_matplotlib(confusion: NDArray[np.int64], classes: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.0 + 0.5 * k), dpi=100)
    try:
        ax.imshow(confusion, cmap="Blues")
        ax.set_xticks(range(k), classes)
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        peak = confusion.max() if confusion.size else 0
        for i in range(k):
            for j in range(k):
                v = int(confusion[i, j])
                if v:
                    color = "white" if v > peak / 2 else "black"
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color=color)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _with_pillow(confusion: NDArray[np.int64], classes: list[str], title: str) -> bytes:
    from PIL import Image, ImageDraw

    k = len(classes)
    cell, margin = 36, 40
    size = (margin + k * cell + 10, margin + k * cell + 30)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((margin, 5), title[:80], fill="black")
    peak = max(int(confusion.max()) if confusion.size else 0, 1)
    for i in range(k):
        draw.text((8, margin + i * cell + cell // 3), classes[i][:4], fill="black")
        draw.text((margin + i * cell + cell // 3, margin - 15), classes[i][:4], fill="black")
        for j in range(k):
            v = int(confusion[i, j])
            shade = 255 - int(200 * v / peak)
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle(
                [x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline="grey"
            )
            if v:
                draw.text(
                    (x0 + 4, y0 + cell // 3), str(v), fill="black" if shade > 128 else "white"
                )
    draw.text((margin, size[1] - 20), "rows: true, columns: predicted", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
