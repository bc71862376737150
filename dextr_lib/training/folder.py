"""A training job's folder.

``<jobs_dir>/<JOB_NAME>/`` holds:

- ``config.toml``: the fully resolved settings, as a dextr config file (``[train]`` table);
- ``log.txt``: everything the job printed;
- ``metrics.jsonl``: one JSON line per epoch (train loss, val loss, val mIoU, lr, seconds...);
- ``curves.png``: loss, validation mIoU and learning rate per epoch (redrawn at each validation);
- ``checkpoints/last.pt`` (weights + optimiser, schedule, epoch and RNG state, for resuming)
  and ``checkpoints/best.pt`` (the best validation mIoU so far), written atomically in the
  dextr checkpoint format;
- ``job.lock``: held (an OS file lock) by the one process that runs the job; the OS releases
  it when that process ends, however it ends.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import filelock

from ..config import Config, TrainSettings, config_from_dict, tomllib
from ..errors import CheckpointError, JobError
from ..evaluation.report import json_safe
from ..model import DextrModel
from ..utils.fileio import atomic_write_text
from ..weights.checkpoint import atomic_torch_save, read_checkpoint

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCK_NAME = "job.lock"


class JobDir:
    """One training job's folder (see the module docstring)."""

    def __init__(self, root: Union[str, os.PathLike]):
        self.root = Path(root)
        self._lock: Optional[filelock.BaseFileLock] = None

    @classmethod
    def named(cls, jobs_dir: Union[str, os.PathLike], name: str) -> "JobDir":
        """The folder of job ``name`` under ``jobs_dir``.

        Raises:
            JobError: a name that is not a plain folder name.
        """
        if not _NAME.match(name or ""):
            raise JobError(
                f"invalid job name {name!r}: use letters, digits, '.', '_' and '-' "
                "(it becomes a folder name)"
            )
        return cls(Path(jobs_dir).expanduser() / name)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last_path(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def curves_path(self) -> Path:
        return self.root / "curves.png"

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    def exists(self) -> bool:
        """The folder holds a job (anything besides its lock file)."""
        return self.root.is_dir() and any(p.name != LOCK_NAME for p in self.root.iterdir())

    # -- the lock ------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the job's lock (creating the folder) for as long as this process runs the job.

        Raises:
            JobError: another process holds it.
        """
        if self._lock is not None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JobError(f"cannot create the job folder {self.root}: {e.strerror or e}") from None
        lock = filelock.FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise JobError(
                f"job {self.name!r} is in use by another process (lock {self.lock_path}); "
                "wait for it to finish, or stop it first"
            ) from None
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- contents ------------------------------------------------------------------------------
    def clear(self) -> List[str]:
        """Delete the job's contents (not its lock); returns what was removed, for the log."""
        removed = []
        for p in sorted(self.root.iterdir()):
            if p.name == LOCK_NAME:
                continue
            removed.append(p.name + ("/" if p.is_dir() else ""))
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return removed

    def prepare(self) -> None:
        """Create the empty layout of a new job (``checkpoints/``)."""
        (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)

    def remove_temporaries(self) -> List[Path]:
        """Delete temporary files an interrupted atomic write left (``.last.pt.*.tmp``...).
        Call it with the lock held: then no other process is writing them."""
        stale = [p for d in (self.root, self.root / "checkpoints") if d.is_dir()
                 for p in d.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink()
        return stale

    # -- settings and logs -----------------------------------------------------------------
    def write_config(self, train: TrainSettings, paths: Optional[Dict[str, Optional[str]]] = None) -> None:
        """Write ``config.toml``: ``[paths]`` entries given plus the resolved ``[train]`` table."""
        tables = {}
        if paths and any(v is not None for v in paths.values()):
            tables["paths"] = {k: v for k, v in paths.items() if v is not None}
        tables["train"] = train.to_dict()
        text = "# Resolved settings of this job; `dextr train NAME --config THIS_FILE` repeats it.\n"
        text += dumps_toml(tables)
        atomic_write_text(self.config_path, text)

    def read_config(self) -> Config:
        """The job's ``config.toml`` as a :class:`~dextr_lib.config.Config`."""
        try:
            data = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise JobError(f"cannot read {self.config_path}: {e}") from None
        return config_from_dict(data, source=str(self.config_path))

    def log(self, text: str) -> None:
        """Append lines to ``log.txt`` (with a timestamp)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as f:
            for line in str(text).splitlines() or [""]:
                f.write(f"{stamp}  {line}\n")

    def append_metrics(self, record: Dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record)) + "\n")

    def read_metrics(self) -> List[Dict[str, Any]]:
        """The epochs' records; a torn last line (the process died while appending it) is skipped.

        Raises:
            JobError: a damaged line other than the last.
        """
        if not self.metrics_path.is_file():
            return []
        lines = self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines()
        rows = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                if n == len(lines):
                    break
                raise JobError(f"{self.metrics_path} line {n} is damaged: {line[:60]!r}") from None
        return rows

    def write_metrics(self, records: List[Dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``records`` (a resume writes the checkpoint's history:
        this drops epochs after ``last.pt`` and repairs a torn or missing line)."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(json_safe(r)) + "\n" for r in records))

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(
        self, model: DextrModel, training: Dict[str, Any], *, best: bool = False
    ) -> None:
        """Write ``last.pt`` (with the resumable ``training`` state) and, if ``best``, ``best.pt``
        (weights and a training summary only). Both writes are atomic."""
        atomic_torch_save(model.checkpoint_dict(training=training), self.last_path)
        if best:
            summary = {k: v for k, v in training.items() if k != "state"}
            summary["state"] = {k: v for k, v in training.get("state", {}).items()
                                if k not in ("optimizer", "rng")}
            atomic_torch_save(model.checkpoint_dict(training=summary), self.best_path)

    def load_last(self, map_location: Any = None) -> Tuple[DextrModel, Dict[str, Any]]:
        """The model and ``training`` dict of ``last.pt``."""
        ckpt = read_checkpoint(self.last_path, map_location="cpu")
        if not isinstance(ckpt.get("training"), dict) or "state" not in ckpt["training"]:
            raise CheckpointError(f"{self.last_path} holds no training state to resume from")
        return DextrModel.from_checkpoint(ckpt, map_location, str(self.last_path)), ckpt["training"]


def dumps_toml(tables: Dict[str, Dict[str, Any]]) -> str:
    """A minimal TOML writer for flat tables of str/int/float/bool/list values (None is omitted
    as a comment, since TOML has no null)."""
    out: List[str] = []
    for name, table in tables.items():
        out.append(f"\n[{name}]")
        for key, value in table.items():
            if value is None:
                out.append(f"# {key} = (unset)")
            else:
                out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out).lstrip("\n") + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
