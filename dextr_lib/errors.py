"""Typed errors. Everything the library raises on bad input derives from :class:`DextrError`,
so a caller (the CLI included) can catch one class and show its message."""
import difflib
from typing import Iterable


class DextrError(Exception):
    """Base class of every error dextr raises for bad input, files or settings."""


class InvalidPointsError(DextrError, ValueError):
    """Extreme points of the wrong shape, with NaN/inf, or spanning a zero-size box."""


class CorrectionError(DextrError, ValueError):
    """A correction click a model cannot use: outside the crop that the four extreme points
    define, or a negative click on a model without a negative-click input channel."""


class InvalidImageError(DextrError, ValueError):
    """An image that cannot be read or has an unsupported shape or dtype."""


class InvalidValueError(DextrError, ValueError):
    """A number or choice outside its valid range: a threshold outside [0, 1], a batch size below
    1, padding that leaves no room in the crop, an unknown pre-processing setting."""


class MismatchError(DextrError, ValueError):
    """Two inputs that must pair up differ: images and point sets in number, masks and images
    in size."""


class UnknownNameError(DextrError, KeyError):
    """An unknown architecture, model, profile or dataset name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""

    @classmethod
    def of(cls, what: str, name: object, choices: Iterable[str], also: str = "") -> "UnknownNameError":
        """The error for every unknown name: ``unknown WHAT 'name' (did you mean 'x'?); choose
        one of: ...`` (``also``: other accepted input, e.g. "or give a checkpoint file path")."""
        choices = list(choices)
        return cls(f"unknown {what} {name!r}{did_you_mean(name, choices)}; choose one of: "
                   f"{', '.join(choices)}" + (f" ({also})" if also else ""))


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` naming the choices closest to a misspelt ``name``, else ``""``."""
    if not isinstance(name, str):
        return ""
    choices = list(choices)
    folded = {c.lower(): c for c in choices}
    close = [folded[c] for c in difflib.get_close_matches(name.lower(), list(folded), n=2, cutoff=0.6)]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class CheckpointError(DextrError):
    """A checkpoint file that is missing, unreadable, or not a dextr checkpoint."""


class ConfigError(DextrError):
    """A malformed config file, unknown key or bad value."""


class ChecksumError(DextrError):
    """A downloaded file whose hash does not match the expected one."""


class DownloadError(DextrError):
    """A download that failed (network error, HTTP error)."""


class DeviceError(DextrError):
    """An unknown or unavailable device."""


class JobError(DextrError):
    """A job name that is invalid, already taken, or has nothing to resume."""


class DatasetError(DextrError):
    """A dataset that cannot be built: no files, no matches, bad labels."""


class OutputError(DextrError, OSError):
    """A file that cannot or must not be written: it exists (and overwriting was not asked
    for), it is one of the command's inputs, its folder is not writable, the disk is full, or
    its name (from input data) would land outside its folder."""


class LimitError(DextrError, ValueError):
    """An input larger than a safety limit (image pixels, objects, labels, model size); the
    message names the limit and how to raise it."""


class DistributedError(DextrError):
    """A multi-process (torchrun) job whose processes cannot start or lost one another, or a
    Ray cluster that cannot be started or reached."""


class MissingExtraError(DextrError, ImportError):
    """An optional dependency (``dextr[onnx]``, ``dextr[openvino]``, ...) that is not installed."""


class ExportError(DextrError):
    """A model that cannot be exported, quantised, or run by the runtime asked for."""


class DextrWarning(UserWarning):
    """Base class of dextr's warnings (the CLI shows them as one line)."""


class PrecisionWarning(DextrWarning):
    """A precision that runs, but slower than fp32 on this hardware (emulated bf16)."""
