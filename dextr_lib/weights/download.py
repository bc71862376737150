"""Resumable, verified downloads with the standard library (``urllib``).

The data streams into ``NAME.part`` beside the destination; an interrupted ``.part`` is resumed
with an HTTP ``Range`` request. A resumed answer is only appended when the server says (with
``206`` and a ``Content-Range`` starting at the ``.part``'s size) that it continues the file;
anything else gets a fresh full download, and a ``206`` that stops before the end of the file
(a part sent to a request without ``Range``, say) is refused. The SHA-256 is checked, then the
file is renamed into place atomically, so the destination is either absent or complete and
verified.

Bounded: a server that goes silent (``timeout``), trickles (less than ``STALL_BYTES`` in
``stall_timeout`` seconds), runs past ``deadline`` or sends more than its ``Content-Length``
announced (the body is read to the connection's end to notice it) or more than the model-size
limit (:mod:`dextr_lib.utils.limits`) is cut off. A full disk removes the ``.part``.
One download per destination at a time: a file lock (``NAME.lock``) makes a second process wait.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from ..errors import ChecksumError, DownloadError
from ..utils.fileio import os_error_cause, shown_path
from ..utils.limits import current as current_limits
from ..version import __version__

PathLike = Union[str, os.PathLike]
ProgressFn = Callable[[int, Optional[int]], None]

CHUNK = 1 << 16
TIMEOUT_S = 30.0
#: A download that receives less than STALL_BYTES in STALL_TIMEOUT_S seconds has stalled.
STALL_TIMEOUT_S = 60.0
STALL_BYTES = 16 * 1024
#: No single download runs longer than this (seconds).
DEADLINE_S = 6 * 3600.0
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_SCHEMES = ("http", "https", "file")


def _check_hex(value: Optional[str], what: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.match(value) or len(value) > 64 or (
            what == "sha256" and len(value) != 64):
        expected = "64 hex digits" if what == "sha256" else "up to 64 hex digits"
        raise ChecksumError(f"{what} must be {expected}, got {value!r}")
    return value.lower()


def check_url(url: str) -> str:
    """``url`` when it is an ``http://``, ``https://`` or ``file://`` URL.

    Raises:
        DownloadError: anything else (a bare name, a typo'd scheme), in one line.
    """
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in _SCHEMES or (
            parts.scheme.lower() != "file" and not parts.netloc):
        raise DownloadError(
            f"not a download URL: {url!r}; expected http://, https:// or file:// followed by the "
            "file's address"
        )
    return url


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(url: str, dst: Path) -> str:
    return f"download {url} by hand and place it at {shown_path(dst)}"


@contextlib.contextmanager
def entry_lock(dst: PathLike, timeout: float = DEADLINE_S) -> Iterator[None]:
    """Hold the download lock of ``dst`` (``dst.lock``, an OS file lock released on crash).

    Re-entrant in one process, so a caller may hold it around :func:`download_file` (which
    takes it too) to check-then-download atomically.

    Raises:
        DownloadError: the lock was not obtained within ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # One instance per path (is_singleton) makes nested holds in a process re-entrant.
    lock = FileLock(str(dst.with_name(dst.name + ".lock")), is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise DownloadError(
            f"another download of {shown_path(dst)} has held its lock for {timeout:.0f} s; wait for "
            "it to finish, or stop it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _content_range(response) -> Optional[Tuple[int, int, Optional[int]]]:
    """``(first, last, complete size or None)`` of a ``Content-Range`` header, else ``None``."""
    m = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))


def _content_range_start(response) -> Optional[int]:
    rng = _content_range(response)
    return rng[0] if rng else None


def _check_reaches_the_end(response, have: int, url: str, dst: Path) -> None:
    """Refuse a ``206`` that does not run to the end of the file: saving it would keep a part.

    A server may answer ``206`` to a request without ``Range`` (misconfigured caches do); that is
    only the whole file when its ``Content-Range`` says so.
    """
    if getattr(response, "status", 200) != 206:
        return
    rng = _content_range(response)
    if rng is not None and rng[0] == have and (rng[2] is None or rng[1] + 1 == rng[2]):
        return
    response.close()
    sent = (f"bytes {rng[0]}-{rng[1]} of {rng[2] if rng[2] is not None else 'an unknown size'}"
            if rng else "a part without a valid Content-Range")
    asked = f"the rest of the file from byte {have}" if have else "the whole file"
    raise DownloadError(
        f"download of {url} refused: the server answered 206 Partial Content with {sent} when "
        f"asked for {asked}; nothing was saved. {_manual_hint(url, dst)}"
    )


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
    stall_timeout: float = STALL_TIMEOUT_S,
    deadline: float = DEADLINE_S,
    max_bytes: Optional[int] = None,
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
        timeout: seconds of silence after which the connection is given up.
        stall_timeout: seconds in which at least ``STALL_BYTES`` must arrive.
        deadline: seconds the whole download may take.
        max_bytes: most bytes accepted (default: ``size``, else the model-size limit).

    Returns:
        The SHA-256 hex digest of the downloaded file.

    Raises:
        DownloadError: network or HTTP failure, a stalled or endless server, a full disk (the
            message has the URL and where to put the file by hand); the ``.part`` file is kept
            for a later resume unless it cannot be trusted or the disk is full.
        ChecksumError: the file does not match ``sha256``/``hash_prefix``/``size``; both the
            ``.part`` and the destination are deleted.
    """
    sha256 = _check_hex(sha256, "sha256")
    hash_prefix = _check_hex(hash_prefix, "hash_prefix")
    check_url(url)
    dst = Path(dst)
    with entry_lock(dst, timeout=deadline):
        return _download_locked(url, dst, sha256, hash_prefix, size, on_progress, resume, timeout,
                                stall_timeout, deadline, max_bytes)


def _open(url: str, have: int, timeout: float, dst: Path):
    """The HTTP response for ``url`` (``None``: 416, the ``.part`` may already be complete)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"dextr/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return None
        raise DownloadError(
            f"download failed: HTTP {e.code} {e.reason} for {url}; {_manual_hint(url, dst)}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"download failed: cannot reach {url} ({reason}); {_manual_hint(url, dst)}"
        ) from None


def _download_locked(url, dst, sha256, hash_prefix, size, on_progress, resume, timeout,
                     stall_timeout, deadline, max_bytes) -> str:
    part = dst.with_name(dst.name + ".part")
    have = part.stat().st_size if (resume and part.is_file()) else 0
    if not resume and (part.exists() or part.is_symlink()):
        part.unlink()
    limit = max_bytes if max_bytes is not None else (
        size if size is not None else current_limits().max_checkpoint_mb * 2 ** 20)

    response = _open(url, have, timeout, dst)
    if response is not None and have:
        status = getattr(response, "status", 200)
        start = _content_range_start(response) if status == 206 else None
        if status == 206 and start not in (have, 0):
            # A 206 that does not continue the .part: appending would corrupt the file.
            response.close()
            part.unlink(missing_ok=True)
            have = 0
            response = _open(url, 0, timeout, dst)
        elif start != have:
            have = 0  # the server sent the whole file (200, or 206 from byte 0): start over

    if response is not None:
        _check_reaches_the_end(response, have, url, dst)
        if isinstance(response, http.client.HTTPResponse) and not response.chunked:
            # Read to the end of the connection (urllib asks the server to close it), not only
            # the announced Content-Length, so that a body longer than announced is caught
            # below instead of being saved cut short.
            response.length = None
        with response:
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else size
            done = have
            started = time.monotonic()
            window_start, window_bytes = started, 0
            try:
                with open(part, "ab" if have else "wb") as f:
                    if on_progress:
                        on_progress(done, total)
                    while True:
                        try:
                            block = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
                        except TimeoutError:
                            if total is not None and done == total:
                                break  # a server that keeps the connection open after the body
                            raise
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if done > limit or (total is not None and done > total):
                            raise _TooLong(done, total if total is not None else limit)
                        now = time.monotonic()
                        window_bytes += len(block)
                        if now - started > deadline:
                            raise _Slow(f"still running after the {deadline:.0f} s deadline")
                        if now - window_start >= stall_timeout:
                            if window_bytes < STALL_BYTES:
                                raise _Slow(f"stalled: {window_bytes} bytes in the last "
                                            f"{now - window_start:.0f} s")
                            window_start, window_bytes = now, 0
                        if on_progress:
                            on_progress(done, total)
                    f.flush()
                    os.fsync(f.fileno())
            except _TooLong as e:
                part.unlink(missing_ok=True)
                what = (f"more than the {e.args[1]} bytes its Content-Length announced (a wrong "
                        "length or file)" if total is not None and e.args[1] == total
                        else f"more than {e.args[1]} bytes (an endless or wrong file)")
                raise DownloadError(
                    f"download of {url} stopped: the server sent {what}; the partial file was "
                    f"removed. {_manual_hint(url, dst)}"
                ) from None
            except _Slow as e:
                raise DownloadError(
                    f"download of {url} {e.args[0]} after {done} bytes; run the same command "
                    f"again to resume, or {_manual_hint(url, dst)}"
                ) from None
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    part.unlink(missing_ok=True)
                    raise DownloadError(
                        f"cannot write {shown_path(part)}: {os_error_cause(e)}; the partial "
                        f"download was removed. Free {_size_text(total)} and run the same command again"
                    ) from None
                raise DownloadError(
                    f"download of {url} interrupted after {done} bytes ({os_error_cause(e)}); run "
                    f"the same command again to resume, or {_manual_hint(url, dst)}"
                ) from None
            except http.client.HTTPException as e:
                raise DownloadError(
                    f"download of {url} interrupted after {done} bytes ({e!r}); run the same "
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


class _TooLong(Exception):
    pass


class _Slow(Exception):
    pass


def _size_text(n: Optional[int]) -> str:
    return "some space" if n is None else f"at least {n / 1e6:.0f} MB"


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
    # The last error already says where to place the file by hand: said once.
    raise DownloadError(f"download failed from every location ({'; '.join(urls)}). Last error: {errors[-1]}")
