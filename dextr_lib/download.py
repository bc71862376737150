"""Resumable, verified downloads with the standard library (``urllib``).

The data streams into ``NAME.part`` beside the destination; an interrupted ``.part`` is resumed
with an HTTP ``Range`` request (a server answering ``200`` instead of ``206`` gets a fresh full
download). The SHA-256 is checked, then the file is renamed into place atomically, so the
destination is either absent or complete and verified.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

from .errors import ChecksumError, DownloadError
from .version import __version__

PathLike = Union[str, os.PathLike]
ProgressFn = Callable[[int, Optional[int]], None]

CHUNK = 1 << 16
TIMEOUT_S = 30.0
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _check_hex(value: Optional[str], what: str) -> Optional[str]:
    if value is None:
        return None
    if not _HEX.match(value) or len(value) > 64 or (what == "sha256" and len(value) != 64):
        expected = "64 hex digits" if what == "sha256" else "up to 64 hex digits"
        raise ValueError(f"{what} must be {expected}, got {value!r}")
    return value.lower()


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(url: str, dst: Path) -> str:
    return f"download {url} by hand and place it at {dst}"


def download_file(
    url: str,
    dst: PathLike,
    *,
    sha256: Optional[str] = None,
    hash_prefix: Optional[str] = None,
    size: Optional[int] = None,
    on_progress: Optional[ProgressFn] = None,
    resume: bool = True,
    timeout: float = TIMEOUT_S,
) -> str:
    """Download ``url`` to ``dst`` and verify it.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dst: destination file; its directory is created.
        sha256: expected full SHA-256 (hex).
        hash_prefix: expected leading hex digits of the SHA-256 (torch.hub's ``check_hash``).
        size: expected size in bytes, when known.
        on_progress: ``fn(done_bytes, total_bytes_or_None)``, called as data arrives.
        resume: continue an existing ``dst.part`` with a ``Range`` request.
        timeout: socket timeout in seconds.

    Returns:
        The SHA-256 hex digest of the downloaded file.

    Raises:
        DownloadError: network or HTTP failure (the message has the URL and where to put the
            file by hand); the ``.part`` file is kept for a later resume.
        ChecksumError: the file does not match ``sha256``/``hash_prefix``/``size``; both the
            ``.part`` and the destination are deleted.
    """
    sha256 = _check_hex(sha256, "sha256")
    hash_prefix = _check_hex(hash_prefix, "hash_prefix")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    have = part.stat().st_size if (resume and part.is_file()) else 0
    if not resume and part.exists():
        part.unlink()

    request = urllib.request.Request(url, headers={"User-Agent": f"dextr/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already complete (or bogus): check it below
            response = None
        else:
            raise DownloadError(
                f"download failed: HTTP {e.code} {e.reason} for {url}; {_manual_hint(url, dst)}"
            ) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"download failed: cannot reach {url} ({reason}); {_manual_hint(url, dst)}"
        ) from None

    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            if have and status != 206:
                have = 0  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else size
            done = have
            try:
                with open(part, "ab" if have else "wb") as f:
                    if on_progress:
                        on_progress(done, total)
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if on_progress:
                            on_progress(done, total)
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(
                    f"download of {url} interrupted after {done} bytes ({e}); run the same "
                    f"command again to resume, or {_manual_hint(url, dst)}"
                ) from None
            if total is not None and length and done < total:
                raise DownloadError(
                    f"download of {url} interrupted: got {done} of {total} bytes; run the same "
                    f"command again to resume, or {_manual_hint(url, dst)}"
                )

    digest = sha256_file(part)
    actual_size = part.stat().st_size
    problem = None
    if sha256 and digest != sha256:
        problem = f"SHA-256 {digest}, expected {sha256}"
    elif hash_prefix and not digest.startswith(hash_prefix):
        problem = f"SHA-256 {digest} does not start with {hash_prefix}"
    elif size is not None and actual_size != size:
        problem = f"{actual_size} bytes, expected {size}"
    if problem:
        part.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
        raise ChecksumError(
            f"downloaded file from {url} is corrupt or not the expected file ({problem}); it was "
            "deleted: retry with `dextr download --force`"
        )
    os.replace(part, dst)
    return digest


def download_first(
    urls: Sequence[str],
    dst: PathLike,
    **kwargs,
) -> Tuple[str, str, int]:
    """Try :func:`download_file` on each URL in turn (mirrors) until one succeeds.

    Returns:
        ``(url, sha256, size)`` of the successful download.

    Raises:
        DownloadError: every URL failed (the message lists them); ChecksumError at once on a
            hash mismatch.
    """
    errors: List[str] = []
    for url in urls:
        try:
            digest = download_file(url, dst, **kwargs)
            return url, digest, Path(dst).stat().st_size
        except DownloadError as e:
            # A .part left by a failed host is resumed from the next one: a mirror serves the
            # same bytes, and the hash check catches one that does not.
            errors.append(str(e))
    if len(errors) == 1:
        raise DownloadError(errors[0])
    raise DownloadError(
        f"download failed from every location ({'; '.join(urls)}); place the file by hand at "
        f"{dst}. Last error: {errors[-1]}"
    )
