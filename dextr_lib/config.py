"""The TOML config (``dextr.toml``): one dataclass per table, validated key by key.

Lookup order: an explicit path (``--config``), then ``$DEXTR_CONFIG``, then ``./dextr.toml``;
no file means all defaults. Every relative path or glob pattern in the file (``[paths]``, a
``model``, ``image_pat``...) is relative to the config file's folder, not the current one.
Command-line options override config values: :func:`merge_settings` is that merge, for every
command. The tables share two groups of settings, each declared once: :class:`InferenceSettings`
(``[predict]``, ``[eval]``, ``[serve]``) and :class:`DatasetSettings` (``[eval]``, ``[train]``,
checked together by :func:`check_dataset`). Every table is a ``*Settings`` dataclass whose values
are checked by the one range checker, :func:`check_value`, when it is made.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, TypeVar, Union

from .errors import ConfigError, UnknownNameError
from .utils.fileio import os_error_cause

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_VAR = "DEXTR_CONFIG"
DEFAULT_NAME = "dextr.toml"


#: Dataset kinds (``[eval]``/``[train]`` ``dataset``, ``--dataset``).
DATASET_KINDS = ("pascal_voc", "custom_label", "custom_mask", "coco")
#: ``[train] lr_sched`` and ``opt_type`` choices.
LR_SCHEDULES = ("none", "cosine", "poly")
OPTIMIZERS = ("sgd", "adam")


def _setting(default: Any = None, help: str = "", *, flag: Optional[str] = None,
             minimum: Optional[float] = None, maximum: Optional[float] = None,
             above: Optional[float] = None, choices: Optional[Tuple[str, ...]] = None,
             resume: bool = False, command: Optional[str] = None, factory: Any = None) -> Any:
    """A settings field with what the CLI and the validation need to know (the one field helper).

    Args:
        help: the option's help where the CLI generates the option (``[train]``; the default is
            appended by the CLI).
        flag: the option's flags (default ``--key-name``; ``--x/--no-x`` for booleans).
        minimum, maximum, above (exclusive minimum), choices: allowed values, lists item by
            item (checked by :func:`check_value` for config files and the CLI alike).
        resume: ``[train]``: the value may change when a job is resumed (else it is the job's).
        command: ``[train]``: ``"train"`` or ``"finetune"`` when only that command has the option.
        factory: a ``default_factory`` (lists) instead of ``default``.
    """
    meta = {"help": help, "flag": flag, "min": minimum, "max": maximum, "above": above,
            "choices": choices, "resume": resume, "command": command}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def value_problem(value: Any, f: dataclasses.Field) -> Optional[str]:
    """What is wrong with ``value`` for the field ``f`` (its ``_setting`` range and choices;
    lists item by item), or None."""
    meta = f.metadata
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v is None or isinstance(v, bool):
            continue
        if meta.get("choices") and v not in meta["choices"]:
            return f"expected one of {', '.join(meta['choices'])}, got {v!r}"
        if not isinstance(v, (int, float)):
            continue
        if meta.get("min") is not None and v < meta["min"]:
            return f"must be >= {meta['min']}, got {v!r}"
        if meta.get("above") is not None and v <= meta["above"]:
            return f"must be > {meta['above']}, got {v!r}"
        if meta.get("max") is not None and v > meta["max"]:
            return f"must be <= {meta['max']}, got {v!r}"
    return None


def check_value(table: str, key: str, value: Any, f: dataclasses.Field) -> None:
    """The one range checker: ``value`` within the field's range and choices.

    Raises:
        ConfigError: ``[table] key: ...`` with the allowed values and the value received.
    """
    problem = value_problem(value, f)
    if problem is not None:
        raise ConfigError(f"[{table}] {key}: {problem}")


class _Table:
    """A config table's dataclass: every value is checked against its field when made (from
    a config file, the CLI via :func:`merge_settings`, or code)."""

    TABLE: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_value(self.TABLE, f.name, getattr(self, f.name), f)


@dataclass
class PathsSettings(_Table):
    """``[paths]``: where data, models and jobs live."""

    TABLE: ClassVar[str] = "paths"
    pascal_voc: Optional[str] = None  # the VOC2012 folder (holds JPEGImages/, SegmentationObject/)
    sbd: Optional[str] = None  # the SBD benchmark_RELEASE/dataset folder
    models: Optional[str] = None  # model cache; default $DEXTR_HOME/models or the user cache dir
    jobs: str = "jobs"  # training job directories


@dataclass
class InferenceSettings(_Table):
    """The inference group, shared by ``[predict]``, ``[eval]`` and ``[serve]`` and their
    ``--model``, ``--device``, ``--precision``, ``--runtime``, ``--threshold`` options."""

    model: Optional[str] = None  # a checkpoint file or a model-zoo name
    device: Optional[str] = None
    precision: str = "fp32"  # fp32, bf16 (about 2x faster on CPU), fp16 (GPU), auto
    runtime: Optional[str] = None  # torch, onnxruntime, openvino; default: the model's
    threshold: Optional[float] = _setting(None, minimum=0.0, maximum=1.0)  # default: the model's profile threshold


@dataclass
class BatchedInferenceSettings(InferenceSettings):
    """The inference group of the commands that batch objects (``--batch-size``)."""

    batch_size: Optional[int] = _setting(None, minimum=1)  # default: 1 for torch on a CPU, else 8


@dataclass
class PredictSettings(BatchedInferenceSettings):
    """``[predict]``: defaults of ``dextr predict`` (the inference group)."""

    TABLE: ClassVar[str] = "predict"
    ray: Optional[str] = None  # --coco/--points-file on Ray: local, auto or ray://HOST:10001
    workers: int = _setting(1, minimum=1)  # Ray model actors
    gpus_per_worker: float = _setting(0.0, minimum=0.0)  # 0: CPU actors
    threads_per_worker: Optional[int] = _setting(None, minimum=1)  # CPU actors' torch threads; default: CPUs / workers


@dataclass
class PointsFromMaskSettings(_Table):
    """``[points_from_mask]``: defaults of ``dextr points-from-mask``."""

    TABLE: ClassVar[str] = "points_from_mask"
    kind: str = _setting("label", choices=("label", "mask"))
    ignore_index: Optional[int] = 255
    min_area: int = _setting(1, minimum=1)
    largest_component: bool = False


@dataclass
class ServeSettings(InferenceSettings):
    """``[serve]``: defaults of ``dextr serve``. ``images`` and ``annotations`` are relative to
    the config file's folder."""

    TABLE: ClassVar[str] = "serve"
    host: str = "127.0.0.1"  # another host needs --token (or shows a warning)
    port: int = _setting(8000, minimum=1, maximum=65535)
    images: Optional[str] = None  # folder of photos to annotate
    annotations: str = "annotations.json"  # COCO instances file, continued when it exists
    classes: List[str] = field(default_factory=list)  # class names offered on the page
    max_upload_mb: float = _setting(50.0, above=0.0)  # largest request body (413 above)
    allowed_hosts: List[str] = field(default_factory=list)  # Host names answered besides localhost; "*": any


