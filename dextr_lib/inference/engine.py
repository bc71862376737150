"""The batching engine: objects in, masks out, through one :class:`~dextr_lib.inference.runtimes.Runner`.

Every prediction of the library goes through :class:`Engine`: ``DextrModel.predict``,
``predict_image`` and ``predict_iter``, the file workflows (:mod:`dextr_lib.workflows.predict`),
evaluation and the annotation server. It converts each image once, crops every object of it
(:meth:`~dextr_lib.inference.preprocessing.Preprocess.make_inputs`), batches objects across
images, runs the network and pastes each probability map back into its image. It consumes its
input lazily and yields each mask as soon as its batch is done, so memory holds one batch.

The rules every caller shares live here too: the default threshold (:func:`resolve_threshold`),
the object score (:func:`mask_and_score`) and the checks of a threshold and a batch size.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..core.geometry import check_points_in_image
from ..core.images import to_rgb_array
from ..errors import InvalidValueError
from .device import default_batch_size, torch_threads
from .preprocessing import Preprocess, as_corrections, image_to_tensor
from .runtimes import Runner


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` when it is an integer >= 1.

    Raises:
        InvalidValueError: otherwise.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InvalidValueError(f"batch size must be an integer >= 1 (objects per forward), got {batch_size}")
    return int(batch_size)


def check_threshold(threshold: float, what: str = "threshold") -> float:
    """``threshold`` as a float when it is a probability in ``[0, 1]``.

    Raises:
        InvalidValueError: otherwise (NaN included).
    """
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise InvalidValueError(f"{what} must be a probability in [0, 1], got {threshold}")
    return t


def resolve_threshold(threshold: Optional[float], preprocess: Preprocess) -> float:
    """The threshold a binary mask is cut at: ``threshold``, or the model's
    ``preprocess.threshold`` when ``None``; checked to be in ``[0, 1]``.

    Raises:
        InvalidValueError: a threshold outside ``[0, 1]``.
    """
    return check_threshold(preprocess.threshold if threshold is None else threshold)


def mask_and_score(prob: np.ndarray, threshold: float) -> Tuple[np.ndarray, float]:
    """The binary mask ``prob >= threshold`` and its score, the mean probability over the mask's
    pixels (0 for an empty mask).

    Args:
        prob: ``(H, W)`` float32 probabilities.
        threshold: in ``[0, 1]``.

    Returns:
        ``(mask, score)``: ``(H, W)`` bool, float.
    """
    mask = prob >= threshold
    return mask, (float(prob[mask].mean()) if mask.any() else 0.0)


class Engine:
    """Batches objects across images through ``runner`` and yields one mask per object.

    Args:
        runner: runs ``(N, 4, T, T)`` inputs to ``(N, 1, T, T)`` logits on ``device``.
        preprocess: the network's crop, heatmap and paste-back settings.
        device: where inputs are made and probabilities pasted back.
        batch_size: objects per network forward (default:
            :func:`~dextr_lib.inference.device.default_batch_size` of the runtime and device).
        threshold: if given, masks are bool ``prob >= threshold``; else float32 probabilities.
        network_mode: a context the network runs in while :meth:`run` yields (the model puts a
            PyTorch network in eval mode and restores a training loop's mode after).

    Raises:
        InvalidValueError: a batch size below 1 or a threshold outside ``[0, 1]``.
    """

    def __init__(self, runner: Runner, preprocess: Preprocess, device: torch.device, *,
                 batch_size: Optional[int] = None, threshold: Optional[float] = None,
                 network_mode: Callable[[], ContextManager] = contextlib.nullcontext):
        self.runner = runner
        self._network_mode = network_mode
        self.preprocess = preprocess
        self.device = device
        self.batch_size = (default_batch_size(runner.name, device) if batch_size is None
                           else check_batch_size(batch_size))
        self.threshold = None if threshold is None else check_threshold(threshold)
        # ONNX Runtime and OpenVINO keep their own CPU threads, which spin a little after each
        # call: torch doing the crops and paste-backs on those cores too slowed the network
        # between them (resunet18 int8 at 512: predict 1.10-1.16x the bare network; one torch
        # thread beside them: 1.02-1.05x, and faster overall).
        self._pre_post = (functools.partial(torch_threads, 1)
                          if runner.name != "torch" and device.type == "cpu" else contextlib.nullcontext)

    def run(self, items: Iterable[tuple]) -> Iterator[np.ndarray]:
        """One mask per object of ``items``, in order.

        Args:
            items: ``(image, points)`` pairs or ``(image, points, positive, negative)``
                tuples, consumed lazily: ``image`` a PIL image or array (see
                :func:`~dextr_lib.core.images.to_rgb_array`), ``points`` a checked
                ``(K, 4, 2)`` ``[y, x]`` array of its objects, ``positive`` and ``negative``
                ``None`` or ``K`` ``(k, 2)`` ``[y, x]`` correction clicks per object
                (:func:`~dextr_lib.inference.preprocessing.as_corrections`).

        Raises:
            CorrectionError: a correction outside its object's crop, or a negative one for a
                network without the negative-click channel (raised when that object is reached).
            InvalidPointsError: points outside their image
                (:func:`~dextr_lib.core.geometry.check_points_in_image`), raised as that image is reached.

        Yields:
            ``(H, W)`` masks of their images: float32 probabilities, or bool with a threshold.
        """
        pp, dev, batch_size, pre_post = self.preprocess, self.device, self.batch_size, self._pre_post
        pending: List[Tuple[torch.Tensor, np.ndarray, np.ndarray, Tuple[int, int]]] = []
        n_pending = 0
        with self._network_mode(), torch.inference_mode():
            for image, pts, *clicks in items:
                pos, neg = (as_corrections(c, len(pts), name) for c, name in
                            zip((*clicks, None, None), ("positive", "negative")))
                rgb = to_rgb_array(image)
                check_points_in_image(pts, rgb.shape[:2])  # the one rule, for every caller
                with pre_post():
                    img_t = image_to_tensor(rgb, dev)
                size = rgb.shape[:2]
                for s in range(0, len(pts), batch_size):
                    i, end = s, min(s + batch_size, len(pts))
                    while i < end:
                        take = slice(i, min(end, i + batch_size - n_pending))
                        i = take.stop
                        part = pts[take]
                        with pre_post():
                            x, boxes = pp.make_inputs(img_t, part, pos and pos[take], neg and neg[take])
                        pending.append((x, boxes, part, size))
                        n_pending += len(part)
                        if n_pending >= batch_size:
                            yield from self._flush(pending)
                            n_pending = 0
            if pending:
                yield from self._flush(pending)

    def _flush(self, pending: list) -> Iterator[np.ndarray]:
        """Run the pending crops as one batch; yield their masks (``pending`` is emptied)."""
        # a batch of one is not re-concatenated (a copy of the whole input for nothing)
        x = pending[0][0] if len(pending) == 1 else torch.cat([p[0] for p in pending])
        logits = self.runner(x)
        masks = []
        with self._pre_post():
            probs = torch.sigmoid(logits[:, 0].to(self.device))
            start = 0
            for _, boxes, pts, size in pending:
                n = len(boxes)
                for m in self.preprocess.paste(probs[start:start + n], boxes, size, pts):
                    m = m.cpu().numpy()
                    masks.append((m >= self.threshold) if self.threshold is not None
                                 else m.astype(np.float32, copy=False))
                start += n
        pending.clear()
        yield from masks  # outside pre_post: the caller runs between masks
