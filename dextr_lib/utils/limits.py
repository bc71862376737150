"""Safety limits on what dextr accepts, in one place.

A small file can ask for a huge allocation: a 875 KB PNG of 30000x30000 pixels, a 3.7 KB 16-bit
label image with 40 000 labels, a checkpoint asking for a 100000-pixel network input, a tiny
pickle that allocates gigabytes. Each limit below is checked where the input is read, and
exceeding it raises :class:`~dextr_lib.errors.LimitError` with a message that names the limit
and how to raise it.

Defaults (generous for real data) can be raised, for the whole process:

* in Python: ``dextr_lib.utils.limits.set_limits(max_pixels=300_000_000)``;
* on the command line: ``dextr --max-pixels N --max-objects N --max-labels N COMMAND ...``;
* in the environment: ``DEXTR_MAX_PIXELS``, ``DEXTR_MAX_OBJECTS``, ``DEXTR_MAX_LABELS``,
  ``DEXTR_MAX_TARGET_SIZE``, ``DEXTR_MAX_CHECKPOINT_MB``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError, LimitError


@dataclass(frozen=True)
class Limits:
    """The limits in force.

    Attributes:
        max_pixels: pixels (width x height) of one image, photo or label (100 megapixels).
        max_objects: objects of one image in a points file or a prediction batch.
        max_labels: distinct label values in one label image.
        max_target_size: side of the network input a checkpoint may ask for (``target_size``).
        max_checkpoint_mb: size of a model file, and of what it may unpack to, in MiB.
    """

    max_pixels: int = 100_000_000
    max_objects: int = 1000
    max_labels: int = 1000
    max_target_size: int = 2048
    max_checkpoint_mb: int = 4096


_ENV = {
    "max_pixels": "DEXTR_MAX_PIXELS",
    "max_objects": "DEXTR_MAX_OBJECTS",
    "max_labels": "DEXTR_MAX_LABELS",
    "max_target_size": "DEXTR_MAX_TARGET_SIZE",
    "max_checkpoint_mb": "DEXTR_MAX_CHECKPOINT_MB",
}
#: How each limit is raised, for messages.
_HOW = {
    "max_pixels": "dextr --max-pixels N, or DEXTR_MAX_PIXELS",
    "max_objects": "dextr --max-objects N, or DEXTR_MAX_OBJECTS",
    "max_labels": "dextr --max-labels N, or DEXTR_MAX_LABELS",
    "max_target_size": "DEXTR_MAX_TARGET_SIZE",
    "max_checkpoint_mb": "DEXTR_MAX_CHECKPOINT_MB",
}
_overrides: dict = {}


def set_limits(**values: Optional[int]) -> None:
    """Change limits for this process (``None`` leaves one as it is).

    Raises:
        ConfigError: an unknown limit or a value that is not a positive integer.
    """
    for key, value in values.items():
        if key not in _ENV:
            raise ConfigError(f"unknown limit {key!r}; known: {', '.join(_ENV)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"limit {key} must be a positive integer, got {value!r}")
        _overrides[key] = value
    if "max_pixels" in _overrides:
        _allow_pillow(_overrides["max_pixels"])


def reset_limits() -> None:
    """Back to the defaults (and the environment)."""
    _overrides.clear()


def current() -> Limits:
    """The limits in force: :func:`set_limits` values, else the environment, else defaults."""
    values = {}
    for key, env in _ENV.items():
        if key in _overrides:
            values[key] = _overrides[key]
            continue
        raw = os.environ.get(env)
        if raw:
            try:
                values[key] = int(raw)
                if values[key] < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"${env} must be a positive integer, got {raw!r}") from None
    limits = Limits(**values)
    if limits.max_pixels != Limits.max_pixels:
        _allow_pillow(limits.max_pixels)
    return limits


def _allow_pillow(max_pixels: int) -> None:
    """Pillow refuses images over twice its own limit before we can look at them; raise its
    limit to ours when the user raised ours (Pillow's stays where it is otherwise)."""
    import PIL.Image

    if PIL.Image.MAX_IMAGE_PIXELS is not None and PIL.Image.MAX_IMAGE_PIXELS < max_pixels:
        PIL.Image.MAX_IMAGE_PIXELS = max_pixels


def _over(key: str, what: str) -> LimitError:
    return LimitError(f"{what}, over the limit {key}={getattr(current(), key)}; if the input is "
                      f"trusted, raise it with {_HOW[key]}")


def check_pixels(width: int, height: int, source: object) -> None:
    """An image of ``width`` x ``height`` may be decoded."""
    if width * height > current().max_pixels:
        raise _over("max_pixels", f"{source} is {width}x{height} = {width * height} pixels "
                    "(a decompression bomb, or an image too large for this machine)")


def check_objects(n: int, source: object) -> None:
    """``n`` objects of one image may be processed."""
    if n > current().max_objects:
        raise _over("max_objects", f"{source} has {n} objects on one image")


def check_labels(n: int, source: object) -> None:
    """A label image with ``n`` distinct labels may be split into objects."""
    if n > current().max_labels:
        raise _over("max_labels", f"{source} holds {n} distinct labels")


def check_target_size(size: int, source: object) -> None:
    """A model may use a ``size`` x ``size`` network input."""
    if size > current().max_target_size:
        raise _over("max_target_size", f"{source} asks for a {size}x{size} network input (target_size)")


def check_checkpoint_bytes(n: int, source: object) -> None:
    """A model file (or what it unpacks to) of ``n`` bytes may be read."""
    limit = current().max_checkpoint_mb
    if n > limit * 2 ** 20:
        raise _over("max_checkpoint_mb", f"{source} is {n / 2 ** 20:.0f} MiB (or unpacks to that)")