@dataclass
class CpuSettings(_Table):
    """``[cpu]``: how every command uses the CPU."""

    TABLE: ClassVar[str] = "cpu"
    threads: int = 0  # torch threads; 0: auto, the cores not already busy (dextr_lib.inference.device.auto_threads)


@dataclass
class ModelsSettings(_Table):
    """``[models]``: the model zoo (``dextr download``, ``--model NAME``)."""

    TABLE: ClassVar[str] = "models"
    mirror: Optional[str] = None  # base URL tried first, file name kept; also $DEXTR_MIRROR


_DATASET_HELP = "Dataset kind: pascal_voc, custom_label, custom_mask or coco."


@dataclass
class DatasetSettings(_Table):
    """The dataset group, shared by ``[eval]`` and ``[train]`` (and their ``--dataset``,
    ``--image-pat``... options); :func:`check_dataset` checks how the values fit together.
    The help texts are those of the options ``dextr train``/``finetune`` generate."""

    dataset: Optional[str] = _setting(None, _DATASET_HELP)
    image_pat: List[str] = _setting(None, "Glob of the training images (custom kinds); repeat to unite, "
                                    "@FILE reads a list.", factory=list)
    target_pat: List[str] = _setting(None, "Glob of the label images (custom_label) or mask files "
                                     "(custom_mask); paired with images by file stem.", factory=list)
    annotations: Optional[str] = _setting(None, "coco: the COCO instances JSON file of the training objects.")
    images: Optional[str] = _setting(None, "coco: the folder its images' file_name entries are relative to "
                                     "(default: the JSON file's folder).")
    categories: List[str] = _setting(None, "coco: only objects of these category names (comma-separated, "
                                     "e.g. person,dog).", factory=list)
    label_ignore_index: int = _setting(255, "Label value that is neither object nor background (void); -1: none.",
                                       minimum=-1)
    min_object_area: int = _setting(0, "Skip objects with fewer pixels.", minimum=0)
    whole_labels: bool = _setting(False, "One object per label instead of one per connected region.",
                                  flag="--whole-labels/--regions")


