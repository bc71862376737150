"""``curves.png``: a job's training loss, validation mIoU and learning rate per epoch."""
from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Union

from ..utils.fileio import atomic_open


def plot_curves(records: List[Dict[str, Any]], path: Union[str, os.PathLike], title: str = "") -> None:
    """Draw ``metrics.jsonl`` records (loss, val mIoU, lr against epoch) to a PNG, atomically.

    Epoch 0 (a fine-tuning job's starting model) has only its validation point.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib.figure import Figure

    def series(key):
        pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 3.2), dpi=100)
    for i, (key, label) in enumerate((("train_loss", "train loss"), ("val_miou", "val mIoU"), ("lr", "learning rate"))):
        ax = fig.add_subplot(1, 3, i + 1)
        x, y = series(key)
        ax.plot(x, y, marker="o", markersize=3)
        if key == "train_loss":
            vx, vy = series("val_loss")
            ax.plot(vx, vy, marker="s", markersize=3, label="val loss")
            ax.legend(["train loss", "val loss"], fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
