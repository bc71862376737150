"""The TOML config (``dextr.toml``): one dataclass per table, validated key by key.

Lookup order: an explicit path (``--config``), then ``$DEXTR_CONFIG``, then ``./dextr.toml``;
no file means all defaults. Relative paths in ``[paths]`` are relative to the config file.
Command-line options override config values (the CLI does that merge).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_VAR = "DEXTR_CONFIG"
DEFAULT_NAME = "dextr.toml"


@dataclass
class PathsConfig:
    """``[paths]``: where data, models and jobs live."""

    pascal_voc: Optional[str] = None  # the VOC2012 folder (holds JPEGImages/, SegmentationObject/)
    sbd: Optional[str] = None  # the SBD benchmark_RELEASE/dataset folder
    models: Optional[str] = None  # model cache; default $DEXTR_HOME/models or the user cache dir
    jobs: str = "jobs"  # training job directories


@dataclass
class PredictConfig:
    """``[predict]``: defaults of ``dextr predict``."""

    model: Optional[str] = None
    device: Optional[str] = None
    batch_size: int = 8
    threshold: Optional[float] = None  # default: the model's profile threshold
    precision: str = "fp32"  # fp32, bf16 (about 2x faster on CPU), fp16 (GPU)


@dataclass
class PointsFromMaskConfig:
    """``[points_from_mask]``: defaults of ``dextr points-from-mask``."""

    kind: str = "label"
    ignore_index: Optional[int] = 255
    min_area: int = 1
    largest_component: bool = False


@dataclass
class ServeConfig:
    """``[serve]``: defaults of ``dextr serve``. ``images`` and ``annotations`` are relative to
    the config file's folder."""

    model: Optional[str] = None
    device: Optional[str] = None
    precision: str = "fp32"
    threshold: Optional[float] = None  # default: the model's profile threshold
    host: str = "127.0.0.1"  # another host needs --token (or shows a warning)
    port: int = 8000
    images: Optional[str] = None  # folder of photos to annotate
    annotations: str = "annotations.json"  # COCO instances file, continued when it exists
    classes: List[str] = field(default_factory=list)  # class names offered on the page
    max_upload_mb: float = 50.0  # largest request body (413 above)
    max_pixels: int = 50_000_000  # largest image (400 above)


@dataclass
class ModelsConfig:
    """``[models]``: the model zoo (``dextr download``, ``--model NAME``)."""

    mirror: Optional[str] = None  # base URL tried first, file name kept; also $DEXTR_MIRROR


@dataclass
class EvalConfig:
    """``[eval]``: defaults of ``dextr eval``."""

    model: Optional[str] = None
    dataset: Optional[str] = None  # pascal_voc, custom_label or custom_mask
    image_pat: List[str] = field(default_factory=list)
    target_pat: List[str] = field(default_factory=list)
    split: str = "val"
    label_ignore_index: int = 255  # -1: none (key mirrors --label-ignore-index, as in [train])
    min_object_area: int = 0
    whole_labels: bool = False  # one object per label instead of one per connected region
    device: Optional[str] = None
    batch_size: int = 8
    precision: str = "fp32"  # fp32, bf16 (about 2x faster on CPU), fp16 (GPU)
    threshold: Optional[float] = None  # default: the model's profile threshold
    thresholds: List[float] = field(default_factory=list)  # extra thresholds to sweep
    boundary_tolerance: Optional[float] = None  # pixels; default 0.008 x image diagonal
    worst: int = 5  # overlays written with --overlays


@dataclass
class TrainConfig:
    """``[train]``: defaults of ``dextr train`` / ``dextr finetune`` (``dextr`` 0.1.2's defaults).

    A job's ``config.toml`` is a config file with this table fully resolved."""

    dataset: str = "pascal_voc"  # pascal_voc, custom_label or custom_mask
    image_pat: List[str] = field(default_factory=list)
    target_pat: List[str] = field(default_factory=list)
    val_image_pat: List[str] = field(default_factory=list)
    val_target_pat: List[str] = field(default_factory=list)
    label_ignore_index: int = 255  # -1: none
    min_object_area: int = 0
    whole_labels: bool = False
    arch: str = "resunet101"
    target_size: int = 512
    padding: float = 10.0
    blob_sigma: float = 10.0
    pretrained: bool = True  # ImageNet encoder weights (torchvision) unless backbone_weights
    backbone_weights: Optional[str] = None
    learning_rate: float = 0.1
    pretrained_lr_factor: float = 0.1
    lr_sched: str = "poly"
    lr_poly_power: float = 0.9
    opt_type: str = "sgd"
    sgd_weight_decay: float = 1e-4
    extreme_range: float = 5.0
    noise_std: float = 1.0
    aug_hflip: bool = True
    aug_rot_range: float = 20.0
    aug_scale_range: float = 0.0
    batch_size: int = 4
    num_epochs: int = 100
    iters_per_epoch: int = 1000
    val_every_n_epochs: int = 25
    device: Optional[str] = None
    num_workers: int = 0
    seed: Optional[int] = None  # None: a random seed, recorded in the job's config.toml
    from_model: Optional[str] = None  # finetune: the starting DEXTR model


@dataclass
class Config:
    """The whole config. ``source`` is the file it came from (None: defaults only)."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    points_from_mask: PointsFromMaskConfig = field(default_factory=PointsFromMaskConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: Optional[str] = None


_PATH_KEYS = {"pascal_voc", "sbd", "models", "jobs"}
_SERVE_PATH_KEYS = {"images", "annotations"}


def find_config(path: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """The config file to read, or None. An explicit or ``$DEXTR_CONFIG`` path must exist."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (from ${ENV_VAR})")
        return p
    p = Path(DEFAULT_NAME)
    return p if p.is_file() else None


def load_config(path: Optional[Union[str, os.PathLike]] = None) -> Config:
    """Read and validate the config (see the module docstring for the lookup order).

    Raises:
        ConfigError: unreadable TOML, unknown table or key, or a value of the wrong type; the
            message names the file and ``[table] key``.
    """
    p = find_config(path)
    if p is None:
        return Config()
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e}") from None
    return config_from_dict(data, source=str(p))


def config_from_dict(data: Dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML dict into a :class:`Config`."""
    tables = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}
    hints = typing.get_type_hints(Config)
    values: Dict[str, Any] = {}
    for name, table in data.items():
        if name not in tables:
            raise ConfigError(
                f"{source}: unknown table [{name}]; known tables: {', '.join(sorted(tables))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {name} must be a table ([{name}]), got {table!r}")
        values[name] = _build_table(hints[name], table, f"{source}: [{name}]")
    cfg = Config(**values, source=source)
    base = Path(source).resolve().parent
    for key in _PATH_KEYS:
        v = getattr(cfg.paths, key)
        if v is not None:
            setattr(cfg.paths, key, str(base / Path(v).expanduser()))
    if "serve" in data:  # paths given in the file are relative to it; defaults stay as they are
        for key in _SERVE_PATH_KEYS & set(data["serve"]):
            setattr(cfg.serve, key, str(base / Path(getattr(cfg.serve, key)).expanduser()))
    return cfg


def _build_table(cls: type, table: Dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(
                f"{where} unknown key {key!r}; known keys: {', '.join(sorted(hints))}"
            )
        kwargs[key] = _check_type(value, hints[key], f"{where} {key}")
    return cls(**kwargs)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], where) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {where}")  # programming error
