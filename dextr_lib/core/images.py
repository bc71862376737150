"""Reading images and normalising what callers pass in to RGB."""
from __future__ import annotations

import os
import stat
import sys
import warnings
from typing import Union

import numpy as np
import PIL.Image
import PIL.ImageOps

from ..errors import InvalidImageError, LimitError
from ..utils.fileio import os_error_cause, shown_path
from ..utils.limits import check_pixels

ImageLike = Union[PIL.Image.Image, np.ndarray]


def open_image(path: Union[str, os.PathLike]) -> PIL.Image.Image:
    """Open an image file lazily (pixels not decoded yet) after the safety checks every reader
    needs: a regular file (a named pipe would hang, a device never end) within the pixel limit
    (:mod:`dextr_lib.utils.limits`; Pillow's decompression-bomb error becomes the same message).

    Raises:
        InvalidImageError: missing, not a regular file, or not a readable image.
        LimitError: more pixels than ``max_pixels``.
    """
    shown = shown_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidImageError(f"image not found: {shown}") from None
    except (OSError, ValueError) as e:
        cause = os_error_cause(e) if isinstance(e, OSError) else str(e)
        raise InvalidImageError(f"cannot read image {shown}: {cause}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe or device?)"
        raise InvalidImageError(f"cannot read image {shown}: it is {kind}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            im = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as e:
        raise LimitError(f"{shown} is too large to decode safely ({e}); if the input is trusted, "
                         "raise the limit with dextr --max-pixels N, or DEXTR_MAX_PIXELS") from None
    except PIL.UnidentifiedImageError:
        raise InvalidImageError(f"cannot read image {shown}: not an image format Pillow knows") from None
    except OSError as e:
        raise InvalidImageError(f"cannot read image {shown}: {os_error_cause(e)}") from None
    try:
        check_pixels(im.size[0], im.size[1], shown)
    except LimitError:
        im.close()
        raise
    return im


def read_image(path: Union[str, os.PathLike], *, exif_transpose: bool = True) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    Args:
        path: image file.
        exif_transpose: apply the EXIF orientation, so that pixel coordinates match what image
            viewers show (where users read their click coordinates). Dataset readers pass False
            because annotation masks are stored in the raw orientation.

    Raises:
        InvalidImageError: missing, not a regular file, or unreadable.
        LimitError: more pixels than the limit (see :mod:`dextr_lib.utils.limits`).
    """
    with open_image(path) as im:
        try:
            if exif_transpose:
                im = PIL.ImageOps.exif_transpose(im)
            return to_rgb_array(im)
        except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
            if isinstance(e, InvalidImageError):
                raise
            raise InvalidImageError(f"cannot read image {shown_path(path)}: {e}") from None


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Convert a PIL image or array to ``(H, W, 3)`` uint8 RGB.

    Accepts PIL images of any mode, and arrays ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
    ``(H, W, 4)`` of uint8, uint16, bool, or float in ``[0, 1]``. Grayscale is replicated to three
    channels; RGBA drops alpha (a transparent pixel keeps its stored colour). Deeper grayscale
    is scaled to 8 bits as image viewers show it (:func:`scale_to_uint8`).

    Raises:
        InvalidImageError: unsupported type, shape or dtype.
    """
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return _gray_to_rgb(scale_to_uint8(np.asarray(image)))
        return np.array(image.convert("RGB"))  # a writable copy, torch.from_numpy needs one
    torch = sys.modules.get("torch")  # no tensor exists before torch is imported: not imported here
    if torch is not None and isinstance(image, torch.Tensor):
        raise InvalidImageError(
            "expected a PIL image or a NumPy (H, W[, C]) array, got a torch.Tensor; "
            "use tensor.permute(1, 2, 0).cpu().numpy()"
        )
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"expected a PIL image or a NumPy array, got {type(image).__name__}"
        )
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InvalidImageError(
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"the image is empty: shape {image.shape}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = scale_to_uint8(arr)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InvalidImageError(
                "float images must hold values in [0, 1] "
                f"(got range {np.nanmin(arr):.3g}..{np.nanmax(arr):.3g}); divide uint8 data by 255"
            )
        arr = np.round(arr * 255.0).astype(np.uint8)
    else:
        raise InvalidImageError(
            f"expected a uint8, uint16, bool or float image array, got dtype {arr.dtype}"
        )
    if arr.ndim == 2:
        return _gray_to_rgb(arr)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grayscale image as 8 bits, as image viewers show it.

    Integers within 0..65535 (16-bit files: Pillow modes ``I;16``, and ``I`` as Pillow opens
    16-bit PNGs) scale by the 16-bit range, ``round(v / 257)``: the same as Pillow reads 48-bit
    RGB, and as browsers and GIMP show such files (a 12-bit scan stays as dark as they show it).
    Floats within ``[0, 1]`` scale by 255. Any other range (negative or 32-bit values, float
    data in physical units: mode ``F``) is stretched from the image's own minimum to maximum,
    NaN as the minimum.

    Args:
        values: ``(H, W)`` numbers.

    Returns:
        ``(H, W)`` uint8.
    """
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.integer) and v.size and v.min() >= 0 and v.max() <= 65535:
        return np.round(v.astype(np.float64) / 257.0).astype(np.uint8)
    v = v.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.uint8)
    lo, hi = v[finite].min(), v[finite].max()
    if np.issubdtype(np.asarray(values).dtype, np.floating) and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    v = np.where(finite, v, lo)
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.round(np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
