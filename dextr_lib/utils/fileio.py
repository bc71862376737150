"""Files in and out safely: atomic writes (readers, and a crash at any moment, see the old file or
the whole new one), OS errors turned into one line naming the file, the output checks every
command runs before it works (no overwriting without being asked, never an input), and the one
reader of a user's JSON file."""
from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from contextlib import contextmanager
from typing import IO, Any, Iterable, Iterator, Optional, Union

from ..errors import DatasetError, OutputError

PathLike = Union[str, os.PathLike]

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large",
}


def os_error_cause(e: OSError) -> str:
    """The cause of an OS error in words (``"no space left on device"``), without the path."""
    cause = _CAUSES.get(e.errno) if e.errno is not None else None
    if cause is None:
        cause = (e.strerror or str(e) or type(e).__name__).strip()
        cause = cause[:1].lower() + cause[1:]
    return cause


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def shown_path(path: object) -> str:
    """``path`` as text for messages and reports: names that are not valid UTF-8 get their
    undecodable bytes escaped (``\\udcff`` -> ``\\xff``) instead of crashing an encoder."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if not _has_surrogates(text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def read_json(path: PathLike, what: str) -> Any:
    """The parsed content of a user's JSON file (a COCO or points file), or one line naming it.

    Args:
        path: the file.
        what: its kind in messages, e.g. ``"COCO file"``.

    Raises:
        DatasetError: ``WHAT not found: PATH``, or ``cannot read WHAT PATH: ...`` for a folder or
            pipe (a pipe would hang the read), an OS error, text that is not UTF-8, invalid JSON
            or nesting too deep for the parser.
    """
    shown = shown_path(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise DatasetError(f"cannot read {what} {shown}: not a regular file")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {shown}") from None
    except OSError as e:
        raise DatasetError(f"cannot read {what} {shown}: {os_error_cause(e)}") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"cannot read {what} {shown}: not UTF-8 text ({e.reason} at byte "
                           f"{e.start})") from None
    except RecursionError:
        raise DatasetError(f"cannot read {what} {shown}: JSON nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, or an integer with too many digits
        raise DatasetError(f"cannot read {what} {shown}: invalid JSON ({e})") from None


def describe_os_error(e: OSError, path: Optional[PathLike] = None, action: str = "write") -> str:
    """One line for an OS error: ``cannot write out.png: no space left on device``."""
    name = path if path is not None else (e.filename if e.filename is not None else None)
    target = f" {shown_path(name)}" if name is not None else ""
    return f"cannot {action}{target}: {os_error_cause(e)}"


@contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it is fsynced and
    renamed over ``path``, on an error it is removed and ``path`` is left as it was.

    Args:
        path: the file to write (its folder is created).
        mode: ``"w"`` (UTF-8 text, newlines written as given, undecodable path characters
            escaped) or ``"wb"``.

    Raises:
        OutputError: the file cannot be written (unwritable folder, full disk, ...); the message
            names the file and the cause, and says that nothing was left behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = _create_temp(path, directory)
        # Non-UTF-8 file names (surrogates) are written escaped, never a UnicodeEncodeError
        # after the work is done.
        text = {"encoding": "utf-8", "errors": "backslashreplace", "newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        raise OutputError(
            describe_os_error(e, path) + ("; the partial file was removed" if full else "")
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _create_temp(path: str, directory: str):
    """A new temporary file beside ``path``: with an existing ``path``'s permissions (0600 stays
    0600), else those a plain open() gives (the kernel applies the umask: reading it with
    ``os.umask`` would change it for a moment for every thread)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
        except FileExistsError:
            continue
        if mode is not None:
            os.chmod(tmp, mode)
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", directory)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode where both exist (so symlinks, hard
    links and ``./`` spellings match), else the same real path."""
    return _FileSet([b]).holds(a)


class _FileSet:
    """Files to compare others with by :func:`same_file`'s rule, each file looked at once: a
    lookup costs one ``stat`` and one ``realpath`` however many files the set holds (a command
    checks every mask it will write against every photo it reads)."""

    def __init__(self, paths: Iterable[PathLike] = ()):
        self._inodes: set = set()  # (st_dev, st_ino) of the files that exist
        self._missing: set = set()  # real paths of the files that do not
        self._real: set = set()  # real paths of all
        for p in paths:
            self.add(p)

    @staticmethod
    def _identity(path: PathLike) -> tuple:
        p = os.fspath(path)
        try:
            st = os.stat(p)
            inode = (st.st_dev, st.st_ino)
        except (OSError, ValueError):
            inode = None
        return inode, os.path.normcase(os.path.realpath(p))

    def add(self, path: PathLike) -> None:
        inode, real = self._identity(path)
        self._real.add(real)
        if inode is None:
            self._missing.add(real)
        else:
            self._inodes.add(inode)

    def holds(self, path: PathLike) -> bool:
        """Whether ``path`` and a file of the set are one file (:func:`same_file`)."""
        inode, real = self._identity(path)
        if inode is None:  # compared by real path with every file
            return real in self._real
        return inode in self._inodes or real in self._missing


def check_output(
    path: PathLike,
    *,
    inputs: Iterable[PathLike] = (),
    force: bool = False,
    option: str = "--out",
    what: str = "file",
) -> None:
    """Check, before any work, that ``path`` may be written.

    It must not be one of ``inputs`` (never, even with ``force``), must not exist unless
    ``force`` (and then must be a regular file), and its folder must exist-or-be-creatable and
    be writable.

    Args:
        path: the output file.
        inputs: the command's input files.
        force: overwriting an existing output was asked for (``--force``).
        option: the option that named ``path``, for the message.
        what: what the file is, for the message.

    Raises:
        OutputError: the message says why and what to do.
    """
    _check_output(path, _FileSet(src for src in inputs if src is not None), force, option, what)


def _check_output(path: PathLike, inputs: _FileSet, force: bool, option: str, what: str,
                  writable_dirs: Optional[set] = None) -> None:
    """:func:`check_output` with the inputs as a :class:`_FileSet` (``writable_dirs``: folders
    already found writable by this check, not looked at again)."""
    p = os.fspath(path)
    shown = shown_path(p)
    if inputs.holds(p):
        raise OutputError(
            f"refusing to write the {what} to {shown}: it is an input of this command; "
            f"choose another {option}"
        )
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(describe_os_error(e, p, "write")) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write the {what} to {shown}: it is a folder; choose a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"cannot write the {what} to {shown}: it is not a regular file")
        if not force:
            raise OutputError(f"{shown} already exists; pass --force to overwrite it, or choose "
                              f"another {option}")
    folder = os.path.dirname(os.path.abspath(p))
    if writable_dirs is None or folder not in writable_dirs:
        check_writable_dir(folder, option=option)
        if writable_dirs is not None:
            writable_dirs.add(folder)


def check_outputs(
    outputs: Iterable[tuple], *, inputs: Iterable[Optional[PathLike]] = (), force: bool = False,
) -> None:
    """Check, before any work, every output of a command against every file it reads: the one
    rule all commands use (an output never replaces an input, even with ``force``).

    Args:
        outputs: ``(path, option, what)`` per output file (``path`` None: not asked for), e.g.
            ``(out, "--out", "mask")``.
        inputs: every file the command reads: the model, the photos (those a COCO or points file
            names included), label images, the points or COCO file, the config. Names that are
            not files (a zoo model name) are compared by path only.
        force: ``--force``.

    Raises:
        OutputError: an output is an input, two outputs name one file, or :func:`check_output`
            refuses one.
    """
    read = _FileSet(src for src in inputs if src is not None)
    seen: list = []  # (path, option) of the outputs checked so far, in order
    written = _FileSet()
    writable_dirs: set = set()
    for path, option, what in outputs:
        if path is None:
            continue
        if written.holds(path):
            other_path, other_option = next((q, o) for q, o in seen if same_file(path, q))
            raise OutputError(f"{other_option} and {option} name the same file "
                              f"{shown_path(path)}; choose another {option}")
        _check_output(path, read, force, option, what, writable_dirs)
        seen.append((path, option))
        written.add(path)


def check_clearable(folder: PathLike, *, inputs: Iterable[Optional[PathLike]] = (),
                    option: str = "--overwrite") -> None:
    """Check, before any work, that clearing ``folder`` (its contents replaced by a new output)
    removes none of the command's inputs: the folder form of :func:`check_output`'s rule.

    Args:
        folder: the folder to be emptied.
        inputs: every file the command reads; names that are not files (a zoo model name) are
            skipped.
        option: the option that asked for the clearing, for the message.

    Raises:
        OutputError: an input lies in ``folder`` (by real path: symlinks followed).
    """
    root = os.path.realpath(os.fspath(folder))
    for src in inputs:
        if src is None or not os.path.exists(os.fspath(src)):
            continue
        real = os.path.realpath(os.fspath(src))
        if os.path.commonpath([root, real]) == root:
            raise OutputError(f"refusing to clear {shown_path(folder)} ({option}): it holds "
                              f"{shown_path(src)}, an input of this command; move that file out first "
                              "or use another name")


def check_writable_dir(folder: PathLike, *, option: str = "--out") -> None:
    """``folder`` exists (or its nearest existing parent does) and is writable.

    Raises:
        OutputError: a part of the path is a file, or the folder is not writable.
    """
    d = os.path.abspath(os.fspath(folder))
    while not os.path.exists(d):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    if not os.path.isdir(d):
        raise OutputError(f"cannot write into {shown_path(folder)}: {shown_path(d)} is not a folder "
                          f"(check {option})")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {shown_path(folder)}: {shown_path(d)} is not writable "
                          f"(permission denied); choose another {option}")