@dataclass
class EvalSettings(DatasetSettings, BatchedInferenceSettings):
    """``[eval]``: defaults of ``dextr eval`` (the dataset and inference groups, and these)."""

    TABLE: ClassVar[str] = "eval"
    points_from: str = _setting("annotations", choices=("annotations", "masks"))  # coco: clicks from extreme_points where present, or "masks"
    split: str = "val"
    thresholds: List[float] = _setting(None, minimum=0.0, maximum=1.0, factory=list)  # extra thresholds
    boundary_tolerance: Optional[float] = _setting(None, minimum=0.0)  # pixels; default 0.008 x image diagonal
    worst: int = _setting(5, minimum=1)  # overlays written with --overlays
    clicks: Optional[int] = _setting(None, minimum=4)  # NoC protocol: 4 extreme points, then corrections up to K


@dataclass
class TrainSettings(DatasetSettings):
    """``[train]``: every setting of a training job (``dextr`` 0.1.2's defaults) — the one schema.

    The config's ``[train]`` table, a job's ``config.toml`` (this table fully resolved) and the
    options of ``dextr train``/``dextr finetune`` are all read from and checked against these
    fields (the dataset group first); :class:`dextr_lib.training.TrainingJob` runs a job from them.

    Raises:
        ConfigError: a value out of range or not among the choices (named ``[train] key``).
    """

    TABLE: ClassVar[str] = "train"
    dataset: str = _setting("pascal_voc", _DATASET_HELP)  # [train] has a default kind, [eval] none
    val_image_pat: List[str] = _setting(None, "Glob of validation images (custom kinds; pascal_voc uses "
                                        "its val split).", factory=list)
    val_target_pat: List[str] = _setting(None, "Glob of validation label images / masks.", factory=list)
    val_annotations: Optional[str] = _setting(None, "coco: the COCO instances file of the validation objects.")
    val_images: Optional[str] = _setting(None, "coco: the folder of the validation images (default: the "
                                         "validation file's folder).")
    arch: str = _setting("resunet101", "Network architecture, e.g. resunet18 or resunet101 (an unknown name lists them all).",
                     command="train")
    target_size: int = _setting(512, "Crop side in pixels.", minimum=16, command="train")
    padding: float = _setting(10.0, "Margin around the points in crop pixels.", minimum=0.0, command="train")
    blob_sigma: float = _setting(10.0, "Heatmap Gaussian sigma in crop pixels.", minimum=0.0, command="train")
    pretrained: bool = _setting(True, "Start the encoder from torchvision's ImageNet weights.", command="train")
    backbone_weights: Optional[str] = _setting(None, "Encoder weights from a local torchvision state-dict "
                                               "file (offline use).", command="train")
    from_model: Optional[str] = _setting(None, "Starting DEXTR model: a checkpoint file or a model-zoo name.",
                                         flag="--from", command="finetune")
    learning_rate: float = _setting(0.1, "Base learning rate.", minimum=0.0)
    pretrained_lr_factor: float = _setting(0.1, "LR factor of the pretrained encoder (finetune: of every layer).",
                                           minimum=0.0)
    lr_sched: str = _setting("poly", "LR schedule, stepped per iteration over all epochs.", choices=LR_SCHEDULES)
    lr_poly_power: float = _setting(0.9, "Power of the poly schedule.", minimum=0.0)
    opt_type: str = _setting("sgd", "Optimiser: sgd (momentum 0.9, Nesterov) or adam.", choices=OPTIMIZERS)
    sgd_weight_decay: float = _setting(1e-4, "SGD weight decay.", minimum=0.0)
    extreme_range: float = _setting(5.0, "Draw training points within this many crop pixels of each extreme.",
                                    minimum=0.0)
    noise_std: float = _setting(1.0, "Gaussian jitter of the training points, crop pixels.", minimum=0.0)
    corrections: int = _setting(0, "Train with up to N simulated correction clicks per sample, placed "
                                "by the NoC annotator on the model's own errors (RITM's iterative "
                                "training); adds the negative-click input channel. 0: classic DEXTR.",
                                minimum=0, maximum=20)
    aug_hflip: bool = _setting(True, "Random horizontal flips.")
    aug_rot_range: float = _setting(20.0, "Random rotation range in degrees.", minimum=0.0)
    aug_scale_range: float = _setting(0.0, "Random crop-box scale 1 +- this; 0: off.", minimum=0.0, maximum=0.99)
    batch_size: int = _setting(4, "Samples per iteration and process (global batch: x processes).", minimum=1)
    num_epochs: int = _setting(100, "Epochs; on --resume a larger value extends the job.", minimum=1, resume=True)
    iters_per_epoch: int = _setting(1000, "Iterations per epoch; -1: one pass over the objects.", minimum=-1)
    val_every_n_epochs: int = _setting(25, "Validate every N epochs (and always at the end); 0: only at the end.",
                                       minimum=0, resume=True)
    sync_bn: bool = _setting(False, "Synchronise batch-norm statistics across processes (CUDA only).")
    device: Optional[str] = _setting(None, "cpu, cuda, cuda:N, mps or auto (default: CUDA when available).",
                                     resume=True)
    num_workers: int = _setting(0, "Data-loading processes; 0: load in the training process.", minimum=0,
                                resume=True)
    seed: Optional[int] = _setting(None, "Random seed (default: a random one, recorded in config.toml).",
                                   minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iters_per_epoch == 0:
            raise ConfigError("[train] iters_per_epoch: must be >= 1, or -1 (one pass over the objects), got 0")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


#: The name of every ``[train]`` setting -> its dataclass field (metadata: see ``_setting``).
SETTING_FIELDS = {f.name: f for f in dataclasses.fields(TrainSettings)}

_T = TypeVar("_T", bound=_Table)


def merge_settings(table: _T, given: Mapping[str, Any]) -> _T:
    """The one merge of command-line values and a config table: for each field, the value
    given when not None (an option on the command line), else the table's (the config file's,
    else the default). Every value is checked again (:func:`check_value`).

    Args:
        table: a table of the loaded :class:`Config` (e.g. ``cfg.eval``), or a group's dataclass.
        given: field name -> value, None for an option not given; an empty list counts as not
            given (a repeatable option left out).

    Returns:
        A new dataclass of the table's class; ``table`` is left as it is.

    Raises:
        ConfigError: ``[table] key: ...`` for a value out of range or not among the choices.
        TypeError: a name that is not a field (a programming error).
    """
    names = {f.name for f in dataclasses.fields(table)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"{type(table).__name__} has no settings {', '.join(unknown)}")
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()
              if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    return dataclasses.replace(table, **values)


def check_dataset(s: DatasetSettings) -> None:
    """The dataset settings fit together: a known kind; coco with its instances file and no
    patterns; pascal_voc without patterns; the custom kinds with both patterns; the ``[train]``
    validation keys (``val_*``) likewise. The one check of ``[eval]``, ``[train]`` and their options.

    Raises:
        ConfigError: ``[table] key: ...`` naming the option too, the same whether the value came
            from the command line or the config file.
    """
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"[{s.TABLE}] {key}: {message}")

    val_images, val_targets = getattr(s, "val_image_pat", []), getattr(s, "val_target_pat", [])
    val_annotations, val_dir = getattr(s, "val_annotations", None), getattr(s, "val_images", None)
    if s.dataset is None:
        fail("dataset", f"choose a dataset kind (--dataset): {', '.join(DATASET_KINDS)}")
    if s.dataset not in DATASET_KINDS:
        fail("dataset", f"expected one of {', '.join(DATASET_KINDS)}, got {s.dataset!r}")
    patterns = bool(s.image_pat or s.target_pat or val_images or val_targets)
    if s.dataset == "coco":
        if not s.annotations:
            fail("annotations", "dataset coco needs its instances file (--annotations instances.json)")
        if patterns:
            fail("image_pat", "dataset coco reads its images from annotations and images (--annotations, "
                 "--images); the image/target patterns are for the custom dataset kinds")
        if val_dir and not val_annotations:
            fail("val_images", "val_images (--val-images) goes with val_annotations (--val-annotations)")
        return
    coco_keys = [k for k in ("annotations", "images", "categories", "val_annotations", "val_images")
                 if getattr(s, k, None)]
    if coco_keys:
        fail(coco_keys[0], "annotations, images and categories (--annotations, --images, --categories; "
             "[train]: also val_annotations, val_images) are for dataset coco")
    if s.dataset == "pascal_voc":
        if patterns:
            fail("image_pat", "pascal_voc finds its files under [paths] pascal_voc; the image/target "
                 "patterns (--image-pat, --target-pat) are for the custom dataset kinds")
        return
    if not (s.image_pat and s.target_pat):
        fail("image_pat", f"dataset {s.dataset} needs both image_pat and target_pat (--image-pat, --target-pat)")
    if bool(val_images) != bool(val_targets):
        fail("val_image_pat", "give both val_image_pat and val_target_pat (--val-image-pat, "
             "--val-target-pat), or neither")


