"""Options shared by several commands, declared once, and :func:`settings`, the one merge of
their values with the config (the groups: :class:`dextr_lib.config.InferenceSettings` and
:class:`dextr_lib.config.DatasetSettings`)."""
import dataclasses
import glob
import os
from pathlib import Path
from typing import Any, List, Optional, TypeVar

import typer
from typing_extensions import Annotated

from dextr_lib.config import merge_settings, value_problem

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="TOML config file (default: $DEXTR_CONFIG, else ./dextr.toml).",
        dir_okay=False, show_default=False,
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", help="Model: a checkpoint file, a dextr 0.1.2 / DEXTR-PyTorch file, or a "
        "pretrained model name (dextr download --list).", show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--device", help="cpu, cuda, cuda:N, mps or auto (default: CUDA when available).",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", min=1, show_default=False,
                                help="Objects per network forward (default: 1 with the torch runtime on "
                                     "a CPU, 8 otherwise).")
]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision", help="fp32 (exact), bf16 (about 2x faster on CPUs with "
        "AVX512-BF16/AMX, masks agree to within a pixel or so), fp16 (GPU only) or auto (bf16 "
        "where the hardware runs it natively, else fp32) (default: fp32).",
        show_default=False,
    ),
]
RuntimeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--runtime", help="What runs the network: torch, onnxruntime (pip install 'dextr\\[onnx]') "
        "or openvino (pip install 'dextr\\[openvino]'); the last two run on the CPU (default: "
        "torch; for .onnx models openvino where installed, else onnxruntime).",
        show_default=False,
    ),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed, for reproducible runs.")]

# Dataset options of `eval` (train and finetune generate theirs from the same group,
# dextr_lib.config.DatasetSettings); build the dataset with dextr_cli._datasets.open_dataset.
DatasetKindOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", help="Dataset kind: pascal_voc, custom_label, custom_mask or coco.", show_default=False),
]
ImagePatOpt = Annotated[
    Optional[List[str]],
    typer.Option("--image-pat", help="Glob of the images (custom kinds); repeat to unite, @FILE reads a list.",
                 show_default=False),
]
TargetPatOpt = Annotated[
    Optional[List[str]],
    typer.Option("--target-pat", help="Glob of the label images (custom_label) or mask files (custom_mask); "
                 "paired with images by file stem.", show_default=False),
]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="pascal_voc split: train or val.", show_default=False)]
LabelIgnoreIndexOpt = Annotated[
    Optional[int],
    typer.Option("--label-ignore-index", help="Label value that is neither object nor background (void); "
                 "-1: none (default: 255).", show_default=False),
]
MinObjectAreaOpt = Annotated[
    Optional[int],
    typer.Option("--min-object-area", min=0, help="Skip objects with fewer pixels (default: 0).", show_default=False),
]

# COCO instances files (--dataset coco)
AnnotationsOpt = Annotated[
    Optional[Path],
    typer.Option("--annotations", dir_okay=False, help="coco: the COCO instances JSON file.", show_default=False),
]
ImagesDirOpt = Annotated[
    Optional[Path],
    typer.Option("--images", file_okay=False, help="coco: the folder its images' file_name entries are "
                 "relative to (default: the JSON file's folder).", show_default=False),
]
CategoriesOpt = Annotated[
    Optional[str],
    typer.Option("--categories", help="coco: only objects of these category names, comma-separated "
                 "(e.g. person,dog).", show_default=False),
]
PointsFromOpt = Annotated[
    Optional[str],
    typer.Option("--points-from", help="coco: annotations (the clicks stored as extreme_points where "
                 "present, else from the masks) or masks (default: annotations).", show_default=False),
]


def split_names(text) -> list:
    """``"person,dog"`` (or a list of such strings) -> ``["person", "dog"]``."""
    if not text:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


WholeLabelsOpt = Annotated[
    Optional[bool],
    typer.Option("--whole-labels/--regions", help="One object per label instead of one per connected region "
                 "(default: regions).", show_default=False),
]


def expand_files(ctx: typer.Context, param: typer.CallbackParam, values: Any) -> Any:
    """The callback of positional file arguments (one ``Path`` or a list): a quoted glob
    (``"labels/*_mask.png"``, where the shell did not expand it, e.g. on Windows or in a script)
    is expanded here as the shell would, in sorted order; a pattern matching nothing, a missing
    file, a folder, and several matches for a single file are usage errors that say which."""
    if not values:
        return values
    if isinstance(values, Path):
        files = expand_files(ctx, param, [values])
        if len(files) > 1:
            raise typer.BadParameter(f"the pattern {os.fspath(values)!r} matches {len(files)} files; "
                                     "give one", param=param)
        return files[0]
    files: List[Path] = []
    for value in values:
        text = os.fspath(value)
        if not os.path.lexists(text) and glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise typer.BadParameter(f"the pattern {text!r} matches no file", param=param)
            files += [Path(m) for m in matches if not os.path.isdir(m)]
            continue
        if not os.path.exists(text):
            raise typer.BadParameter(f"{text!r} does not exist", param=param)
        if os.path.isdir(text):
            raise typer.BadParameter(f"{text!r} is a folder; give its files, e.g. {os.path.join(text, '*.png')!r}",
                                     param=param)
        files.append(Path(text))
    return files


_S = TypeVar("_S")


def settings(table: _S, **given: Any) -> _S:
    """The settings a command runs with: each option given on the command line, else the
    config table's value, else the default (:func:`dextr_lib.config.merge_settings`).

    Args:
        table: the config's table, e.g. ``load_config(config).eval``.
        given: each option's value under its setting's name (None: not given).

    Raises:
        typer.BadParameter: a given value out of its setting's range (a usage error naming
            the option, exit 2); config values were checked when the config loaded.
    """
    fields = {f.name: f for f in dataclasses.fields(table)}
    for key, value in given.items():
        problem = value_problem(value, fields[key]) if key in fields else None
        if problem is not None:
            raise typer.BadParameter(problem, param_hint="--" + key.replace("_", "-"))
    return merge_settings(table, given)
