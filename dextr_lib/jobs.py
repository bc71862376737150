"""Training job directories.

``<jobs_dir>/<JOB_NAME>/`` holds:

- ``config.toml``: the fully resolved settings, as a dextr config file (``[train]`` table);
- ``log.txt``: everything the job printed;
- ``metrics.jsonl``: one JSON line per epoch (train loss, val loss, val mIoU, lr, seconds...);
- ``checkpoints/last.pt`` (weights + optimiser, schedule, epoch and RNG state, for ``--resume``)
  and ``checkpoints/best.pt`` (the best validation mIoU so far), written atomically in the
  dextr checkpoint format.
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

from .checkpoint import atomic_torch_save, read_checkpoint
from .config import Config, TrainConfig, config_from_dict, tomllib
from .errors import CheckpointError, JobError
from .fileio import atomic_write_text
from .model import DextrModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class JobDir:
    """One training job's folder (see the module docstring)."""

    def __init__(self, root: Union[str, os.PathLike]):
        self.root = Path(root)

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

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def open(
        cls, jobs_dir: Union[str, os.PathLike], name: str, *, resume: bool = False,
        overwrite: bool = False,
    ) -> "JobDir":
        """Check a new job's name (create it with :meth:`prepare`), or open one to resume.

        Raises:
            JobError: a bad name; an existing job without ``resume``/``overwrite``; ``resume``
                without a ``last.pt`` to resume from; both flags.
        """
        if not _NAME.match(name or ""):
            raise JobError(
                f"invalid job name {name!r}: use letters, digits, '.', '_' and '-' "
                "(it becomes a folder name)"
            )
        if resume and overwrite:
            raise JobError("--resume and --overwrite exclude each other")
        job = cls(Path(jobs_dir).expanduser() / name)
        exists = job.root.exists() and any(job.root.iterdir())
        if resume:
            if not job.last_path.is_file():
                raise JobError(
                    f"cannot resume job {name!r}: {job.last_path} does not exist"
                    + ("" if exists else f" (no job folder at {job.root})")
                )
            return job
        if exists and not overwrite:
            raise JobError(
                f"job {name!r} already exists at {job.root}; use --resume to continue it, "
                "--overwrite to start it again, or another name"
            )
        return job

    def prepare(self) -> None:
        """Create the (emptied) folder of a new job. Separate from :meth:`open`, so a run that
        fails while loading data or weights leaves no half-made job behind."""
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "checkpoints").mkdir(parents=True)

    # -- settings and logs -----------------------------------------------------------------
    def write_config(self, train: TrainConfig, paths: Optional[Dict[str, Optional[str]]] = None) -> None:
        """Write ``config.toml``: ``[paths]`` entries given plus the resolved ``[train]`` table."""
        tables = {}
        if paths:
            tables["paths"] = {k: v for k, v in paths.items() if v is not None}
        tables["train"] = train.__dict__
        text = "# Resolved settings of this job; `dextr train NAME --config THIS_FILE` repeats it.\n"
        text += dumps_toml(tables)
        atomic_write_text(self.config_path, text)

    def read_config(self) -> Config:
        """The job's ``config.toml`` as a :class:`~dextr_lib.config.Config`."""
        try:
            data = tomllib.loads(self.config_path.read_text())
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
            f.write(json.dumps(_json_safe(record)) + "\n")

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` lines (a resumed job redoes the epochs after ``last.pt``)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

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


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


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
