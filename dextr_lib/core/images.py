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
    ``(H, W, 4)`` of uint8, bool, or float in ``[0, 1]``. Grayscale is replicated to three
    channels; RGBA drops alpha (a transparent pixel keeps its stored colour).

    Raises:
        InvalidImageError: unsupported type, shape or dtype.
    """
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise InvalidImageError(
                f"expected an 8-bit photo, got a PIL image of mode {image.mode!r} (a label image?)"
            )
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
            f"expected a uint8, bool or float image array, got dtype {arr.dtype}"
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)
