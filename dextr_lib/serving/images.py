"""The server's images: the photos of one folder (never a path outside it) and uploaded photos,
decoded once and cached by content hash."""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

import numpy as np
import PIL.Image
import PIL.ImageOps
from fastapi import HTTPException

from ..core.images import to_rgb_array
from ..errors import DextrError, LimitError
from ..utils.limits import check_pixels

#: Files listed as photos (by extension, case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Formats a browser shows as they are; others (and EXIF-rotated photos) are sent re-encoded.
_BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                    "WEBP": "image/webp", "BMP": "image/bmp"}
#: The media types of /api/files answers (re-encoded copies are JPEG or PNG).
BROWSER_MEDIA_TYPES = sorted(set(_BROWSER_FORMATS.values()))


@dataclass
class Photo:
    """A decoded photo: ``rgb`` as the library reads it (EXIF orientation applied)."""

    key: str  # SHA-256 of the file's bytes
    rgb: np.ndarray  # (H, W, 3) uint8

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def content_key(data: bytes) -> str:
    """The cache key of an encoded image: its SHA-256, hex."""
    return hashlib.sha256(data).hexdigest()


def decode_photo(data: bytes, name: str = "the image") -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` uint8 RGB exactly as :func:`dextr_lib.core.images.read_image`
    does (EXIF orientation applied), checking the pixel limit (:mod:`dextr_lib.utils.limits`) before
    decoding.

    Raises:
        HTTPException: 400 for bytes that are no image.
        LimitError: an image over the pixel limit (the app answers 400).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            im = PIL.Image.open(io.BytesIO(data))
        with im:
            check_pixels(im.size[0], im.size[1], name)
            return to_rgb_array(PIL.ImageOps.exif_transpose(im))
    except PIL.Image.DecompressionBombError as e:
        raise LimitError(f"{name} is too large to decode safely ({e}); if the input is trusted, "
                         "raise the limit with dextr --max-pixels N, or DEXTR_MAX_PIXELS") from None
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if isinstance(e, DextrError):
            raise
        raise HTTPException(400, f"cannot read {name} as an image: {unreadable_reason(data, e)}") from None


def unreadable_reason(data: bytes, error: Exception) -> str:
    """What is wrong with bytes PIL cannot read, in words (PIL's own message names its buffer
    object, ``<_io.BytesIO object at 0x...>``, which says nothing)."""
    if not data:
        return "the file is empty (0 bytes)"
    if isinstance(error, PIL.UnidentifiedImageError):
        return (f"it is not in an image format this server reads (JPEG, PNG, BMP, GIF, TIFF, WebP); "
                f"its first bytes are {data[:8]!r}")
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", str(error)).strip()
    return f"the file is damaged or cut short ({text or type(error).__name__})"


def canonical_id(image_id: str) -> str:
    """One spelling per photo: ``./bear.jpg`` -> ``bear.jpg``, ``sub//bear2.jpg`` -> ``sub/bear2.jpg``
    (``..`` is kept, and refused where an id is looked up)."""
    if not image_id or image_id.startswith("/"):
        return image_id
    return PurePosixPath(image_id).as_posix()


class _ByteBoundedCache:
    """A least-recently-used dict bounded by the total size of its values."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: "OrderedDict[str, Tuple[object, int]]" = OrderedDict()
        self._size = 0

    def get(self, key: str):
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: object, size: int) -> None:
        if key in self._items:
            self._size -= self._items.pop(key)[1]
        self._items[key] = (value, size)
        self._size += size
        while self._size > self.max_bytes and len(self._items) > 1:
            _, (_, s) = self._items.popitem(last=False)
            self._size -= s

    def __len__(self) -> int:
        return len(self._items)


class ImageStore:
    """Photos by id: the files of ``root`` (id = path relative to it, with ``/``) and uploads
    (id = ``upload/<hash prefix>/<file name>``).

    Only regular files under ``root`` with an image extension are served; an id with ``..``,
    an absolute path, a hidden part or a symlink leading outside ``root`` is refused.
    """

    def __init__(self, root: Optional[Path], *, cache_bytes: int):
        self.root = Path(root).resolve() if root is not None else None
        self._lock = threading.Lock()
        self._decoded = _ByteBoundedCache(cache_bytes)  # content hash -> Photo
        self._uploads = _ByteBoundedCache(cache_bytes)  # upload id -> encoded bytes
        self._file_keys: Dict[str, Tuple[int, int, str]] = {}  # path -> (mtime_ns, size, hash)

    # -- listing and ids -----------------------------------------------------------------------
    def list_ids(self) -> List[str]:
        """The ids of the folder's photos, sorted (none without a folder)."""
        if self.root is None:
            return []
        ids = []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not enter symlinked dirs
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in filenames:
                if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = Path(dirpath) / f
                if self._inside(path):
                    ids.append(path.relative_to(self.root).as_posix())
        return sorted(ids)

    def upload_ids(self) -> List[str]:
        with self._lock:
            return list(self._uploads._items)

    def _inside(self, path: Path) -> bool:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return real.is_file() and (real == self.root or self.root in real.parents)

    def path_of(self, image_id: str) -> Path:
        """The file of a folder photo.

        Raises:
            HTTPException: 404 for anything that is not one of the folder's photos.
        """
        if self.root is None:
            raise HTTPException(404, f"no image {image_id!r}: the server has no image folder "
                                     "(start it with --images DIR, or upload the photo)")
        parts = PurePosixPath(image_id).parts
        if (not image_id or "\\" in image_id or "\x00" in image_id or image_id.startswith("/")
                or any(p in ("..", ".") or p.startswith(".") for p in parts)
                or not image_id.lower().endswith(IMAGE_EXTENSIONS)):
            raise HTTPException(404, f"no image {image_id!r} in the image folder "
                                     "(ids are paths relative to it, as /api/images lists them)")
        path = self.root.joinpath(*parts)
        if not self._inside(path):
            raise HTTPException(404, f"no image {image_id!r} in the image folder")
        return path

    # -- bytes and decoding --------------------------------------------------------------------
    def decode_upload(self, data: bytes, filename: str) -> Tuple[str, Photo]:
        """An uploaded file's clean name (its last path part, with an image extension) and its
        decoded photo; :meth:`keep_upload` then keeps it under the name it gets."""
        name = PurePosixPath(filename.replace("\\", "/")).name or "upload"
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            name += ".png"
        return name, self._decode(data, name)

    def keep_upload(self, data: bytes, key: str, name: str) -> str:
        """Keep an uploaded photo's bytes; returns its id ``upload/<hash prefix>/<name>``."""
        image_id = f"upload/{key[:16]}/{name}"
        with self._lock:
            self._uploads.put(image_id, data, len(data))
        return image_id

    def is_upload(self, image_id: str) -> bool:
        return image_id.startswith("upload/")

    def encoded(self, image_id: str) -> bytes:
        """The encoded bytes of a photo (404 when unknown)."""
        if self.is_upload(image_id):
            with self._lock:
                data = self._uploads.get(image_id)
            if data is None:
                raise HTTPException(404, f"no uploaded image {image_id!r} (uploads are kept in "
                                         "memory; upload the photo again)")
            return data  # type: ignore[return-value]
        path = self.path_of(image_id)
        try:
            return path.read_bytes()
        except OSError as e:
            raise HTTPException(400, f"cannot read image {image_id}: {e.strerror or e}") from None

    def photo(self, image_id: str) -> Photo:
        """The decoded photo of an id (cached by content; a folder file is re-read when changed)."""
        if not self.is_upload(image_id):
            path = self.path_of(image_id)
            st = path.stat()
            with self._lock:
                known = self._file_keys.get(str(path))
            if known is not None and known[:2] == (st.st_mtime_ns, st.st_size):
                with self._lock:
                    cached = self._decoded.get(known[2])
                if cached is not None:
                    return cached  # type: ignore[return-value]
            data = self.encoded(image_id)
            photo = self._decode(data, image_id)
            with self._lock:
                self._file_keys[str(path)] = (st.st_mtime_ns, st.st_size, photo.key)
            return photo
        return self._decode(self.encoded(image_id), image_id)

    def photo_from_bytes(self, data: bytes, name: str = "the uploaded image") -> Photo:
        return self._decode(data, name)

    def _decode(self, data: bytes, name: str) -> Photo:
        key = content_key(data)
        with self._lock:
            cached = self._decoded.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        photo = Photo(key, decode_photo(data, name))
        with self._lock:
            self._decoded.put(key, photo, photo.rgb.nbytes)
        return photo

    def browser_image(self, image_id: str) -> Tuple[bytes, str]:
        """Bytes and media type a browser shows with the same pixels and orientation the model
        sees: the file itself when it can, else a re-encoded copy."""
        data = self.encoded(image_id)
        try:
            with PIL.Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                orientation = im.getexif().get(0x0112, 1)
        except (PIL.UnidentifiedImageError, OSError) as e:
            raise HTTPException(400, f"cannot read {image_id} as an image: {e}") from None
        if fmt in _BROWSER_FORMATS and orientation in (None, 1):
            return data, _BROWSER_FORMATS[fmt]
        rgb = self.photo(image_id).rgb if not self.is_upload(image_id) else self._decode(data, image_id).rgb
        buf = io.BytesIO()
        if fmt == "JPEG":
            PIL.Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
            return buf.getvalue(), "image/jpeg"
        PIL.Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"

    def size_of(self, image_id: str) -> Tuple[int, int]:
        """``(height, width)`` as the model sees the photo (EXIF orientation applied), read
        from the header only."""
        data = self.encoded(image_id)
        try:
            with PIL.Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
                return h, w
        except (PIL.UnidentifiedImageError, OSError) as e:
            raise HTTPException(400, f"cannot read {image_id} as an image: {e}") from None
