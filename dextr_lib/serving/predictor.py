"""One model shared by every request: predictions run one at a time, and the last few results are
kept so that accepting an object does not run the network again."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from ..core.geometry import as_points_array
from ..inference.engine import check_threshold, mask_and_score, resolve_threshold


@dataclass
class Prediction:
    """A mask for one object: ``mask`` (H, W) bool, ``score`` the mean foreground probability."""

    mask: np.ndarray
    score: float
    threshold: float
    model_ms: float


class Predictor:
    """Serialises predictions on one model (a lock: concurrent clients wait their turn, the
    model never runs twice at once).

    Args:
        model: a :class:`~dextr_lib.model.DextrModel` (anything with its ``runner`` and
            ``predict_image``).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``, as in ``predict``.
        threshold: default threshold (default: the model's profile).
        remember: how many recent predictions to keep for :meth:`predict`'s cache.
    """

    def __init__(self, model, *, precision: str = "fp32", threshold: Optional[float] = None,
                 remember: int = 8):
        self.model = model
        #: the precision it runs in, resolved (``auto`` -> ``bf16`` or ``fp32`` on this machine);
        #: making the runner now also fails at start-up, not at the first click, when the
        #: runtime's extra is missing.
        self.precision = model.runner(None, precision).precision
        if (getattr(model, "meta", None) or {}).get("quantization"):
            self.precision = "int8"  # a quantised graph: its fp32 runner runs int8 operators
        self._requested = precision
        self.threshold = resolve_threshold(threshold, model.preprocess)
        self._lock = threading.Lock()
        self._recent: "OrderedDict[Tuple, Prediction]" = OrderedDict()
        self._remember = remember

    def predict(self, image_key: str, rgb: np.ndarray, points_yx: np.ndarray,
                threshold: Optional[float] = None, *, positive: Optional[np.ndarray] = None,
                negative: Optional[np.ndarray] = None) -> Prediction:
        """The mask of the object with these ``(4, 2)`` ``[y, x]`` points on ``rgb``, and
        correction clicks ``positive``/``negative`` (``(k, 2)`` ``[y, x]``, as
        ``DextrModel.predict_image`` takes them) when given.

        ``image_key`` identifies the image's content (its hash): the same image, points and
        threshold give the kept result without running the network.

        Raises:
            InvalidPointsError: malformed points (the library's check).
            InvalidValueError: a threshold outside ``[0, 1]``.
        """
        pts = as_points_array(points_yx)[0]
        thr = self.threshold if threshold is None else check_threshold(threshold)
        corrections = {name: [np.asarray(c, np.float64).reshape(-1, 2)]
                       for name, c in (("positive", positive), ("negative", negative))
                       if c is not None}
        key = (image_key, tuple(pts.ravel().tolist()), thr,
               tuple((n, tuple(c[0].ravel().tolist())) for n, c in corrections.items()))
        with self._lock:
            hit = self._recent.get(key)
            if hit is not None:
                self._recent.move_to_end(key)
                return replace(hit, model_ms=0.0)  # the network did not run for this request
            t0 = time.perf_counter()
            prob = self.model.predict_image(rgb, [pts], batch_size=1, precision=self._requested,
                                            **corrections)[0]
            model_ms = (time.perf_counter() - t0) * 1000
            mask, score = mask_and_score(prob, thr)  # the mask exactly predict(..., threshold=thr)'s
            result = Prediction(mask, score, thr, model_ms)
            self._recent[key] = result
            while len(self._recent) > self._remember:
                self._recent.popitem(last=False)
            return result
