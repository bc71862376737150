"""Mask files: safe, unique names for per-object mask PNGs, and atomic image writes.

Output names are ``PHOTO-STEM_<tag>.png``: the tag is ``label<L>`` for objects of label images,
the object's name for mask files (the mask file's stem), else ``obj<i>`` (its position in its
image). Both parts come from input data, so they are sanitised by :func:`safe_name` (letters,
digits, ``_``, ``-`` and single dots only; no separators, no ``..``, no leading dot, at most
:data:`MAX_PART` characters) and unique by construction: a name already given in this run
(compared case-insensitively, as macOS and Windows file systems do) gets ``-2``, ``-3``, ...
The resolved path must lie directly inside the output folder (a symlink leading out is refused).
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Optional, Set, Union

import numpy as np
import PIL.Image

from ..errors import OutputError
from ..utils.fileio import atomic_open, shown_path
from .objects import ObjectEntry

PathLike = Union[str, os.PathLike]

#: Longest photo stem or object tag kept in an output name (characters).
MAX_PART = 80
_UNSAFE = re.compile(r"[^\w.\-]+")
_DOTS = re.compile(r"\.{2,}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                     *(f"lpt{i}" for i in range(10))}


def safe_name(text: str, max_len: int = MAX_PART) -> str:
    """``text`` as one safe part of a file name.

    Path separators, control characters and punctuation other than ``_ - .`` become ``_``; a run
    of dots becomes ``_``; leading dots and dashes are dropped; the result is cut to ``max_len``
    characters and is never empty or a Windows device name (``con``, ``nul``, ...).
    """
    text = unicodedata.normalize("NFC", str(text))
    text = _UNSAFE.sub("_", text)
    text = _DOTS.sub("_", text)
    text = text.lstrip(".-")[:max_len] or "_"
    if text.split(".")[0].lower() in _WINDOWS_RESERVED:
        text = "_" + text[: max_len - 1]
    return text


def object_tag(obj: ObjectEntry, index: int) -> str:
    """``label<L>`` when the object has a label, else its name, else ``obj<index>``."""
    if obj.label is not None:
        return f"label{obj.label}"
    if obj.name:
        return str(obj.name)
    return f"obj{index}"


class MaskNamer:
    """Gives each object a safe, unique mask path inside ``out_dir``."""

    def __init__(self, out_dir: PathLike, suffix: str = ".png"):
        self.out_dir = Path(out_dir)
        self.suffix = suffix
        self._used: Set[str] = set()

    def path_for(self, photo: Optional[str], obj: ObjectEntry, index: int) -> Path:
        """The path of ``obj``'s mask (the ``index``-th object of ``photo``).

        Raises:
            OutputError: the path would resolve outside ``out_dir`` (a symlink).
        """
        stem = safe_name(Path(photo).stem if photo else "image")
        base = f"{stem}_{safe_name(object_tag(obj, index))}"
        name, n = base + self.suffix, 2
        while name.casefold() in self._used:
            name, n = f"{base}-{n}{self.suffix}", n + 1
        self._used.add(name.casefold())
        path = self.out_dir / name
        root = self.out_dir.resolve()
        if path.resolve().parent != root:
            raise OutputError(f"refusing to write {shown_path(path)}: it resolves to "
                              f"{shown_path(path.resolve())}, outside {shown_path(root)}")
        return path


def mask_image(mask: np.ndarray, prob: bool = False) -> PIL.Image.Image:
    """An ``(H, W)`` mask as an 8-bit grayscale image: bool -> 0/255, or (``prob``) a
    probability in ``[0, 1]`` -> 0..255."""
    if prob:
        return PIL.Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8), mode="L")
    return PIL.Image.fromarray(np.asarray(mask).astype(np.uint8) * 255, mode="L")


def save_image(image: PIL.Image.Image, path: PathLike) -> None:
    """Write ``image`` atomically in the format its extension names (``.png``, ...).

    Raises:
        OutputError: an unknown extension or an unwritable place.
    """
    path = Path(path)
    fmt = PIL.Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"cannot write {shown_path(path)}: unknown image extension {path.suffix!r}; use a .png path")
    try:
        with atomic_open(path, "wb") as f:  # raises OutputError for OS errors (full disk, ...)
            image.save(f, format=fmt)
    except OutputError:
        raise
    except (OSError, ValueError) as e:  # a mode the format cannot hold
        raise OutputError(f"cannot write {shown_path(path)}: {e}; use a .png path") from None


def write_mask(mask: np.ndarray, path: PathLike, prob: bool = False) -> None:
    """Write one mask (see :func:`mask_image`) atomically."""
    save_image(mask_image(mask, prob), path)