#: Named sets of ``[train]`` values (``dextr train --preset NAME``); options given on the command
#: line override them, and they override the config's ``[train]`` table. docs/training.md "Presets" has
#: what each one was measured to give.
TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # A useful model on a laptop CPU in about 15 minutes: a small network at 128 px from scratch
    # (no download), Adam, 12 x 100 iterations of batch 8 (docs/training.md "Presets": measured time and
    # Penn-Fudan mIoU).
    "cpu-small": dict(arch="resunet18", target_size=128, pretrained=False, opt_type="adam",
                      learning_rate=1e-3, lr_sched="poly", batch_size=8, num_epochs=12,
                      iters_per_epoch=100, val_every_n_epochs=4),
    # Fine-tune a 4-click model (e.g. one trained with cpu-small) into a corrective one on a laptop
    # CPU: the negative-click channel is added, and 4 x 100 steps train on up to 3 simulated
    # corrections per sample (docs/training.md "Presets": measured time and NoC).
    "cpu-corrections": dict(corrections=3, opt_type="adam", learning_rate=1e-3, pretrained_lr_factor=0.5,
                            lr_sched="poly", batch_size=8, num_epochs=4, iters_per_epoch=100,
                            val_every_n_epochs=2),
    # The paper's settings (Maninis et al. 2018; DEXTR-PyTorch's train_pascal.py) as far as this
    # schema expresses them, for GPUs: PSP ResNet-101 at 512 px, SGD momentum 0.9 at a constant
    # 1e-8 on the per-pixel *sum* (= 2.6e-3 on our per-pixel mean at 512 x 512), weight decay
    # 5e-4, every layer at the same rate, batch 5, 100 passes over the objects, points within
    # 5 px of the extremes, rotations +-20 degrees, scales 0.75-1.25, flips, a 50 px margin.
    "voc-paper": dict(dataset="pascal_voc", arch="psp101", target_size=512, padding=50.0,
                      blob_sigma=10.0, pretrained=True, opt_type="sgd", learning_rate=2.6e-3,
                      pretrained_lr_factor=1.0, lr_sched="none", sgd_weight_decay=5e-4,
                      batch_size=5, num_epochs=100, iters_per_epoch=-1, extreme_range=5.0,
                      noise_std=0.0, aug_hflip=True, aug_rot_range=20.0, aug_scale_range=0.25),
}


