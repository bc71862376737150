"""Reading annotation targets (label images, mask files, SBD instance files) and finding the photo
a target belongs to. Every reader of targets in dextr (``points-from-mask``, the datasets,
evaluation, COCO conversion) uses this module.

Rules, documented here once:

* **Label image**: an ``(H, W)`` array of integer label values. Palette PNGs give their palette
  *indices* (never colours); 8-, 16- and 32-bit grayscale give their values; gray+alpha (``LA``,
  ``PA``) gives the first channel. A colour (RGB) image is not a label image: it is refused.
* **Mask file** (one object per file): a pixel is the object when *any* colour channel is
  non-zero; alpha is ignored; palette PNGs use their indices (index 0 is background). So a dark
  blue pixel ``(0, 0, 4)`` of an RGB mask *is* object. (dextr's dataset reader used to convert
  to grayscale first, where ``(0, 0, 4)`` rounds to 0; ``points-from-mask`` counted it. A mask's
  background is exactly zero, and a class colour must not vanish because its luminance rounds
  to 0, so the non-zero rule won.)
* **Which photo belongs to a target** (the stem rule): the photo whose file stem is the
  *longest* prefix of the target's stem that ends at the end of that stem or right before a
  separator (any character that is not a letter or digit: ``_``, ``-``, ``.``, a space). So
  ``img0.png``, ``img0_labels.png``, ``img0_mask3.png`` and ``img0-gt.png`` belong to
  ``img0.jpg``; ``img0b_mask0.png`` belongs to ``img0b.jpg`` and never to ``img0.jpg``.
  :func:`owner_stem` is the rule; dataset pairing (:func:`dextr_lib.data.pair_files`) and
  ``points-from-mask`` (:func:`find_image_for_mask`) both use it.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.images import open_image
from ..errors import DatasetError, InvalidImageError
from ..utils.fileio import shown_path
from ..utils.limits import check_labels

PathLike = Union[str, os.PathLike]

#: File extensions of photos (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Folders, relative to a target's folder, searched for its photo when no image folder is given.
IMAGE_DIR_GUESSES = (".", "../images", "../JPEGImages", "../imgs", "../img")

_LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")


# -- readers -----------------------------------------------------------------------------------
def read_label_image(path: PathLike) -> np.ndarray:
    """A label image as an ``(H, W)`` int32 array of label values (see the module docstring).

    Raises:
        InvalidImageError: missing or unreadable file, or not a one-channel integer image.
        LimitError: too many pixels or (16/32-bit images) too many labels (:mod:`dextr_lib.utils.limits`).
    """
    with open_image(path) as im:
        mode = im.mode
        try:
            if mode in _LABEL_MODES:
                arr = np.asarray(im)
            elif mode in ("LA", "PA"):
                arr = np.asarray(im)[..., 0]
            else:
                raise InvalidImageError(
                    f"label image {shown_path(path)} has PIL mode {mode!r}; expected integer labels: a palette "
                    "PNG (P), 8-bit grayscale (L) or 16/32-bit (I;16, I) image. A colour image with "
                    "one object per file is a mask (points-from-mask --kind mask, dataset custom_mask)"
                )
        except (OSError, ValueError, SyntaxError) as e:  # corrupt data shows only while decoding
            raise InvalidImageError(f"cannot read label image {shown_path(path)}: {e}") from None
    if arr.ndim != 2:
        raise InvalidImageError(f"label image {shown_path(path)} has shape {arr.shape}; expected (H, W)")
    if arr.dtype.itemsize > 1:  # 8-bit images hold at most 256 labels
        check_labels(len(np.unique(arr)), path)
    return arr.astype(np.int32, copy=False)


def read_mask(path: PathLike) -> np.ndarray:
    """A mask file as ``(H, W)`` bool: a pixel is the object when any colour channel is non-zero
    (alpha ignored; palette indices, not colours).

    Raises:
        InvalidImageError: missing or unreadable file.
        LimitError: too many pixels.
    """
    with open_image(path) as im:
        try:
            arr = np.asarray(im)
            if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                arr = arr[..., :-1]
        except (OSError, ValueError, SyntaxError) as e:
            raise InvalidImageError(f"cannot read mask {shown_path(path)}: {e}") from None
    if arr.ndim == 3:
        arr = (arr != 0).any(axis=2)
    if arr.ndim != 2:
        raise InvalidImageError(f"mask {shown_path(path)} has shape {arr.shape}; expected (H, W)")
    return arr != 0


def read_sbd_instances(path: PathLike) -> Tuple[np.ndarray, List[int]]:
    """An SBD ``inst/*.mat`` file -> ``(instance map (H, W) int32, class id of each instance)``.

    Raises:
        DatasetError: unreadable file or not an SBD instance file.
    """
    try:
        from scipy.io import loadmat  # scipy comes with scikit-image; only SBD needs it
    except ImportError:  # pragma: no cover
        raise DatasetError("reading SBD .mat files needs scipy: pip install scipy") from None
    try:
        gt = loadmat(os.fspath(path))["GTinst"][0, 0]
        seg = np.asarray(gt["Segmentation"]).astype(np.int32)
        cats = [int(c) for c in np.asarray(gt["Categories"]).ravel()]
    except Exception as e:
        raise DatasetError(f"cannot read SBD instance file {path}: {e}") from None
    return seg, cats


def read_label_file(path: PathLike) -> np.ndarray:
    """A label image, or the instance map of an SBD ``inst/*.mat`` file."""
    if os.fspath(path).lower().endswith(".mat"):
        return read_sbd_instances(path)[0]
    return read_label_image(path)


# -- objects in a target -----------------------------------------------------------------------
def connected_regions(mask: np.ndarray) -> np.ndarray:
    """8-connected regions of a bool mask, numbered 1.. in raster order (0: background)."""
    from skimage.measure import label as cc_label  # scikit-image is slow to import

    return cc_label(mask, connectivity=2)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (empty stays empty)."""
    comps = connected_regions(mask)
    if comps.max() <= 1:
        return mask
    counts = np.bincount(comps.ravel())
    counts[0] = 0
    return comps == int(counts.argmax())


# -- the stem rule -----------------------------------------------------------------------------
def stem_of(path: PathLike) -> str:
    """File name without its (last) extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def owner_stem(target_stem: str, stems_sorted: Sequence[str]) -> Optional[str]:
    """The stem rule: the longest stem in ``stems_sorted`` (sorted) that is a prefix of
    ``target_stem`` ending at its end or right before a separator; None when there is none."""
    cuts = {i for i, ch in enumerate(target_stem) if not ch.isalnum()} | {len(target_stem)}
    for cut in sorted(cuts, reverse=True):
        prefix = target_stem[:cut]
        i = bisect.bisect_left(stems_sorted, prefix)
        if i < len(stems_sorted) and stems_sorted[i] == prefix:
            return prefix
    return None


def is_image_file(path: PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


class PhotoFinder:
    """Finds the photo of each target by the stem rule, listing each folder once.

    Args:
        image_dir: the folder holding the photos; default: for each target, its own folder, then
            ``../images``, ``../JPEGImages``, ``../imgs``, ``../img`` (the first folder with a
            match wins).
        exclude: files that are never photos (the targets themselves).
    """

    def __init__(self, image_dir: Optional[PathLike] = None, exclude: Iterable[PathLike] = ()):
        self.image_dir = None if image_dir is None else Path(image_dir)
        self._exclude = {os.path.normcase(os.path.abspath(p)) for p in exclude}
        self._listings: Dict[str, Tuple[List[str], Dict[str, Path]]] = {}

    def folders(self, target: PathLike) -> List[Path]:
        """The folders searched for ``target``'s photo, in order."""
        if self.image_dir is not None:
            return [self.image_dir]
        parent = Path(target).parent
        return [parent / d for d in IMAGE_DIR_GUESSES]

    def _listing(self, folder: Path) -> Tuple[List[str], Dict[str, List[Path]]]:
        """Sorted photo stems of ``folder`` and each stem's photos (``.jpg`` before ``.png`` ...)."""
        key = os.path.normcase(os.path.abspath(folder))
        if key not in self._listings:
            by_stem: Dict[str, List[Path]] = {}
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
            names = sorted((n for n in names if is_image_file(n)),
                           key=lambda n: (rank[os.path.splitext(n)[1].lower()], n))
            for name in names:
                p = folder / name
                if os.path.normcase(os.path.abspath(p)) not in self._exclude and p.is_file():
                    by_stem.setdefault(stem_of(name), []).append(p)
            self._listings[key] = (sorted(by_stem), by_stem)
        return self._listings[key]

    def find(self, target: PathLike) -> Optional[Path]:
        """The photo of ``target``, or None. The target itself is never its own photo."""
        me = os.path.normcase(os.path.abspath(target))
        stem = stem_of(target)
        for folder in self.folders(target):
            stems, by_stem = self._listing(folder)
            while True:
                owner = owner_stem(stem, stems)
                if owner is None:
                    break
                photos = [p for p in by_stem[owner] if os.path.normcase(os.path.abspath(p)) != me]
                if photos:
                    return photos[0]
                stems = [s for s in stems if s != owner]  # only the target itself had that stem
        return None


def find_image_for_mask(mask_path: PathLike, image_dir: Optional[PathLike] = None) -> Optional[Path]:
    """The photo a label/mask file belongs to, by the stem rule (see :class:`PhotoFinder`)."""
    return PhotoFinder(image_dir, exclude=[mask_path]).find(mask_path)
