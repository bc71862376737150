"""Label Studio's brush RLE: how a ``brushlabels`` result carries a mask (``value.format = "rle"``).

The mask is flattened row by row as an RGBA image (each pixel's value repeated 4 times, 255 for
the object), then packed with the run-length scheme of thi.ng's ``rle-pack`` that Label Studio's
editor decodes: a 32-bit value count, the word size - 1 (5 bits), four run-length field widths - 1
(4 bits each), then chunks: a flag bit (1: one word repeated, 0: literal words), a 2-bit index of
the run-length field width, the run length - 1 in that many bits, then the word(s). Bits are
big-endian within bytes; the result is the list of byte values. Label Studio's SDK
(``label_studio_sdk/converter/brush.py``) reads and writes the same bytes; dextr does not depend
on it.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..errors import InvalidValueError, MismatchError
from ..utils.limits import check_pixels

#: Widths (bits) of the run-length field, chosen per chunk by a 2-bit index (the SDK's defaults).
RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8
_CHANNELS = 4  # RGBA: Label Studio's brush stores an image, the alpha channel is the mask


def mask_to_brush(mask: np.ndarray) -> List[int]:
    """Encode a mask as Label Studio brush RLE.

    Args:
        mask: ``(H, W)`` bool or numbers (non-zero = object).

    Returns:
        The RLE bytes as a list of ints (what ``value.rle`` holds).

    Raises:
        MismatchError: ``mask`` is not 2-D.

    Example:
        >>> rle = mask_to_brush(np.eye(3, dtype=bool))
        >>> brush_to_mask(rle, 3, 3).astype(int).tolist()
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MismatchError(f"a brush mask must be 2-D (H, W), got shape {mask.shape}")
    flat = np.where(mask.ravel() != 0, 255, 0).astype(np.int64)
    total = flat.size * _CHANNELS
    # Runs of equal pixels; every pixel counts 4 times (RGBA). Only repeat chunks are written.
    if flat.size:
        starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
        lengths = np.diff(np.r_[starts, flat.size]) * _CHANNELS
        values = flat[starts]
    else:
        lengths = values = np.zeros(0, np.int64)
    longest = 1 << RLE_SIZES[-1]
    pieces = -(-lengths // longest)  # a run longer than the widest field is split
    values = np.repeat(values, pieces)
    counts = np.full(values.size, longest, np.int64)
    last = np.cumsum(pieces) - 1
    counts[last] = lengths - (pieces - 1) * longest
    widths = np.asarray(RLE_SIZES)
    size_index = np.searchsorted(1 << widths, counts - 1, side="right")
    # Fields of each chunk: flag=1 (1 bit), size index (2), count - 1 (width), the word (8).
    n = values.size
    field_values = np.stack([np.ones(n, np.int64), size_index, counts - 1, values], 1).ravel()
    field_bits = np.stack([np.ones(n, np.int64), np.full(n, 2), widths[size_index],
                           np.full(n, WORD_SIZE)], 1).ravel()
    header_values = np.array([total, WORD_SIZE - 1, *(w - 1 for w in RLE_SIZES)], np.int64)
    header_bits = np.array([32, 5, 4, 4, 4, 4], np.int64)
    return _pack(np.r_[header_values, field_values], np.r_[header_bits, field_bits])


def _pack(values: np.ndarray, bits: np.ndarray) -> List[int]:
    """Write each value in its number of bits, most significant first, into bytes."""
    owner = np.repeat(np.arange(values.size), bits)
    ends = np.cumsum(bits)
    shift = ends[owner] - 1 - np.arange(int(ends[-1]))  # bit position inside its field
    stream = ((values[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(stream).tolist()


def decode_brush(rle: Sequence[int]) -> np.ndarray:
    """Decode Label Studio brush RLE to its flat values (``4 * H * W`` uint8 for a brush mask).

    Raises:
        InvalidValueError: bytes that are not valid brush RLE (truncated, bad header).
        LimitError: a header asking for more values than the pixel limit allows.
    """
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise InvalidValueError("brush RLE must be a list of byte values (0-255)") from None
    if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise InvalidValueError("brush RLE must be a flat list of byte values (0-255)")
    bits = np.unpackbits(data.astype(np.uint8))
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > bits.size:
            raise InvalidValueError("brush RLE ends in the middle of a value (truncated)")
        value = 0
        for b in bits[pos:pos + n]:
            value = (value << 1) | int(b)
        pos += n
        return value

    num = read(32)
    check_pixels(num // _CHANNELS, 1, "the brush RLE's image")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def brush_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Decode a brush mask: ``(H, W)`` bool, the RGBA image's alpha channel > 0.

    Raises:
        MismatchError: the RLE does not hold ``height x width`` RGBA pixels.
        InvalidValueError: bytes that are not valid brush RLE.
    """
    flat = decode_brush(rle)
    if flat.size != height * width * _CHANNELS:
        raise MismatchError(f"the brush RLE holds {flat.size} values, not the "
                            f"{height}x{width}x4 of a {width}x{height} image")
    return flat.reshape(height, width, _CHANNELS)[..., 3] > 0