def preset_settings(name: str) -> Dict[str, Any]:
    """The ``[train]`` values of a named preset (see :data:`TRAIN_PRESETS`).

    Raises:
        UnknownNameError: no such preset; the message lists them.
    """
    try:
        return dict(TRAIN_PRESETS[name])
    except KeyError:
        raise UnknownNameError.of("preset", name, sorted(TRAIN_PRESETS)) from None

@dataclass
class Config:
    """The whole config. ``source`` is the file it came from (None: defaults only)."""

    paths: PathsSettings = field(default_factory=PathsSettings)
    predict: PredictSettings = field(default_factory=PredictSettings)
    points_from_mask: PointsFromMaskSettings = field(default_factory=PointsFromMaskSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    cpu: CpuSettings = field(default_factory=CpuSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    source: Optional[str] = None


#: Keys holding file paths or glob patterns; relative values are relative to the config file's
#: folder (``[paths]`` always, defaults included; other tables: the keys the file sets).
_FILE_KEYS = {
    "paths": ("pascal_voc", "sbd", "models", "jobs"),
    "predict": ("model",),
    "eval": ("model", "image_pat", "target_pat"),
    "serve": ("model", "images", "annotations"),
    "train": ("image_pat", "target_pat", "val_image_pat", "val_target_pat", "backbone_weights", "from_model"),
}
#: Keys that may name a model-zoo model instead of a file.
_MODEL_KEYS = {"model", "from_model"}


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
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (TOML files are UTF-8): {e.reason} at byte "
                          f"{e.start}") from None
    except RecursionError:
        raise ConfigError(f"{p}: invalid TOML: nested too deeply") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {os_error_cause(e)}") from None
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
    for table, keys in _FILE_KEYS.items():
        section = getattr(cfg, table)
        for key in keys:
            if table != "paths" and key not in data.get(table, {}):
                continue  # a default is not the file's
            value = getattr(section, key)
            if isinstance(value, list):
                setattr(section, key, [_relative_to(base, v, key) for v in value])
            elif value is not None:
                setattr(section, key, _relative_to(base, value, key))
    return cfg


def _relative_to(base: Path, value: str, key: str) -> str:
    """``value`` from a config file in ``base``, as a path relative to that folder (``~`` and
    ``@FILE`` lists included). A model key's value that is a bare name (no folder, no extension,
    no such file there) is a model-zoo name and stays as it is."""
    if value.startswith("@"):
        return "@" + _relative_to(base, value[1:], "")
    path = Path(value).expanduser()
    if key in _MODEL_KEYS and len(path.parts) == 1 and not path.suffix and not (base / path).exists():
        return value
    return str(base / path)


def _build_table(cls: type, table: Dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = sorted(f.name for f in dataclasses.fields(cls))
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where} unknown key {key!r}; known keys: {', '.join(known)}")
        kwargs[key] = _check_type(value, hints[key], f"{where} {key}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a range check of the table's dataclass: "[table] key: ..."
        raise ConfigError(f"{where.rsplit(' [', 1)[0]} {e}") from None


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
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {where}")  # programming error
