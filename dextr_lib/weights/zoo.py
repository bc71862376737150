"""The model zoo: published DEXTR models as data, and the local model cache.

Each :class:`PretrainedModel` bundles where the file lives, how to verify it, which architecture
and pre-processing profile it needs, and where it comes from, so a model is never paired with
the wrong pre-processing.

Verification:

* ``sha256`` (full digest) is checked when known;
* otherwise ``hash_prefix``: the 8 hex digits a torch.hub-style file name carries
  (``NAME-<prefix>.pth``), checked as ``torch.hub``'s ``check_hash`` does (the digest must start
  with it);
* models published without any hash (the original DEXTR-PyTorch files) are trusted on first
  use: the SHA-256 of the first download is recorded beside the file
  (``<file>.json``, see :func:`record_download`) and every later download of the same entry
  must match it.

Cache directory (first that applies): an explicit ``cache_dir`` (the CLI passes
``--cache-dir`` or ``[paths] models``), else :func:`dextr_lib.utils.paths.user_dir` ``("models")``
(``$DEXTR_HOME/models``, else the platform's user cache folder).

Turning a zoo name or a file into a model is :mod:`dextr_lib.weights.loading`'s job; this module only
knows the entries and how to get their files.
"""
from __future__ import annotations

import fnmatch
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..errors import UnknownNameError
from ..utils import paths
from ..utils.fileio import atomic_write_text
from . import download

PathLike = Union[str, os.PathLike]

MIRROR_ENV = "DEXTR_MIRROR"


@dataclass(frozen=True)
class PretrainedModel:
    """One published model.

    Attributes:
        name: registry name (``dextr download NAME``, ``--model NAME``).
        urls: download locations, tried in order (mirrors).
        arch: our architecture name the weights load into.
        profile: pre-processing profile name (see ``dextr_lib.inference.preprocessing.PROFILES``).
        file_format: ``"dextr012"`` (a pickled ``dextr`` 0.1.2 ``DextrModel``), ``"original"``
            (an original DEXTR-PyTorch state dict) or ``"dextr"`` (our checkpoint format).
        sha256: full SHA-256 hex digest, when published.
        hash_prefix: leading hex digits of the SHA-256 carried by the file name.
        size: file size in bytes, when published (then checked after download).
        approx_size: about how many bytes the file has, when the exact size is not published:
            the architecture's float32 weights (shown by ``dextr download --list``, never checked).
        source: who published it, and where.
        licence: licence of the weights.
        accuracy: reported accuracy, as published (metric, dataset).
        description: one line on what it was trained on.
    """

    name: str
    urls: Tuple[str, ...]
    arch: str
    profile: str
    file_format: str
    sha256: Optional[str] = None
    hash_prefix: Optional[str] = None
    size: Optional[int] = None
    approx_size: Optional[int] = None
    source: str = ""
    licence: str = ""
    accuracy: str = ""
    description: str = ""

    @property
    def filename(self) -> str:
        """File name in the cache (the first URL's)."""
        return os.path.basename(urlsplit(self.urls[0]).path)

    @property
    def verification(self) -> str:
        """How a download is verified, in words."""
        if self.sha256:
            return "sha256"
        if self.hash_prefix:
            return f"sha256 prefix {self.hash_prefix}"
        return "none published (sha256 recorded on first download)"


_MODELS: Dict[str, PretrainedModel] = {}


def register_pretrained(entry: PretrainedModel) -> PretrainedModel:
    """Add ``entry`` to the registry (duplicate names are rejected)."""
    if entry.name in _MODELS:
        raise ValueError(f"pretrained model {entry.name!r} is already registered")
    _MODELS[entry.name] = entry
    return entry


_ETHZ = "https://data.vision.ee.ethz.ch/kmaninis/share/DEXTR/Downloads/models/"
_ETHZ_OLD = "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/"
_ORIGINAL_SOURCE = (
    "K.-K. Maninis, S. Caelles et al., DEXTR-PyTorch (github.com/scaelles/DEXTR-PyTorch)"
)
_ORIGINAL_LICENCE = "GPL-3.0 (DEXTR-PyTorch repository)"
# The publishers give no file sizes; these are the architectures' weights saved with torch.save
# (resunet101: 203,537,627 bytes, psp101: 195,850,335 bytes). The published files (not
# downloadable where this was written) differ by their pickle overhead only if the same tensors.
_RESUNET101_BYTES = 203_500_000
_PSP101_BYTES = 195_900_000

register_pretrained(PretrainedModel(
    name="pascalvoc-resunet101",
    urls=(
        "https://storage.googleapis.com/dextr_pytorch_models_public/"
        "dextr_pascalvoc_resunet101-a2d81727.pth",
    ),
    arch="resunet101",
    profile="dextr012",
    file_format="dextr012",
    hash_prefix="a2d81727",
    approx_size=_RESUNET101_BYTES,
    source="G. French et al., the dextr 0.1.2 package (github.com/Britefury/dextr)",
    licence="MIT (dextr package)",
    accuracy="not published",
    description="U-Net on ResNet-101 trained on PASCAL VOC 2012 (dextr 0.1.2's model)",
))


def _dextr_pytorch(name: str, old_mirror: bool, accuracy: str, trained_on: str) -> PretrainedModel:
    """An original DEXTR-PyTorch model: psp101, the ``original`` profile, published without hashes."""
    filename = f"dextr_{name}.pth"
    return PretrainedModel(
        name=name,
        urls=(_ETHZ + filename,) + ((_ETHZ_OLD + filename,) if old_mirror else ()),
        arch="psp101", profile="original", file_format="original", approx_size=_PSP101_BYTES,
        source=_ORIGINAL_SOURCE, licence=_ORIGINAL_LICENCE, accuracy=accuracy,
        description=f"DeepLab-v2 ResNet-101 + PSP head trained on {trained_on}",
    )


register_pretrained(_dextr_pytorch("pascal-sbd", True, "91.5 mIoU, PASCAL VOC 2012 val", "PASCAL VOC + SBD"))
register_pretrained(_dextr_pytorch("pascal", True, "90.5 mIoU, PASCAL VOC 2012 val",
                                   "PASCAL VOC train (1464 images)"))
register_pretrained(_dextr_pytorch("coco", False, "87.8 mIoU, PASCAL VOC 2012 val", "COCO train 2014"))


def list_pretrained(pattern: str = "*") -> List[str]:
    """Registered model names matching an fnmatch ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_pretrained(name: str) -> PretrainedModel:
    """The registry entry called ``name``.

    Raises:
        UnknownNameError: unknown name; the message lists the registered ones.
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownNameError.of("pretrained model", name, list_pretrained(),
                                  "or give a checkpoint file path") from None


def is_pretrained_name(spec: Any) -> bool:
    return isinstance(spec, str) and spec in _MODELS


# -- cache -------------------------------------------------------------------------------------
def models_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """Where downloaded models live: ``cache_dir`` when given, else ``paths.user_dir("models")``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return paths.user_dir(paths.MODELS)


def cached_path(entry: PretrainedModel, cache_dir: Optional[PathLike] = None) -> Path:
    return models_dir(cache_dir) / entry.filename


def is_cached(entry: PretrainedModel, cache_dir: Optional[PathLike] = None) -> bool:
    return cached_path(entry, cache_dir).is_file()


def mirror_urls(entry: PretrainedModel, mirror: Optional[str] = None) -> List[str]:
    """Download URLs for ``entry``: the mirror (``mirror`` argument, else ``$DEXTR_MIRROR``)
    with the file name kept, then the published URLs."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    urls = list(entry.urls)
    if mirror:
        urls.insert(0, mirror.rstrip("/") + "/" + entry.filename)
    return urls


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def recorded_sha256(path: PathLike) -> Optional[str]:
    """The SHA-256 recorded when ``path`` was first downloaded, if any."""
    try:
        with open(_meta_path(Path(path)), encoding="utf-8") as f:
            value = json.load(f).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def record_download(path: PathLike, url: str, sha256: str, size: int) -> None:
    """Write ``<file>.json`` beside a downloaded model: where it came from and its SHA-256."""
    path = Path(path)
    meta = {"url": url, "sha256": sha256, "size": size,
            "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(_meta_path(path), json.dumps(meta, indent=2) + "\n")


def fetch_pretrained(
    name: str,
    *,
    cache_dir: Optional[PathLike] = None,
    force: bool = False,
    mirror: Optional[str] = None,
    on_progress=None,
    on_warning=None,
) -> Path:
    """The local path of a pretrained model, downloading it first when not cached.

    A second process fetching the same model at the same time waits for the first and reuses
    its file (a lock per cache entry). For entries published without a hash, the SHA-256 of the
    first download is pinned (see :func:`record_download`); such a download never resumes a
    ``.part`` (a resumed file could mix two servers' bytes and would be pinned as trusted), and
    ``force`` forgets the pinned hash, with a warning.

    Args:
        name: registry name.
        cache_dir: cache directory (default: see :func:`models_dir`).
        force: download again even when cached; for hash-less entries, also forget the pinned hash.
        mirror: base URL tried first (file name kept); default ``$DEXTR_MIRROR``.
        on_progress: ``fn(done_bytes, total_bytes_or_None)``.
        on_warning: ``fn(message)`` (default: ignored).

    Raises:
        UnknownNameError, DownloadError, ChecksumError.
    """
    entry = get_pretrained(name)
    dst = cached_path(entry, cache_dir)
    with download.entry_lock(dst):
        if dst.is_file() and not force:
            return dst
        pinned = None if (entry.sha256 or entry.hash_prefix) else recorded_sha256(dst)
        if force and pinned is not None:
            if on_warning is not None:
                on_warning(f"--force: forgetting the SHA-256 pinned at the first download of {name} "
                           f"({pinned[:16]}...); the new download's hash is pinned instead")
            pinned = None
        expected = entry.sha256 or pinned
        url, digest, size = download.download_first(
            mirror_urls(entry, mirror), dst, sha256=expected, hash_prefix=entry.hash_prefix,
            size=entry.size, on_progress=on_progress, resume=bool(expected or entry.hash_prefix),
        )
        record_download(dst, url, digest, size)
    return dst
    expected = entry.sha256 or (None if entry.hash_prefix else recorded_sha256(dst))
    url, digest, size = download.download_first(
        mirror_urls(entry, mirror), dst, sha256=expected, hash_prefix=entry.hash_prefix,
        size=entry.size, on_progress=on_progress,
    )
    record_download(dst, url, digest, size)
    return dst
